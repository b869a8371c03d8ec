"""CIFAR data pipeline, models, SD objective, PGD attacks, resume and sharding (issue 4)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax import attacks, losses, models, train
from gs_jax.data import cifar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_NPZ = os.path.join(REPO, "..", "..", "shared", "data", "cifar10", "cifar10.npz")
if not os.path.exists(REAL_NPZ):
  REAL_NPZ = "/work/shared/data/cifar10/cifar10.npz"


def _fake_cifar10(path, n_train=60, n_test=40, seed=0, lossless=True):
  rng = np.random.default_rng(seed)
  arrays = {
      "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
      "y_train": np.arange(n_train, dtype=np.uint8) % 10,
      "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
      "y_test": (np.arange(n_test, dtype=np.uint8) * 7) % 10,
  }
  # Mark each image with its own index so selections can be checked pixel-exactly.
  arrays["x_train"][:, 0, 0, 0] = np.arange(n_train)
  arrays["x_test"][:, 0, 0, 0] = np.arange(n_test)
  if lossless:
    arrays["test_is_lossless"] = np.arange(n_test) < n_test // 2
  np.savez(path, **arrays)
  return arrays


# ----------------------------------------------------------------------------- data

def test_cifar2_selects_cat_and_dog_from_a_keras_npz(tmp_path):
  a = _fake_cifar10(tmp_path / "cifar10.npz")
  d = cifar.load("cifar2", str(tmp_path))  # a folder holding cifar10.npz
  for split in ("train", "test"):
    y10 = a[f"y_{split}"]
    keep = np.flatnonzero((y10 == 3) | (y10 == 5))
    x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
    np.testing.assert_array_equal(x[:, 0, 0, 0], keep)        # the right images, in order
    np.testing.assert_array_equal(y, (y10[keep] == 5).astype(np.int32))  # cat→0, dog→1
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.dtype == np.int32
  keep_test = np.flatnonzero((a["y_test"] == 3) | (a["y_test"] == 5))
  np.testing.assert_array_equal(d.test_is_lossless, a["test_is_lossless"][keep_test])
  assert d.num_classes == 2 and set(np.unique(d.y_train)) == {0, 1}
  d10 = cifar.load("cifar10", str(tmp_path / "cifar10.npz"))
  assert d10.x_train.shape == (60, 32, 32, 3) and d10.num_classes == 10


def test_already_binary_cifar2_npz_is_taken_as_is(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 2, 20).astype(np.uint8)
  np.savez(tmp_path / "cifar2.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
  d = cifar.load("cifar2", str(tmp_path))
  np.testing.assert_array_equal(d.y_train, y)
  assert d.test_is_lossless.all() and d.test_is_lossless.shape == (8,)
  # labels 3/5 in an already-restricted file are mapped to 0/1
  np.savez(tmp_path / "c35.npz", x_train=x, y_train=np.where(y == 1, 5, 3), x_test=x[:8],
           y_test=np.where(y[:8] == 1, 5, 3))
  np.testing.assert_array_equal(cifar.load("cifar2", str(tmp_path / "c35.npz")).y_train, y)


def test_loader_errors(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    cifar.load("cifar10", str(tmp_path / "nope.npz"))
  msg = str(e.value)
  assert "tensorflow_datasets" in msg and "--data_dir" in msg and "cifar10.npz" in msg
  with pytest.raises(FileNotFoundError, match="no cifar100.npz in folder"):
    cifar.load("cifar100", str(tmp_path))
  with pytest.raises(ValueError, match="dataset must be one of"):
    cifar.load("mnist", str(tmp_path))
  x = np.zeros((4, 32, 32, 3), np.uint8)
  np.savez(tmp_path / "bad_dtype.npz", x_train=x.astype(np.float32), y_train=np.zeros(4, int),
           x_test=x, y_test=np.zeros(4, int))
  with pytest.raises(ValueError, match="x_train must be uint8"):
    cifar.load("cifar10", str(tmp_path / "bad_dtype.npz"))
  np.savez(tmp_path / "bad_shape.npz", x_train=x, y_train=np.zeros(3, int), x_test=x,
           y_test=np.zeros(4, int))
  with pytest.raises(ValueError, match=r"y_train must have shape \(4,\)"):
    cifar.load("cifar10", str(tmp_path / "bad_shape.npz"))
  np.savez(tmp_path / "bad_label.npz", x_train=x, y_train=np.array([0, 1, 12, 3]), x_test=x,
           y_test=np.zeros(4, int))
  with pytest.raises(ValueError, match=r"got values \[12\]"):
    cifar.load("cifar10", str(tmp_path / "bad_label.npz"))
  np.savez(tmp_path / "no_keys.npz", images=x)
  with pytest.raises(ValueError, match="lacks keys"):
    cifar.load("cifar10", str(tmp_path / "no_keys.npz"))


def test_tfds_path_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    d100 = cifar.load("cifar100")
  with tfds.testing.mock_data(num_examples=40):
    d10 = cifar.load("cifar10")
  with tfds.testing.mock_data(num_examples=40):   # same deterministic mock stream
    d2 = cifar.load("cifar2")
  assert d100.source == "tfds:cifar100" and d100.num_classes == 100
  assert d100.x_train.shape == (40, 32, 32, 3) and d100.x_train.dtype == np.uint8
  assert d100.y_train.min() >= 0 and d100.y_train.max() < 100
  x2, y2, _ = cifar.select_cifar2(d10.x_train, d10.y_train)
  assert len(y2) > 0
  np.testing.assert_array_equal(d2.x_train, x2)
  np.testing.assert_array_equal(d2.y_train, y2)


def test_augment_keeps_dtype_range_and_is_a_crop_or_flip():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(1, 256, (6, 32, 32, 3), dtype=np.uint8))
  out = cifar.augment(jax.random.PRNGKey(3), x)
  assert out.dtype == jnp.uint8 and out.shape == x.shape
  f = cifar.to_float(out)
  assert f.dtype == jnp.float32 and float(f.min()) >= 0 and float(f.max()) <= 1
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(6):   # brute force over the 81 offsets × 2 flips
    cands = [padded[i, a:a + 32, b:b + 32] for a in range(9) for b in range(9)]
    cands += [c[:, ::-1] for c in cands]
    assert any(np.array_equal(np.asarray(out[i]), c) for c in cands)
  outs = cifar.augment(jax.random.PRNGKey(4), jnp.repeat(x[:1], 64, 0))
  assert len({np.asarray(o).tobytes() for o in outs}) > 10   # it does randomise


def test_epoch_permutation():
  key = jax.random.PRNGKey(0)
  idx = cifar.epoch_permutation(key, 2, 103, 10)
  assert idx.shape == (10, 10) and len(np.unique(idx)) == 100 and int(idx.max()) < 103
  np.testing.assert_array_equal(idx, cifar.epoch_permutation(key, 2, 103, 10))
  assert not np.array_equal(idx, cifar.epoch_permutation(key, 3, 103, 10))
  with pytest.raises(ValueError, match="exceeds"):
    cifar.epoch_permutation(key, 0, 5, 10)


# ----------------------------------------------------------------------------- models, SD

@pytest.mark.parametrize("config, convs", [("cpu", 3), ("paper", 13)])
def test_model_shapes_and_batch_stats(config, convs):
  model = models.cifar_model(config, 10)
  tx = train.make_optimizer("sgd", 0.01)
  state = train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  assert sum(k.startswith("conv") for k in state.params) == convs
  assert "batch_stats" in state.model_state
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3))
  logits, new_ms = train.apply_model(model, state, x, train=True)
  assert logits.shape == (4, 10)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.model_state, new_ms)
  assert any(jax.tree_util.tree_leaves(changed))   # BN running stats updated in train mode
  if config == "paper":
    widths = [state.params[f"conv{s}_{j}"]["kernel"].shape[-1]
              for s, n in enumerate((2, 2, 3, 3, 3)) for j in range(n)]
    assert widths == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6


def test_normalisation_inside_the_model():
  """Feeding [0,1] pixels equals feeding normalised pixels to a model with mean 0, std 1."""
  m1 = models.CifarVGG(models.CNN_CPU_STAGES, 2)
  m0 = models.CifarVGG(models.CNN_CPU_STAGES, 2, mean=(0., 0., 0.), std=(1., 1., 1.))
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  v = m1.init(jax.random.PRNGKey(1), x)
  xn = (x - jnp.asarray(models.CIFAR_MEAN)) / jnp.asarray(models.CIFAR_STD)
  np.testing.assert_allclose(m1.apply(v, x), m0.apply(v, xn), rtol=1e-5, atol=1e-5)


def test_sd_objective_matches_its_definition():
  from experiments.cifar import objective
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 3)).astype(np.float32) * 3
  y = rng.integers(0, 3, 7)
  batch = {"y": jnp.asarray(y)}
  lse = np.log(np.exp(logits).sum(1))
  ce = np.mean(lse - logits[np.arange(7), y])
  for lam in (0.0, 0.01, 0.05):
    loss, metrics = objective(jnp.asarray(logits), batch, None, 0, {"sd_lambda": lam})
    # docs/protocols.md §3.3/§4: sd_lambda · mean over batch *and classes* of ŷ²
    np.testing.assert_allclose(loss, ce + lam * np.sum(logits ** 2) / logits.size, rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"], ce, rtol=1e-5)


# ----------------------------------------------------------------------------- attacks

def _linear_model(seed=0, d=8 * 8 * 3, classes=2):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  w = jax.random.normal(k1, (d, classes)) / np.sqrt(d)
  b = jax.random.normal(k2, (classes,)) * 0.01
  return lambda x: x.reshape(x.shape[0], -1) @ w + b, w


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(norm):
  logits_fn, _ = _linear_model()
  x = jax.random.uniform(jax.random.PRNGKey(5), (16, 8, 8, 3))
  x = x.at[:4].set(0.0).at[4:8].set(1.0)  # saturated images: clipping must bind
  y = jnp.argmax(logits_fn(x), -1)
  eps = 0.03 if norm == "linf" else 0.5
  eps_vec = jnp.linspace(0.2, 1.0, 16) * eps
  for e in (eps, eps_vec):
    x_adv = attacks.pgd(logits_fn, x, y, jax.random.PRNGKey(1), e, norm=norm, steps=7,
                        step_size=jnp.asarray(e) / 2, restarts=2)
    d = (x_adv - x).reshape(16, -1)
    size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
    assert bool(jnp.all(size <= jnp.broadcast_to(e, (16,)) * (1 + 1e-5) + 1e-7))
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_pgd_class_matches_pure_function_and_finds_linear_optimum():
  logits_fn, w = _linear_model(1)
  x = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(2), (8, 8, 8, 3))
  y = jnp.argmax(logits_fn(x), -1)
  eps = 0.01
  p = attacks.PGD(lambda v, xx: logits_fn(xx))
  for rand_init in (True, False):
    a = attacks.pgd(logits_fn, x, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init)
    b = p(None, x, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init)
    np.testing.assert_allclose(a, b, atol=1e-6)
  # For a linear 2-class model the L∞ optimum moves every pixel by ε against the margin
  # direction (no clipping near 0.5): PGD with step ε/10 × 10 steps from x reaches that
  # corner exactly.
  u = (w[:, 1] - w[:, 0]).reshape(8, 8, 3)
  s = jnp.where(y == 1, -1.0, 1.0)[:, None, None, None]
  np.testing.assert_allclose(a - x, s * eps * jnp.sign(u)[None], atol=1e-6)


def test_margin_matches_closed_form_for_a_linear_model():
  """L∞ margin of f(x) = u·x + c (2 classes) is |f(x)| / ‖u‖₁ when clipping does not bind."""
  logits_fn, w = _linear_model(2)
  x = 0.5 + 0.02 * jax.random.normal(jax.random.PRNGKey(4), (12, 8, 8, 3))
  y = jnp.argmax(logits_fn(x), -1)
  y = y.at[0].set(1 - y[0])                               # one misclassified example → 0
  lg = logits_fn(x)
  exact = np.abs(np.asarray(lg[:, 1] - lg[:, 0])) / float(jnp.sum(jnp.abs(w[:, 1] - w[:, 0])))
  eps_max, steps = 0.2, 10
  m = np.asarray(attacks.margin(logits_fn, x, y, jax.random.PRNGKey(0), eps_max=eps_max,
                                bisection_steps=steps, rand_init=False))
  assert m[0] == 0.0
  tol = eps_max / 2 ** steps
  inside = exact[1:] < eps_max
  assert inside.sum() >= 6
  np.testing.assert_array_less(np.abs(m[1:][inside] - exact[1:][inside]), tol + 1e-7)
  assert np.all(np.isinf(m[1:][~inside]))
  # The compiled-pieces driver gives the same margins.
  p = attacks.PGD(lambda v, xx: logits_fn(xx))
  m2 = np.asarray(p.margin(None, x, y, jax.random.PRNGKey(0), eps_max=eps_max,
                           bisection_steps=steps, rand_init=False))
  np.testing.assert_allclose(m2, m, atol=1e-6)
  # From a random start the 10 steps of ε/10 cannot always use the whole budget: the
  # margin is never below the exact one, and on average larger.
  m3 = np.asarray(attacks.margin(logits_fn, x, y, jax.random.PRNGKey(0), eps_max=eps_max,
                                 bisection_steps=steps))
  fin = np.isfinite(m3[1:]) & inside
  assert np.all(m3[1:][fin] >= exact[1:][fin] - tol) and m3[1:][fin].mean() > exact[1:][fin].mean()


def test_attack_rejects_bad_arguments():
  logits_fn, _ = _linear_model()
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="norm must be"):
    attacks.pgd(logits_fn, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, norm="l1")
  with pytest.raises(ValueError, match="steps and restarts"):
    attacks.pgd(logits_fn, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, steps=0)


# ----------------------------------------------------------------------------- end to end

TINY = ["--dataset=cifar10", "--config=cpu", "--sd_lambda=0.01", "--seed=1", "--epochs=3",
        "--batch_size=16", "--chunk=3", "--margin_n=8", "--margin_bisection=3",
        "--eval_batch=16", "--no_progress", "--test_limit=24"]


def _run_cli(args, env_extra=None):
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
  return subprocess.run([sys.executable, "-m", "experiments.cifar", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def _metrics(path):
  with open(os.path.join(path, "results.json")) as f:
    r = json.load(f)
  return r


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
  """The same tiny run three ways: uninterrupted (1 device), killed mid-epoch 2 + --resume,
  and uninterrupted on 4 forced host devices."""
  tmp = tmp_path_factory.mktemp("cifar")
  _fake_cifar10(tmp / "cifar10.npz", n_train=64, n_test=24)
  common = TINY + [f"--data_dir={tmp / 'cifar10.npz'}"]
  out = {}
  from experiments import cifar as exp
  out["plain"] = exp.run_experiment(exp.parse_args(common + [f"--out_dir={tmp / 'plain'}"]))
  killed = _run_cli(common + [f"--out_dir={tmp / 'resumed'}", "--stop_after_steps=6"])
  assert killed.returncode == 3, killed.stderr[-2000:]   # 4 steps/epoch: killed in epoch 2
  assert not (tmp / "resumed" / "results.json").exists()
  resumed = _run_cli(common + [f"--out_dir={tmp / 'resumed'}", "--resume"])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from epoch 1" in resumed.stderr
  out["resumed"] = _metrics(tmp / "resumed")
  sharded = _run_cli(common + [f"--out_dir={tmp / 'sharded'}"],
                     {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert sharded.returncode == 0, sharded.stderr[-2000:]
  out["sharded"] = _metrics(tmp / "sharded")
  out["tmp"] = tmp
  return out


def _compare(a, b, rtol, atol):
  for ha, hb in zip(a["history"], b["history"]):
    for k in ("loss", "nll", "accuracy"):
      np.testing.assert_allclose(ha[k], hb[k], rtol=rtol, atol=atol)
  assert len(a["history"]) == len(b["history"]) == 3
  for k in ("train_acc",):
    np.testing.assert_allclose(a[k], b[k], atol=atol)
  np.testing.assert_allclose(a["test_iid_acc"]["full"], b["test_iid_acc"]["full"], atol=atol)
  for e in ("eps_0.05", "eps_5/255"):
    np.testing.assert_allclose(a["test_ood_acc"][e]["full"], b["test_ood_acc"][e]["full"],
                               atol=atol)


def test_resume_after_kill_gives_the_same_result(tiny_runs):
  a, b = tiny_runs["plain"], tiny_runs["resumed"]
  _compare(a, b, rtol=1e-6, atol=1e-6)
  assert a["margins"]["values"] == b["margins"]["values"]


def test_sharded_over_4_devices_matches_1_device(tiny_runs):
  a, b = tiny_runs["plain"], tiny_runs["sharded"]
  assert len(b["devices"]) == 4 and len(a["devices"]) == 1
  _compare(a, b, rtol=1e-4, atol=1e-4)
  # final parameters agree to float tolerance
  import orbax.checkpoint as ocp
  ck = ocp.StandardCheckpointer()
  pa = ck.restore(str(tiny_runs["tmp"] / "plain" / "ckpt" / "3" / "state"))
  pb = ck.restore(str(tiny_runs["tmp"] / "sharded" / "ckpt" / "3" / "state"))
  jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-4),
                         pa["params"], pb["params"])


def test_cli_rejects_bad_flags_and_existing_checkpoints(tiny_runs, capsys):
  from experiments import cifar as exp
  with pytest.raises(SystemExit):
    exp.parse_args(["--sd_lambda=-1"])
  assert "--sd_lambda must be" in capsys.readouterr().err
  args = exp.parse_args(TINY + [f"--data_dir={tiny_runs['tmp'] / 'cifar10.npz'}",
                                f"--out_dir={tiny_runs['tmp'] / 'plain'}"])
  with pytest.raises(ValueError, match="already holds checkpoints"):
    exp.run_experiment(args)


@pytest.mark.skipif(not os.path.exists(REAL_NPZ), reason="offline CIFAR-10 copy not present")
def test_real_cifar2_reduced(tmp_path):
  """CI-sized version of the reproduction: real CIFAR-2, 1 epoch on 1,024 images."""
  from experiments import cifar as exp
  r = exp.run_experiment(exp.parse_args([
      "--dataset=cifar2", "--config=cpu", "--sd_lambda=0.01", "--epochs=1", "--train_limit=1024",
      "--test_limit=200", "--margin_n=50", "--margin_bisection=4", "--eval_batch=200",
      f"--data_dir={REAL_NPZ}", f"--out_dir={tmp_path}", "--no_progress"]))
  assert r["data"]["n_train"] == 1024 and r["data"]["n_test"] == 200
  # CIFAR-10 test images 0..999 are the exact ones: 103 cats + 86 dogs come first in CIFAR-2
  assert r["data"]["n_test_lossless"] == 189
  assert 0.0 <= r["train_acc"] <= 1.0 and len(r["margins"]["values"]) == 50
  for e in ("eps_0.05", "eps_5/255"):
    assert r["test_ood_acc"][e]["full"] <= r["test_iid_acc"]["full"] + 0.02


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(REAL_NPZ), reason="offline CIFAR-10 copy not present")
def test_real_cifar2_full_cpu_run(tmp_path):
  """The reproduction run of the README (one seed per method, ~10–15 min each on 2 cores)."""
  from experiments import cifar as exp
  res = {}
  for lam in (0.0, 0.01):
    res[lam] = exp.run_experiment(exp.parse_args([
        "--dataset=cifar2", "--config=cpu", f"--sd_lambda={lam}", f"--data_dir={REAL_NPZ}",
        f"--out_dir={tmp_path / str(lam)}", "--no_progress"]))
  for r in res.values():
    assert r["test_iid_acc"]["full"] > 0.75
    assert r["test_ood_acc"]["eps_0.05"]["full"] < r["test_iid_acc"]["full"]


def test_npz_path_never_imports_tensorflow(tmp_path):
  _fake_cifar10(tmp_path / "cifar10.npz")
  code = ("import sys; from gs_jax.data import cifar; from experiments import cifar as e; "
          f"d = cifar.load('cifar2', {str(tmp_path)!r}); "
          "assert not any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'orbax') "
          "for m in sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:5]; "
          "print(len(d.x_train))")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                     env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "12"   # 60 images with labels i % 10: 6 cats + 6 dogs

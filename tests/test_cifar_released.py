"""The released Figure-2 protocol of CIFAR-2 (docs/protocols.md §3.3): NarLeNet, the
released SD form, the batch-1 scanned trainer, resume, attack units, class selection."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cifar as configs
from gs_jax.nn import attacks, models
from gs_jax.experiment import checkpoint, cli
from gs_jax import training as train
from gs_jax.data import cifar


def _net_and_params(seed=0):
  net = models.NarLeNet(2)
  return net, net.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))


def test_narlenet_shapes_and_parameter_count():
  net, v = _net_and_params()
  shapes = {f"{a}/{b}": v["params"][a][b].shape for a in v["params"] for b in v["params"][a]}
  assert shapes == {
    "conv0/kernel": (5, 5, 3, 12),
    "conv0/bias": (12,),
    "conv1/kernel": (5, 5, 12, 32),
    "conv1/bias": (32,),
    "fc0/kernel": (800, 240),
    "fc0/bias": (240,),
    "fc1/kernel": (240, 192),
    "fc1/bias": (192,),
    "fc2/kernel": (192, 2),
    "fc2/bias": (2,),
  }
  assert net.apply(v, jnp.zeros((7, 32, 32, 3))).shape == (7, 2)
  assert models.cifar_model("released", 10).apply(
    models.cifar_model("released", 10).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))),
    jnp.zeros((3, 32, 32, 3)),
  ).shape == (3, 10)


def test_narlenet_init_is_pytorch_default_uniform():
  """Every weight and bias ~ U(±1/√fan_in): every entry of every tensor inside the bound (the
  2- and 12-entry biases included); for tensors of ≥ 100 entries the largest within 2% of it
  (a U draw misses that with probability 0.98^n ≤ 13%; the seed is fixed); for tensors of
  ≥ 900 entries the std within 10% of bound/√3 (relative std error ≈ 0.9/√n ≤ 3%)."""
  _, v = _net_and_params(3)
  p = v["params"]
  fan_in = {"conv0": 75, "conv1": 300, "fc0": 800, "fc1": 240, "fc2": 192}
  for layer, f in fan_in.items():
    bound = 1 / np.sqrt(f)
    for name in ("kernel", "bias"):
      w = np.asarray(p[layer][name]).ravel()
      assert 0 < np.abs(w).max() <= bound, (layer, name)
      if w.size >= 100:
        assert np.abs(w).max() > 0.98 * bound, (layer, name)
      if w.size >= 900:
        assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.1, (layer, name)


def test_narlenet_equals_a_torch_forward_with_copied_weights():
  torch = pytest.importorskip("torch")
  from benchmarks.cifar_speed import torch_narlenet

  net, v = _net_and_params(1)
  t = torch_narlenet(v["params"])
  with torch.no_grad():
    x = np.random.default_rng(0).random((5, 32, 32, 3), np.float32)
    ref = t(torch.from_numpy(2 * x.transpose(0, 3, 1, 2) - 1)).numpy()
  out = np.asarray(net.apply(v, jnp.asarray(x)))
  # float32 sums of ≤ 800 terms of size ~0.1: differences of order 1e-6 from summation order.
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_xla_convolutions_give_the_patch_network_on_the_same_parameters():
  """``patches=False`` (evaluation) must be the same function of the same parameters: logits
  and input gradients agree up to float32 summation order (sums of ≤ 300 products of size
  ≤ 1: ~1e-6 relative)."""
  net, v = _net_and_params(2)
  xla = models.NarLeNet(2, patches=False)
  x = jax.random.uniform(jax.random.PRNGKey(5), (6, 32, 32, 3))
  np.testing.assert_allclose(xla.apply(v, x), net.apply(v, x), rtol=1e-5, atol=1e-6)
  grad = lambda m: jax.grad(lambda xa: m.apply(v, xa)[:, 0].sum() - m.apply(v, xa)[:, 1].sum())(x)
  g_xla, g_patch = grad(xla), grad(net)
  np.testing.assert_allclose(g_xla, g_patch, rtol=1e-4, atol=1e-5 * float(jnp.abs(g_patch).max()))


_RUNTIME = """
import os, warnings
from gs_jax.base import _compat, devices
with warnings.catch_warnings(record=True) as w:
  warnings.simplefilter("always")
  got = devices.use_cpu_runtime("legacy")
if _compat.HAS_LEGACY_CPU_RUNTIME:
  assert got == "legacy"
  assert "--xla_cpu_use_thunk_runtime=false" in os.environ["XLA_FLAGS"].split()
else:   # jax >= 0.6: no legacy runtime; the default stays, with a warning naming why
  assert got == "thunk", got
  assert any("needs jax < 0.6" in str(x.message) for x in w)
  assert "thunk_runtime" not in os.environ.get("XLA_FLAGS", "")
import jax, jax.numpy as jnp
assert float(jnp.ones(3).sum()) == 3.0          # the backend starts with the flag
with warnings.catch_warnings(record=True) as w:
  warnings.simplefilter("always")
  assert devices.use_cpu_runtime("thunk" if got == "legacy" else "legacy") == got  # too late
assert any("already run" in str(x.message) for x in w)
try:
  devices.use_cpu_runtime("fast")
except ValueError as e:
  assert "cpu_runtime" in str(e)
else:
  raise AssertionError("no error for an unknown runtime")
print("ok")
"""


def test_cpu_runtime_switch_before_the_backend_starts():
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", _RUNTIME],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


_CORES = """
import os
from gs_jax.base import devices
allowed = sorted(os.sched_getaffinity(0))
assert devices.use_cpu_cores("") == allowed            # empty: affinity left alone
assert devices.use_cpu_cores("0") == [allowed[0]]
assert sorted(os.sched_getaffinity(0)) == [allowed[0]]
for bad, words in ((str(len(allowed)), "out of range"), ("a,b", "comma-separated")):
  try:
    devices.use_cpu_cores(bad)
  except ValueError as e:
    assert words in str(e), e
  else:
    raise AssertionError(f"no error for cpu_cores={bad!r}")
import jax.numpy as jnp
assert float(jnp.ones(3).sum()) == 3.0
print("ok")
"""


def test_cpu_cores_pins_the_process_by_index_into_its_allowed_cores():
  """In a subprocess (pinning is process-wide): index 0 of the allowed cores; clear errors
  for the first index past them (any core count) and for a malformed spec."""
  import subprocess
  import sys

  out = subprocess.run(
    [sys.executable, "-c", _CORES],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_released_cli_rejects_a_core_index_it_does_not_have():
  import subprocess
  import sys

  n = len(os.sched_getaffinity(0))
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.cifar",
      "--preset=released",
      f"--cpu_cores={n}",
      "--out_dir=unused",
    ],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert out.returncode != 0 and "out of range" in out.stderr, out.stderr[-2000:]


def test_released_sd_form_converts_to_sd_lambda():
  """sd_coef·Σ ŷ² (batch B, C logits) equals sd_lambda·mean(ŷ²) with sd_lambda = sd_coef·B·C;
  at B = 1, C = 2: sd_coef 0.1 = sd_lambda 0.2 (configs/cifar.py docstring)."""
  logits = jnp.array([[1.5, -2.0]])
  batch = {"y": jnp.array([1])}
  a, _ = train.softmax_objective(
    logits, batch, None, 0, {"sd_lambda": 0.0, "sd_coef": jnp.float32(0.1)}
  )
  b, _ = train.softmax_objective(logits, batch, None, 0, {"sd_lambda": jnp.float32(0.2)})
  np.testing.assert_allclose(a, b, rtol=1e-6)
  ce = -jax.nn.log_softmax(logits)[0, 1]
  np.testing.assert_allclose(a, ce + 0.1 * (1.5**2 + 2.0**2), rtol=1e-6)
  logits4 = jnp.arange(8.0).reshape(4, 2) / 4
  a4, _ = train.softmax_objective(
    logits4, {"y": jnp.zeros(4, int)}, None, 0, {"sd_lambda": 0.0, "sd_coef": 0.1}
  )
  b4, _ = train.softmax_objective(
    logits4, {"y": jnp.zeros(4, int)}, None, 0, {"sd_lambda": 0.1 * 4 * 2}
  )
  np.testing.assert_allclose(a4, b4, rtol=1e-6)


def _tiny_problem(n=24):
  rng = np.random.default_rng(0)
  data = {
    "x": jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
    "y": jnp.asarray(rng.integers(0, 2, n).astype(np.int32)),
  }
  net = models.NarLeNet(2)
  tx = optax.sgd(1e-3, momentum=0.9)
  state = train.init_state(net, tx, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  return net, tx, state, data


def test_scanned_batch1_trainer_equals_the_step_by_step_loop():
  net, tx, state, data = _tiny_problem()
  idx = cifar.epoch_permutation(jax.random.PRNGKey(5), 0, 24, 1)
  hp = {"sd_lambda": jnp.float32(0.0), "sd_coef": jnp.float32(0.1)}
  step = train.make_train_step(net, tx, train.softmax_objective)
  pre = lambda k, xb: cifar.to_float(xb)
  s1, m1 = train.make_epoch_runner(step, preprocess=pre, scan=True)(
    state, data["x"], data["y"], idx, hp
  )
  init = jax.tree_util.tree_map(np.asarray, state.params)
  # The step-by-step runner donates its input state: give it a copy.
  s2, m2 = train.make_epoch_runner(step, preprocess=pre)(
    jax.tree_util.tree_map(jnp.copy, state), data["x"], data["y"], idx, hp
  )
  assert int(s1.step) == int(s2.step) == 24
  # Same operations; inside the scan XLA may fuse differently: float32 rounding only.
  for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  moved = sum(
    float(jnp.abs(a - b).sum())
    for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(init))
  )
  assert moved > 1e-3


def test_scanned_fit_minibatch_resumes_to_the_same_result(tmp_path):
  net, tx, state0, data = _tiny_problem()
  key = jax.random.PRNGKey(2)
  hp = {"sd_lambda": jnp.float32(0.0), "sd_coef": jnp.float32(0.1)}

  def fit(epochs, **kw):
    return train.fit_minibatch(
      net,
      tx,
      train.softmax_objective,
      state0,
      data,
      lambda e: cifar.epoch_permutation(key, e, 24, 1),
      epochs,
      hp,
      preprocess=lambda k, xb: cifar.to_float(xb),
      chunk=8,
      progress=False,
      scan=True,
      **kw,
    )

  full, full_hist = fit(3)

  class Killed(Exception):
    pass

  def kill(step, metrics):
    if step > 40:  # inside epoch 2 (steps 25..48)
      raise Killed

  with pytest.raises(Killed):
    fit(3, checkpoint=checkpoint.Checkpointer(tmp_path, every_seconds=0.0), on_chunk=kill)
  ckpt = checkpoint.Checkpointer(tmp_path, every_seconds=0.0)
  assert ckpt.latest_step() == 1
  resumed, hist = fit(3, checkpoint=ckpt)
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert hist == full_hist


def test_gap_loss_and_released_attack_units():
  """The logit-gap loss; a linear model on 2x−1 inputs: the released attack's margin in pixels
  equals the closed form |z|/(2‖w‖₁), and in [−1,1] units it is twice that."""
  np.testing.assert_allclose(attacks._gap_sum(jnp.array([[3.0, 1.0, 2.0]]), jnp.array([0])), -1.0)
  w = jax.random.normal(jax.random.PRNGKey(0), (8 * 8 * 3,))

  def logits_fn(p, x):  # binary logits (0, z) with z = w·(2x−1)
    z = (2 * x - 1).reshape(x.shape[0], -1) @ p
    return jnp.stack([jnp.zeros_like(z), z], -1)

  x = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (10, 8, 8, 3))
  z = np.asarray(logits_fn(w, x)[:, 1])
  y = jnp.asarray((z > 0).astype(np.int32))
  exact = np.abs(z) / (2 * np.abs(np.asarray(w)).sum())  # pixels (box [0,1] not active)
  from gs_jax.tasks.cifar_eval import RELEASED_ATTACKS

  for name, attack in RELEASED_ATTACKS.items():
    m = np.asarray(
      attacks.margin(
        logits_fn, w, x, y, jax.random.PRNGKey(2), eps_max=0.1, bisection_steps=12, **attack
      )
    )
    tol = 0.1 / 2**12
    assert np.all(m >= exact - 1e-7), name  # bisection returns the flipping end
    np.testing.assert_array_less(
      m - exact, tol + 1e-6 if name == "released" else 0.05 * exact + tol
    )


def test_class_names_and_config():
  assert cifar.class_ids("airplane,horse") == (0, 7)
  assert cifar.class_ids(("cat", "dog")) == cifar.CIFAR2_CLASSES
  with pytest.raises(ValueError):
    cifar.class_ids("cat,cat")
  cfg = configs.get_config("released")
  assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.momentum, cfg.augment, cfg.classes) == (
    1,
    40,
    1e-3,
    0.9,
    False,
    "airplane,horse",
  )
  cfg.sd_coef, cfg.sd_lambda = 0.1, 0.2
  with pytest.raises(ValueError, match="not both"):
    configs.validate(cfg)
  cfg = cli.parse(configs, ["--sd_lambda=0.01"], prog="x")
  assert cfg.model == "cpu" and cfg.sd_lambda == 0.01 and cfg.classes == "cat,dog"


def test_real_airplane_horse_selection(cifar10_npz):
  d = cifar.load("cifar2", cifar10_npz, "airplane,horse")
  raw = np.load(cifar10_npz)
  assert len(d.x_train) == 10000 and len(d.x_test) == 2000
  keep = np.isin(raw["y_test"].reshape(-1), (0, 7))
  np.testing.assert_array_equal(d.x_test, raw["x_test"][keep])
  np.testing.assert_array_equal(d.y_test, (raw["y_test"].reshape(-1)[keep] == 7).astype(int))


def test_released_table_and_figure_from_results(tmp_path):
  """analysis.cifar_table groups released runs by (classes, method, sd_coef), reports mean ±
  std over seeds and draws the Figure-2-axes plot."""
  from analysis import cifar_table
  from gs_jax.experiment import results

  def write(name, coef, seed, q50):
    m = {
      "released": {"n": 4, "q25": 0.01, "q50": q50, "q75": 0.2, "q90": 0.3, "median_correct": q50}
    }
    acc = {"full": 0.5, "lossless": 0.5}
    results.atomic_write_json(
      tmp_path / name / "results.json",
      {
        "config": {
          "dataset": "cifar2",
          "classes": "airplane,horse",
          "model": "released",
          "sd_coef": coef,
          "epochs": 1,
          "seed": seed,
        },
        "method": "SD" if coef else "ERM",
        "data": {"n_train": 10},
        "metrics": {
          "train_acc": 1.0,
          "test_iid_acc": {"full": 0.9, "lossless": 0.8},
          "test_ood_acc": {"released": {k: acc for k in ("eps_0.05_pm1", "eps_0.05", "eps_5/255")}},
          "margins_pm1": m,
        },
        "margins": {"released": {"values_pm1": [0.0, q50, 0.2, None]}},
      },
    )  # None: +inf

  write("a", 0.0, 0, 0.04)
  write("b", 0.1, 0, 0.10)
  write("c", 0.1, 1, 0.14)
  cifar_table.main([f"--runs={tmp_path}/*", f"--out_dir={tmp_path}/t", "--allow_dirty"])
  md = (tmp_path / "t" / "released_table.md").read_text()
  assert "| cifar2 | airplane,horse | SD | 0.1 | 0,1 |" in md
  assert "0.120 ± 0.028" in md  # median margins 0.10, 0.14: mean 0.12, sample std 0.028
  # The 90th percentile of [0, q50, 0.2, inf] is the inf margin: reported as such, not NaN.
  assert "beyond the bracket in 2/2 seeds" in md and "nan" not in md
  assert cifar_table.margin_quantile([0.1, 0.3, np.inf, np.inf], 0.5) == 0.3
  assert (tmp_path / "t" / "released_figure2_airplane_horse.png").stat().st_size > 1000
  assert not (tmp_path / "t" / "released_sweep_airplane_horse.png").exists()  # 2 strengths
  write("d", 0.3, 0, 0.2)
  cifar_table.main([f"--runs={tmp_path}/*", f"--out_dir={tmp_path}/t", "--allow_dirty"])
  assert (tmp_path / "t" / "released_sweep_airplane_horse.png").stat().st_size > 1000
  assert not (tmp_path / "t" / "table1.md").exists()


def test_a_diverging_run_stops_and_is_recorded_not_evaluated(tmp_path, capsys):
  """lr 1e4 makes the batch-1 loss non-finite within the first epoch: fit_minibatch raises
  train.Diverged before checkpointing that epoch; the experiment writes results.json with
  ``diverged_at_epoch`` and no evaluation; analysis.cifar_table leaves it out, saying so."""
  from analysis import cifar_table
  from experiments import cifar as experiment
  from gs_jax.experiment import results
  from tests.test_cifar import _fake_cifar10

  net, tx, state0, data = _tiny_problem()
  big = optax.sgd(1e4, momentum=0.9)
  state0 = train.make_state(state0.variables(), big, jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(2)
  ckpt = checkpoint.Checkpointer(tmp_path / "ck", every_seconds=0.0)
  with pytest.raises(train.Diverged, match="epoch 1 is") as err:
    train.fit_minibatch(
      net,
      big,
      train.softmax_objective,
      state0,
      data,
      lambda e: cifar.epoch_permutation(key, e, 24, 1),
      3,
      {"sd_lambda": jnp.float32(0.0)},
      chunk=8,
      progress=False,
      scan=True,
      preprocess=lambda k, xb: cifar.to_float(xb),
      checkpoint=ckpt,
    )
  assert err.value.epoch == 1 and ckpt.latest_step() is None
  _fake_cifar10(tmp_path / "cifar10.npz", n_train=60, n_test=20)
  cfg = cli.overrides(
    configs.get_config("released"),
    data_dir=str(tmp_path),
    lr=1e4,
    epochs=2,
    classes="automobile,bird",
    out_dir=str(tmp_path / "run"),
    progress=False,
    cpu_cores="",
  )
  r = experiment.run(cfg)
  assert r["metrics"] == {"diverged_at_epoch": 1} and r["method"] == "ERM"
  assert (
    not (tmp_path / "run" / "ckpt").exists()
    or checkpoint.Checkpointer(tmp_path / "run" / "ckpt").latest_step() is None
  )
  assert results.read_json(tmp_path / "run" / "results.json")["history"][-1]["epoch"] == 1
  cifar_table.main([f"--runs={tmp_path}/run", f"--out_dir={tmp_path}/t", "--allow_dirty"])
  assert "diverged at epoch 1" in capsys.readouterr().out

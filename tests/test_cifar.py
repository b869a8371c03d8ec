"""CIFAR: data pipeline, models, SD objective, PGD attacks and margins, batching, minibatch
training with resume, and the experiment end to end (fake data; real data via GS_DATA_DIR)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import attacks, models
from gs_jax.base import batching
from gs_jax.experiment import checkpoint
from gs_jax import training as train
from gs_jax.data import cifar
from tests.conftest import run_experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    np.testing.assert_array_equal(x[:, 0, 0, 0], keep)  # the right images, in order
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
  np.savez(
    tmp_path / "c35.npz",
    x_train=x,
    y_train=np.where(y == 1, 5, 3),
    x_test=x[:8],
    y_test=np.where(y[:8] == 1, 5, 3),
  )
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
  np.savez(
    tmp_path / "bad_dtype.npz",
    x_train=x.astype(np.float32),
    y_train=np.zeros(4, int),
    x_test=x,
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match="x_train must be uint8"):
    cifar.load("cifar10", str(tmp_path / "bad_dtype.npz"))
  np.savez(
    tmp_path / "bad_shape.npz",
    x_train=x,
    y_train=np.zeros(3, int),
    x_test=x,
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match=r"y_train must have shape \(4,\)"):
    cifar.load("cifar10", str(tmp_path / "bad_shape.npz"))
  np.savez(
    tmp_path / "bad_label.npz",
    x_train=x,
    y_train=np.array([0, 1, 12, 3]),
    x_test=x,
    y_test=np.zeros(4, int),
  )
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
  with tfds.testing.mock_data(num_examples=40):  # same deterministic mock stream
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
  for i in range(6):  # brute force over the 81 offsets × 2 flips
    cands = [padded[i, a : a + 32, b : b + 32] for a in range(9) for b in range(9)]
    cands += [c[:, ::-1] for c in cands]
    assert any(np.array_equal(np.asarray(out[i]), c) for c in cands)
  outs = cifar.augment(jax.random.PRNGKey(4), jnp.repeat(x[:1], 64, 0))
  assert len({np.asarray(o).tobytes() for o in outs}) > 10  # it does randomise


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
  assert any(jax.tree_util.tree_leaves(changed))  # BN running stats updated in train mode
  if config == "paper":
    widths = [
      state.params[f"conv{s}_{j}"]["kernel"].shape[-1]
      for s, n in enumerate((2, 2, 3, 3, 3))
      for j in range(n)
    ]
    assert widths == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6


def test_normalisation_inside_the_model():
  """Feeding [0,1] pixels equals feeding normalised pixels to a model with mean 0, std 1."""
  m1 = models.CifarVGG(models.CNN_CPU_STAGES, 2)
  m0 = models.CifarVGG(models.CNN_CPU_STAGES, 2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  v = m1.init(jax.random.PRNGKey(1), x)
  xn = (x - jnp.asarray(models.CIFAR_MEAN)) / jnp.asarray(models.CIFAR_STD)
  np.testing.assert_allclose(m1.apply(v, x), m0.apply(v, xn), rtol=1e-5, atol=1e-5)


def test_head_keeps_the_first_images():
  d = cifar.CifarData(
    np.zeros((10, 32, 32, 3), np.uint8),
    np.arange(10, dtype=np.int32),
    np.zeros((6, 32, 32, 3), np.uint8),
    np.arange(6, dtype=np.int32),
    np.arange(6) < 3,
    10,
    "cifar10",
    "test",
  )
  h = cifar.head(d, 4, 0)
  np.testing.assert_array_equal(h.y_train, np.arange(4))
  assert len(h.x_train) == 4 and len(h.y_test) == 6 and h.test_is_lossless.sum() == 3
  h = cifar.head(d, 0, 2)
  assert len(h.y_train) == 10 and len(h.x_test) == 2 and h.test_is_lossless.shape == (2,)


def test_sd_objective_matches_its_definition():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 3)).astype(np.float32) * 3
  y = rng.integers(0, 3, 7)
  batch = {"y": jnp.asarray(y)}
  lse = np.log(np.exp(logits).sum(1))
  ce = np.mean(lse - logits[np.arange(7), y])
  for lam in (0.0, 0.01, 0.05):
    loss, metrics = train.softmax_objective(jnp.asarray(logits), batch, None, 0, {"sd_lambda": lam})
    # docs/protocols.md §3.3/§4: sd_lambda · mean over batch *and classes* of ŷ²
    np.testing.assert_allclose(loss, ce + lam * np.sum(logits**2) / logits.size, rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"], ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == y), rtol=1e-6)


# ----------------------------------------------------------------------------- attacks


def _linear(p, x):
  return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]


def _linear_params(seed=0, d=8 * 8 * 3, classes=2):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {
    "w": jax.random.normal(k1, (d, classes)) / np.sqrt(d),
    "b": jax.random.normal(k2, (classes,)) * 0.01,
  }


def _exact_linf_margin(p, x):
  """L∞ margin of a 2-class linear model, |f(x)| / ‖u‖₁ with f = u·x + c (clipping unbound)."""
  lg = np.asarray(_linear(p, x))
  return np.abs(lg[:, 1] - lg[:, 0]) / float(jnp.sum(jnp.abs(p["w"][:, 1] - p["w"][:, 0])))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(norm):
  p = _linear_params()
  x = jax.random.uniform(jax.random.PRNGKey(5), (16, 8, 8, 3))
  x = x.at[:4].set(0.0).at[4:8].set(1.0)  # saturated images: clipping must bind
  y = jnp.argmax(_linear(p, x), -1)
  eps = 0.03 if norm == "linf" else 0.5
  eps_vec = jnp.linspace(0.2, 1.0, 16) * eps
  for e in (eps, eps_vec):
    x_adv = attacks.pgd(
      _linear,
      p,
      x,
      y,
      jax.random.PRNGKey(1),
      e,
      norm=norm,
      steps=7,
      step_size=jnp.asarray(e) / 2,
      restarts=2,
    )
    d = (x_adv - x).reshape(16, -1)
    size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
    assert bool(jnp.all(size <= jnp.broadcast_to(e, (16,)) * (1 + 1e-5) + 1e-7))
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_pgd_traced_equals_driven_and_finds_the_linear_optimum():
  p = _linear_params(1)
  x = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(2), (8, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  eps = 0.01
  for rand_init in (True, False):
    a = attacks.pgd(_linear, p, x, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init)
    # The same function traced inside one outer jit (pieces inlined, loops unrolled).
    b = jax.jit(
      lambda p_, x_: attacks.pgd(
        _linear, p_, x_, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init
      )
    )(p, x)
    np.testing.assert_allclose(a, b, atol=1e-6)  # float32 reassociation only
  # For a linear 2-class model the L∞ optimum moves every pixel by ε against the margin
  # direction (no clipping near 0.5): PGD with step ε/10 × 10 steps from x reaches that
  # corner exactly.
  u = (p["w"][:, 1] - p["w"][:, 0]).reshape(8, 8, 3)
  s = jnp.where(y == 1, -1.0, 1.0)[:, None, None, None]
  np.testing.assert_allclose(a - x, s * eps * jnp.sign(u)[None], atol=1e-6)


def test_margin_matches_closed_form_for_a_linear_model():
  p = _linear_params(2)
  x = 0.5 + 0.02 * jax.random.normal(jax.random.PRNGKey(4), (12, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  y = y.at[0].set(1 - y[0])  # one misclassified example → 0
  exact = _exact_linf_margin(p, x)
  eps_max, steps = 0.2, 10
  m = np.asarray(
    attacks.margin(
      _linear,
      p,
      x,
      y,
      jax.random.PRNGKey(0),
      eps_max=eps_max,
      bisection_steps=steps,
      rand_init=False,
    )
  )
  assert m[0] == 0.0
  tol = eps_max / 2**steps
  inside = exact[1:] < eps_max
  assert inside.sum() >= 6
  np.testing.assert_array_less(np.abs(m[1:][inside] - exact[1:][inside]), tol + 1e-7)
  assert np.all(np.isinf(m[1:][~inside]))
  # From a random start the 10 steps of ε/10 cannot always use the whole budget: the
  # margin is never below the exact one, and on average larger.
  m3 = np.asarray(
    attacks.margin(_linear, p, x, y, jax.random.PRNGKey(0), eps_max=eps_max, bisection_steps=steps)
  )
  fin = np.isfinite(m3[1:]) & inside
  assert np.all(m3[1:][fin] >= exact[1:][fin] - tol) and m3[1:][fin].mean() > exact[1:][fin].mean()


def test_evaluate_in_padded_chunks_against_the_linear_closed_form():
  """``attacks.evaluate`` over 3 chunks (5, 5, 2 padded to 5 rows) on a linear model whose
  L∞ margins are known: PGD cannot flip beyond the exact margin; from a random start 10 steps
  of ε/10 move each coordinate by ε·3/4 on average, so margins below ε/2 flip; the strong
  attack (50 steps of ε/20) always reaches the corner and flips exactly the margins below ε."""
  p = _linear_params(3)
  p["b"] = -0.5 * p["w"].sum(0)  # f(0.5·1) = 0: margins spread from 0 upwards
  x = 0.5 + 0.05 * jax.random.normal(jax.random.PRNGKey(7), (12, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  y = y.at[0].set(1 - y[0])  # example 0 misclassified
  exact = _exact_linf_margin(p, x)
  s = np.sort(exact[1:])
  eps = float(s[5] + s[6]) / 2  # between two margins, no ties
  shapes = []

  def prepare(xb, yb):
    shapes.append(xb.shape)
    return xb, yb

  out = attacks.evaluate(
    _linear,
    p,
    x,
    y,
    jax.random.PRNGKey(0),
    eps={"e": eps},
    margin_n=-1,
    margin_eps_max=0.05,
    margin_bisection=10,
    strong_n=12,
    batch_size=5,
    prepare=prepare,
  )
  assert set(shapes) == {(5, 8, 8, 3)}  # one shape: compiled once
  clean = np.asarray(jnp.argmax(_linear(p, x), -1))
  np.testing.assert_array_equal(out["clean"], clean)
  y = np.asarray(y)
  ok = clean == y
  flipped = out["pgd"]["e"] != y
  assert not flipped[ok & (exact > eps * 1.001)].any()
  assert flipped[ok & (exact < eps / 2)].all() and (ok & (exact < eps / 2)).sum() >= 2
  strong_flipped = out["strong"]["e"]["strong"] != y
  np.testing.assert_array_equal(strong_flipped[ok], (exact < eps)[ok])
  np.testing.assert_array_equal(out["strong"]["e"]["weak"] != y, flipped | ~ok)
  tol = 0.05 / 2**10
  assert out["margins"][0] == 0 and np.all(out["margins"][1:] >= exact[1:] - tol)
  only_clean = attacks.evaluate(_linear, p, x, y, jax.random.PRNGKey(0), batch_size=5)
  assert set(only_clean) == {"clean", "pgd"} and not only_clean["pgd"]


def test_attack_rejects_bad_arguments():
  p = _linear_params()
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="norm must be"):
    attacks.pgd(_linear, p, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, norm="l1")
  with pytest.raises(ValueError, match="steps and restarts"):
    attacks.pgd(_linear, p, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, steps=0)


# ----------------------------------------------------------------------------- batching


def test_pad_rows_repeats_row_zero_for_numpy_and_jax():
  a = np.arange(6).reshape(3, 2)
  out = batching.pad_rows(a, 5)
  assert isinstance(out, np.ndarray)
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])
  assert batching.pad_rows(a, 3) is a
  out = batching.pad_rows(jnp.asarray(a), 4)
  assert isinstance(out, jax.Array)
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [0, 1]])
  with pytest.raises(ValueError, match="fewer"):
    batching.pad_rows(a, 2)
  with pytest.raises(ValueError, match="empty"):
    batching.pad_rows(a[:0], 2)


def test_batched_chunks_keys_and_sizes():
  x = np.arange(7.0)[:, None]
  seen = []

  def fn(xb, yb, key):
    seen.append((xb.shape[0], int(jax.random.key_data(key).sum())))
    return xb[:, 0] * 10 + yb

  out = batching.batched(fn, 3)(x, np.arange(7), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out, np.arange(7) * 11)  # padding cut off, order kept
  assert [s for s, _ in seen] == [3, 3, 3]
  keys = [
    int(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(0), i)).sum()) for i in range(3)
  ]
  assert [k for _, k in seen] == keys
  # Small inputs get a small chunk, a multiple of `multiple` (e.g. the device count).
  assert batching.chunk_size(7, 500, 4) == 8 and batching.chunk_size(7, 500) == 7
  assert batching.chunk_size(1000, 500, 4) == 500


# ----------------------------------------------------------------------------- training loop


def test_fit_minibatch_resumes_mid_run_to_the_same_result(tmp_path):
  """A run killed in epoch 3 and called again continues from the epoch-2 checkpoint and ends
  bit-identical to an uninterrupted one; a finished run returns at once; a checkpoint of
  another run (fingerprint) is refused."""
  model = models.MLP(hidden=(16,), dropout_rate=0.2)
  tx = train.make_optimizer("sgd", 0.05, momentum=0.9)
  rng = np.random.default_rng(0)
  data = {
    "x": rng.normal(size=(40, 2)).astype(np.float32),
    "y": rng.choice([-1.0, 1.0], 40).astype(np.float32),
  }
  key = jax.random.PRNGKey(1)

  def indices(epoch):
    return jax.random.permutation(jax.random.fold_in(key, epoch), 40)[:32].reshape(4, 8)

  def fit(**kw):
    state = train.init_state(model, tx, jax.random.PRNGKey(0), data["x"][:2])
    return train.fit_minibatch(
      model,
      tx,
      train.binary_objective,
      state,
      data,
      indices,
      4,
      {"sd_lambda": 0.01},
      chunk=3,
      progress=False,
      **kw,
    )

  full, full_hist = fit()
  assert [r["epoch"] for r in full_hist] == [1, 2, 3, 4] and full_hist[-1]["step"] == 16

  class Killed(Exception):
    pass

  def kill(step, metrics):
    if step > 9:
      raise Killed

  with pytest.raises(Killed):
    fit(checkpoint=checkpoint.Checkpointer(tmp_path, every_seconds=0.0), on_chunk=kill)
  ckpt = checkpoint.Checkpointer(tmp_path, every_seconds=0.0)
  assert ckpt.latest_step() == 2
  logged = []
  resumed, hist = fit(checkpoint=ckpt, on_epoch=logged.append)
  assert [r["epoch"] for r in logged] == [3, 4]
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert hist == full_hist
  again, hist2 = fit(checkpoint=ckpt, on_chunk=kill)  # finished: no step is run
  assert hist2 == full_hist and int(again.step) == 16
  other = checkpoint.Checkpointer(tmp_path, every_seconds=0.0, fingerprint="b")
  with pytest.raises(ValueError, match="another run"):  # the checkpointer's fingerprint
    train.fit_minibatch(
      model,
      tx,
      train.binary_objective,
      full,
      data,
      indices,
      4,
      {"sd_lambda": 0.01},
      checkpoint=other,
    )


# ----------------------------------------------------------------------------- end to end

TINY = [
  "--dataset=cifar10",
  "--preset=cpu",
  "--sd_lambda=0.01",
  "--seed=1",
  "--epochs=3",
  "--batch_size=16",
  "--chunk=3",
  "--margin_n=8",
  "--margin_bisection=3",
  "--eval_batch=16",
  "--no_progress",
  "--test_limit=24",
]


def _results(path):
  r = json.loads((path / "results.json").read_text())
  r["history"] = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
  return r


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
  """The same tiny run three ways: uninterrupted (1 device), killed mid-epoch 2 and started
  again with the same command, and uninterrupted on 4 CPU devices."""
  from experiments import cifar as exp

  tmp = tmp_path_factory.mktemp("cifar")
  _fake_cifar10(tmp / "cifar10.npz", n_train=64, n_test=24)
  common = TINY + [f"--data_dir={tmp / 'cifar10.npz'}"]
  out = {"tmp": tmp, "common": common}
  exp.main(common + [f"--out_dir={tmp / 'plain'}"])
  out["plain"] = _results(tmp / "plain")
  resumed = common + [f"--out_dir={tmp / 'resumed'}"]
  killed = run_experiment("cifar", resumed, kill_after_step=6)  # in epoch 2 of 4 steps
  assert killed.returncode == 3, killed.stderr[-2000:]
  assert not (tmp / "resumed" / "results.json").exists()
  again = run_experiment("cifar", resumed)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resumed from epoch 1" in again.stderr
  out["resumed"] = _results(tmp / "resumed")
  sharded = run_experiment("cifar", common + [f"--out_dir={tmp / 'sharded'}", "--cpu_devices=4"])
  assert sharded.returncode == 0, sharded.stderr[-2000:]
  out["sharded"] = _results(tmp / "sharded")
  return out


def _compare(a, b, rtol, atol):
  assert [h["epoch"] for h in a["history"]] == [h["epoch"] for h in b["history"]] == [1, 2, 3]
  for ha, hb in zip(a["history"], b["history"]):
    for k in ("loss", "nll", "accuracy", "lr"):
      np.testing.assert_allclose(ha[k], hb[k], rtol=rtol, atol=atol)
  ma, mb = a["metrics"], b["metrics"]
  np.testing.assert_allclose(ma["train_acc"], mb["train_acc"], atol=atol)
  np.testing.assert_allclose(ma["test_iid_acc"]["full"], mb["test_iid_acc"]["full"], atol=atol)
  for e in ("eps_0.05", "eps_5/255"):
    np.testing.assert_allclose(
      ma["test_ood_acc"][e]["full"], mb["test_ood_acc"][e]["full"], atol=atol
    )


def test_results_schema(tiny_runs):
  r = tiny_runs["plain"]
  assert r["experiment"] == "cifar" and r["std_convention"] == "sample (ddof=1)"
  assert r["config"]["sd_lambda"] == 0.01 and r["config"]["preset"] == "cpu"
  assert r["method"] == "SD" and r["data"]["n_train"] == 64 and r["data"]["n_test"] == 24
  assert r["metrics"]["steps"] == 12 and len(r["margins"]["values"]) == 8
  assert r["provenance"]["git_commit"] and len(r["provenance"]["devices"]) == 1


def test_resume_after_kill_gives_the_same_result(tiny_runs):
  a, b = tiny_runs["plain"], tiny_runs["resumed"]
  _compare(a, b, rtol=0, atol=0)  # same computations in the same order: bit-identical
  assert a["margins"]["values"] == b["margins"]["values"]


def test_finished_run_is_only_reevaluated_and_overwrite_starts_afresh(tiny_runs, capsys):
  from experiments import cifar as exp

  tmp, common = tiny_runs["tmp"], tiny_runs["common"]
  out = tmp / "resumed"
  r = exp.main(common + [f"--out_dir={out}", "--margin_n=4"])  # evaluation settings may change
  assert "resumed from epoch 3" in capsys.readouterr().err
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # no epoch retrained
  assert len(r["margins"]["values"]) == 4
  assert r["metrics"]["test_iid_acc"] == tiny_runs["plain"]["metrics"]["test_iid_acc"]
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:  # training settings may not
    exp.main(common + [f"--out_dir={out}", "--sd_lambda=0.02"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "other settings" in err and "sd_lambda" in err and "Traceback" not in err
  r = exp.main(common + [f"--out_dir={out}", "--sd_lambda=0.02", "--epochs=1", "--overwrite"])
  assert r["metrics"]["steps"] == 4 and r["config"]["sd_lambda"] == 0.02
  assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_sharded_over_4_devices_matches_1_device(tiny_runs):
  a, b = tiny_runs["plain"], tiny_runs["sharded"]
  assert len(b["provenance"]["devices"]) == 4 and len(a["provenance"]["devices"]) == 1
  # Cross-device reductions (gradients, batch statistics) reassociate float sums.
  _compare(a, b, rtol=1e-4, atol=1e-4)
  import orbax.checkpoint as ocp

  ck = ocp.StandardCheckpointer()
  pa = ck.restore(str(tiny_runs["tmp"] / "plain" / "ckpt" / "3" / "state"))
  pb = ck.restore(str(tiny_runs["tmp"] / "sharded" / "ckpt" / "3" / "state"))
  jax.tree_util.tree_map(
    lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-3, atol=1e-4), pa["params"], pb["params"]
  )


def test_cli_flags(capsys):
  from configs import cifar as configs
  from experiments import cifar as exp
  from gs_jax.experiment import cli

  cfg = cli.parse(
    configs,
    ["--preset=paper", "--no_augment", "--no_progress", "--sd_lambda=0.05", "--dataset=cifar100"],
  )
  assert (cfg.model, cfg.epochs, cfg.augment, cfg.run.progress, cfg.sd_lambda) == (
    "paper",
    30,
    False,
    False,
    0.05,
  )
  assert cli.parse(configs, []).model == "cpu" and cli.parse(configs, []).epochs == 6
  assert exp.default_out_dir(cfg) == "runs/cifar/cifar100_paper_sd0.05_s0"
  for bad, message in (
    (["--sd_lambda=-1"], "--sd_lambda must be"),
    (["--dataset=mnist"], "--dataset must be"),
    (["--config=cpu"], "unrecognized"),
    (["--epochs=0"], "--epochs must be"),
  ):
    with pytest.raises(SystemExit):
      exp.main(bad)
    assert message in capsys.readouterr().err


def test_table_from_new_and_earlier_results(tmp_path):
  """analysis.cifar_table groups seeds (sample std), reads the committed VGG runs of the earlier
  schema to their table's numbers, and prints the paper's numbers from gs_jax.paper."""
  from analysis import cifar_table
  from gs_jax.experiment import results

  for seed, (acc, margin) in enumerate(((0.70, 1 / 255), (0.74, 2 / 255))):
    results.atomic_write_json(
      tmp_path / f"s{seed}" / "results.json",
      {
        "experiment": "cifar",
        "method": "SD",
        "data": {"n_train": 100},
        "config": {
          "dataset": "cifar2",
          "model": "cpu",
          "sd_lambda": 0.01,
          "epochs": 6,
          "train_limit": 0,
          "augment": True,
        },
        "metrics": {
          "train_acc": acc,
          "test_iid_acc": {"full": acc, "lossless": acc},
          "test_ood_acc": {e: {"full": 0.0, "lossless": 0.0} for e in ("eps_0.05", "eps_5/255")},
          "margin_median": margin,
        },
        "margins": {"eps_max": 0.05, "values": [margin, None]},
      },
    )
  legacy = os.path.join(REPO, "docs", "results", "cifar2_paper_h200", "cifar2_paper_*")
  cifar_table.main(
    [f"--runs={tmp_path}/s*", f"--runs={legacy}", f"--out_dir={tmp_path / 't'}", "--allow_dirty"]
  )
  md = (tmp_path / "t" / "table1.md").read_text().splitlines()
  row = next(line for line in md if "| cpu | SD |" in line)
  assert "| 2 | 6 |" in row and "72.0 ± 2.8" in row and "1.50 ± 0.71" in row
  vgg = next(line for line in md if "| paper | ERM |" in line)
  assert "92.8 ± 0.0 | 83.8 ± 0.0" in vgg and "0.0 / 2.9" in vgg
  assert "100.0 / 95.2 ± 0.12 / 42.3 ± 3.0" in vgg
  assert (tmp_path / "t" / "figure2.png").exists()


def test_real_cifar2_reduced(tmp_path, cifar10_npz):
  """CI-sized run of the reproduction's pipeline on real CIFAR-2 (1 epoch on 1,024 images): data
  counts, the lossless subset, margins of every requested image, OOD ≤ IID accuracy. Not a
  learning check (see below)."""
  from experiments import cifar as exp

  r = exp.main(
    [
      "--dataset=cifar2",
      "--sd_lambda=0.01",
      "--epochs=1",
      "--train_limit=1024",
      "--test_limit=200",
      "--margin_n=50",
      "--margin_bisection=4",
      "--eval_batch=200",
      f"--data_dir={cifar10_npz}",
      f"--out_dir={tmp_path}",
      "--no_progress",
    ]
  )
  assert r["data"]["n_train"] == 1024 and r["data"]["n_test"] == 200
  # CIFAR-10 test images 0..999 are the exact ones: 103 cats + 86 dogs come first in CIFAR-2
  assert r["data"]["n_test_lossless"] == 189
  m = r["metrics"]
  # One epoch with the cpu preset's warm-up does not learn yet (measured: train 50.6%, test
  # 54.0%), so this test checks that the pipeline runs on real data, not accuracy; the slow
  # test below checks accuracy.
  assert 0.0 <= m["train_acc"] <= 1.0 and len(r["margins"]["values"]) == 50
  for e in ("eps_0.05", "eps_5/255"):
    assert m["test_ood_acc"][e]["full"] <= m["test_iid_acc"]["full"] + 0.02


@pytest.mark.slow
def test_real_cifar2_full_cpu_run(tmp_path, cifar10_npz):
  """The reproduction run of the README (one seed per method, ~10–15 min each on 2 cores)."""
  from experiments import cifar as exp

  res = {}
  for lam in (0.0, 0.01):
    res[lam] = exp.main(
      [
        "--dataset=cifar2",
        f"--sd_lambda={lam}",
        f"--data_dir={cifar10_npz}",
        f"--out_dir={tmp_path / str(lam)}",
        "--no_progress",
      ]
    )["metrics"]
  for m in res.values():
    assert m["test_iid_acc"]["full"] > 0.70
    assert m["test_ood_acc"]["eps_0.05"]["full"] < m["test_iid_acc"]["full"]


def test_npz_path_never_imports_tensorflow(tmp_path):
  _fake_cifar10(tmp_path / "cifar10.npz")
  code = (
    "import sys; from gs_jax.data import cifar; from experiments import cifar as e; "
    f"d = cifar.load('cifar2', {str(tmp_path)!r}); "
    "assert not any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'orbax') "
    "for m in sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:5]; "
    "print(len(d.x_train))"
  )
  r = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={**os.environ, "PYTHONPATH": REPO},
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "12"  # 60 images with labels i % 10: 6 cats + 6 dogs


def test_tfds_load_reaches_the_data_check(tmp_path):
  """The default path without mocks: ``tfds.load`` on an empty data dir with downloads off must
  fail only because the data are missing (mock_data above patches tfds.load away, so it cannot
  catch a missing runtime dependency such as importlib_resources, which tfds 4.9 needs)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  with pytest.raises(AssertionError, match="could not find data"):
    tfds.load("cifar10", data_dir=str(tmp_path), download=False)

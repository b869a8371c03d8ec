"""gs_jax.training.loops: fit_minibatch resumes mid-run to the same result (step-by-step and
scanned), and the scanned batch-1 trainer equals the step-by-step loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import models
from gs_jax.experiment import checkpoint
from gs_jax import training as train
from gs_jax.data import cifar

from tests._helpers import tiny_narlenet_problem as _tiny_problem


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

  def fit(checkpoint=None, **callbacks):
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
      checkpoint=checkpoint,
      loop=train.LoopOptions(chunk=3, progress=False),
      callbacks=train.Callbacks(**callbacks),
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

  def fit(epochs, checkpoint=None, **callbacks):
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
      checkpoint=checkpoint,
      loop=train.LoopOptions(chunk=8, progress=False, scan=True),
      callbacks=train.Callbacks(**callbacks),
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


def test_loop_options_and_callbacks_are_values():
  """fit_minibatch's options (how it runs) and callbacks (what it calls) are small frozen
  values with the defaults of the earlier keyword arguments."""
  import dataclasses

  opts = train.LoopOptions()
  assert (opts.chunk, opts.scan, opts.progress, opts.stop_on_nonfinite) == (10, False, True, True)
  with pytest.raises(dataclasses.FrozenInstanceError):
    opts.chunk = 3
  assert train.Callbacks() == train.Callbacks(on_chunk=None, evaluate=None, on_epoch=None)

"""gs_jax.experiment.checkpoint: a checkpoint refuses another run's fingerprint."""

import numpy as np
import pytest


def test_checkpoint_refuses_another_runs_fingerprint(tmp_path):
  from gs_jax.experiment import checkpoint

  state = {"w": np.arange(3.0, dtype=np.float32)}
  checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1}).save(5, state)
  step, restored, _, meta = checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1}).restore(
    state
  )
  assert step == 5 and meta == {}
  np.testing.assert_array_equal(restored["w"], state["w"])
  with pytest.raises(ValueError, match="belongs to another run"):
    checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.2}).restore(state)
  from gs_jax.experiment.run import fingerprint

  assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
  assert fingerprint({"a": 1}) != fingerprint({"a": 2})

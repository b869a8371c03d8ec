"""gs_jax.training.probes: field_ascent records every k-th step and runs the remainder."""

import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax import training as train


def test_field_ascent_records_every_kth_step_and_runs_the_remainder():
  field = lambda x: -x  # x_{t+1} = (1 − η) x_t
  x_end, seen = train.field_ascent(
    field, jnp.array([1.0, 2.0]), 0.5, 7, every=3, observe=lambda x: x.sum()
  )
  np.testing.assert_allclose(x_end, 0.5**7 * np.array([1.0, 2.0]))
  np.testing.assert_allclose(seen, 3.0 * 0.5 ** np.array([0, 3, 6]))
  clipped = train.field_ascent(field, jnp.array([1.0]), 3.0, 1, project=lambda x: x.clip(-1, 1))
  np.testing.assert_allclose(clipped, [-1.0])
  with pytest.raises(ValueError, match="every"):
    train.field_ascent(field, jnp.zeros(1), 0.1, 5, every=0)

"""gs_jax.base.stats: mean_std is the sample std; Wilson intervals against the closed form."""

import numpy as np
import pytest

from gs_jax.experiment import results


def test_mean_std_is_the_sample_std():
  out = results.mean_std([1.0, 2.0, 3.0, 4.0])
  assert out["mean"] == 2.5 and out["n"] == 4
  np.testing.assert_allclose(out["std"], np.sqrt(5.0 / 3.0), rtol=1e-15)  # Σ(x−x̄)²/(n−1)
  assert results.mean_std([7.0])["std"] == 0.0
  with pytest.raises(ValueError):
    results.mean_std([])


def test_wilson_interval_matches_the_closed_form_and_known_values():
  from gs_jax.experiment import results

  # Wilson 95% for 8/10 (Newcombe 1998, Table I: 0.4902–0.9433)
  lo, hi = results.wilson_interval(8, 10)
  np.testing.assert_allclose([lo, hi], [0.4902, 0.9433], atol=1e-4)
  lo, hi = results.wilson_interval(0, 16)
  assert lo == 0.0 and 0.19 < hi < 0.21  # z²/(n+z²) = 0.1936
  np.testing.assert_allclose(hi, 1.96**2 / (16 + 1.96**2), rtol=1e-3)
  assert results.wilson_interval(0, 0) == (0.0, 1.0)

"""gs_jax.tasks.starvation: a linear model trained by gradient descent reaches the dual fixed
point, and dual ascent ends at the exact fixed point (Figure 5)."""

import numpy as np

from gs_jax.base._compat import enable_x64
from configs import theorem2 as configs
from gs_jax.tasks import starvation
from gs_jax.theory import dual


def test_linear_model_trained_by_gd_matches_the_dual_fixed_point():
  lcfg = configs.get_config("quick").linear  # s1 = 2.5, 4, 6; 60,000 steps
  with enable_x64():
    res = starvation.linear_check(lcfg, progress=False)
  # GD at step 1/L ends with |grad| at round-off, so the trained optimum equals the Newton
  # fixed point up to float64 conditioning (measured 1.3e-14).
  for name in ("ridge", "sd"):
    assert res[name]["max_rel_error"] < 1e-11, res[name]["rel_error"]
    assert max(res[name]["grad_norm"]) < 1e-12
  z2 = np.asarray(res["ridge"]["z_trained"])[:, 1]
  assert np.all(np.diff(z2) < 0)  # Theorem 2: feature 1 starves feature 2
  assert np.all(np.asarray(res["ridge"]["dz2_ds1sq_dual_autodiff"]) < 0)
  assert np.all(np.asarray(res["ridge"]["dz2_ds1sq_trained_fd"]) < 0)
  z2_sd = np.asarray(res["sd"]["z_trained"])[:, 1]
  np.testing.assert_allclose(z2_sd, z2_sd[0], rtol=1e-12)  # SD: z* does not depend on S
  np.testing.assert_allclose(res["sd"]["dz2_ds1sq_dual_autodiff"], 0.0, atol=1e-15)


def test_dual_ascent_ends_at_the_exact_fixed_point():
  U, S, lam = dual.coupling_matrix(0.5), np.array([4.0, 2.0]), 0.01
  with enable_x64():
    path, z_end = starvation.dual_ascent(U, S, lam, lr=2e-4, steps=40_000, every=10_000)
  z_star = starvation.dual_responses(U, S, lam, "exact")
  # Gradient ascent on the strictly concave eq 8 converges linearly; 40,000 steps of 2e-4
  # reach the fixed point to round-off (measured 8e-15).
  np.testing.assert_allclose(z_end, z_star, rtol=1e-12)
  assert path.shape == (5, 2)
  np.testing.assert_allclose(path[0], S**2 * (np.asarray(U).T @ np.full(2, 0.5)) / lam)
  np.testing.assert_allclose(path[-1], z_end, rtol=0)

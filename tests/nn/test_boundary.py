import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import boundary


def test_margins_of_a_line_are_exact():
  fn = lambda x: x[:, 0] - 0.3
  pts = np.array([[1.0, 0.2], [-0.5, 1.0], [0.25, -1.0]], np.float32)
  y = np.array([1.0, -1.0, 1.0])
  m = boundary.input_space_margins(fn, pts, y, resolution=50)
  np.testing.assert_allclose(m, [0.7, 0.8, -0.05], atol=1e-5)


def test_margins_of_a_circle_beat_the_grid_spacing():
  fn = lambda x: jnp.sum(x * x, axis=1) - 1.0
  rng = np.random.default_rng(0)
  pts = rng.uniform(-1.8, 1.8, size=(200, 2)).astype(np.float32)
  y = np.sign(np.sum(pts**2, 1) - 1.0)
  exact = np.abs(np.linalg.norm(pts, axis=1) - 1.0)
  # Newton-refined vertices leave only the chord error ~ s²/8 (s ≈ grid spacing).
  m = boundary.input_space_margins(fn, pts, y, resolution=41)  # spacing 0.1
  np.testing.assert_allclose(m, exact, atol=3e-3)
  m = boundary.input_space_margins(fn, pts, y, resolution=401)  # spacing 0.01
  np.testing.assert_allclose(m, exact, atol=3e-5)


def test_no_boundary_in_window_gives_inf():
  m = boundary.input_space_margins(
    lambda x: x[:, 0] + 10.0, np.zeros((2, 2)), np.ones(2), resolution=20
  )
  assert np.all(np.isinf(m))


def test_grid_of_several_functions_and_precomputed_values():
  circle = lambda x: jnp.sum(x * x, axis=1) - 1.0
  line = lambda x: x[:, 0] - 0.3
  both = lambda x: jnp.stack([circle(x), line(x)])
  xs, ys, z = boundary.grid_values(both, resolution=37, batch=64)  # 1369 points, 22 chunks
  assert z.shape == (2, 37, 37)
  for k, fn in enumerate((circle, line)):
    np.testing.assert_allclose(z[k], boundary.grid_values(fn, resolution=37)[2], rtol=1e-6)
  gx, gy = np.meshgrid(xs, ys)
  np.testing.assert_allclose(z[1], gx - 0.3, atol=1e-6)
  pts = np.array([[0.0, 0.5], [1.5, 0.0]], np.float32)
  m = boundary.input_space_margins(circle, pts, np.array([-1.0, 1.0]), resolution=37, values=z[0])
  np.testing.assert_allclose(m, [0.5, 0.5], atol=2e-3)
  with pytest.raises(ValueError, match="shape"):
    boundary.zero_level_set(circle, resolution=40, values=z[0])

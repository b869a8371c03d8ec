import jax.numpy as jnp
import numpy as np

from gs_jax import boundary


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
  y = np.sign(np.sum(pts ** 2, 1) - 1.0)
  exact = np.abs(np.linalg.norm(pts, axis=1) - 1.0)
  # Newton-refined vertices leave only the chord error ~ s²/8 (s ≈ grid spacing).
  m = boundary.input_space_margins(fn, pts, y, resolution=41)    # spacing 0.1
  np.testing.assert_allclose(m, exact, atol=3e-3)
  m = boundary.input_space_margins(fn, pts, y, resolution=401)   # spacing 0.01
  np.testing.assert_allclose(m, exact, atol=3e-5)


def test_no_boundary_in_window_gives_inf():
  m = boundary.input_space_margins(lambda x: x[:, 0] + 10.0, np.zeros((2, 2)),
                                   np.ones(2), resolution=20)
  assert np.all(np.isinf(m))

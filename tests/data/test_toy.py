"""gs_jax.data.toy: the Δ+ / Δ− toy sets, rotations, two moons against scikit-learn, and the
coupled features and clusters of Theorem 2."""

import numpy as np
import pytest
from scipy.optimize import linprog

from gs_jax.data import toy


def _linearly_separable(x, y):
  # feasibility of y_i (w·x_i + b) >= 1 as a linear program
  a = -y[:, None] * np.concatenate([x, np.ones((len(x), 1))], axis=1)
  res = linprog(np.zeros(3), A_ub=a, b_ub=-np.ones(len(x)), bounds=[(None, None)] * 3)
  return res.status == 0


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_delta_plus_is_separable_with_horizontal_margin(seed):
  x, y = toy.two_moons(seed, 0.1)
  assert x.shape == (300, 2) and set(np.unique(y)) == {-1.0, 1.0}
  assert x[y > 0, 0].max() <= -0.1 + 1e-6
  assert x[y < 0, 0].min() >= 0.1 - 1e-6
  assert _linearly_separable(x, y)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_delta_minus_is_not_linearly_separable(seed):
  x, y = toy.two_moons(seed, -0.1)
  assert not _linearly_separable(x, y)


def test_deterministic_per_seed_and_rotation_is_an_isometry():
  a, ya = toy.two_moons(3, 0.1)
  b, yb = toy.two_moons(3, 0.1)
  c, _ = toy.two_moons(4, 0.1)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ya, yb)
  assert not np.allclose(a, c)
  r, yr = toy.two_moons(3, 0.1, rotation_deg=45)
  np.testing.assert_allclose(np.linalg.norm(r, axis=1), np.linalg.norm(a, axis=1), rtol=1e-5)
  # clockwise, as the released X ← X R with row vectors: (x1, x2) ↦ ((x1 + x2)/√2, (x2 − x1)/√2)
  np.testing.assert_allclose(r[:, 0], (a[:, 0] + a[:, 1]) / np.sqrt(2), atol=1e-5)
  np.testing.assert_allclose(r[:, 1], (a[:, 1] - a[:, 0]) / np.sqrt(2), atol=1e-5)
  stacked = toy.two_moons_seeds([0, 1], 0.1)
  assert stacked["x"].shape == (2, 300, 2) and stacked["y"].shape == (2, 300)


@pytest.mark.parametrize("n, noise", [(300, 0.1), (301, 0.1), (64, 0.0)])
def test_make_moons_equals_scikit_learn(n, noise):
  from sklearn.datasets import make_moons

  for seed in (0, 1, 17):
    x, y = toy.make_moons(n, noise, seed)
    xs, ys = make_moons(n_samples=n, noise=noise, random_state=seed)
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(y, ys)


def test_coupled_features_factorise_exactly():
  prob = toy.coupled_features((2.0, 5.0), 2.0, delta=0.5, m=4, seed=3)
  V = prob["V"]
  np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-14)
  for phi, S in zip(prob["phi"], prob["S"]):
    u, s, vt = np.linalg.svd(np.diag(prob["y"]) @ phi)
    np.testing.assert_allclose(s, np.sort(S)[::-1], rtol=1e-14)
    np.testing.assert_allclose(np.diag(prob["y"]) @ phi, prob["U"] @ np.diag(S) @ V.T, atol=1e-14)


def test_clusters_scale_only_the_first_cluster():
  xa, y = toy.clusters(1.0, n_per_cluster=5, angle_deg=60.0)
  xb, _ = toy.clusters(2.5, n_per_cluster=5, angle_deg=60.0)
  np.testing.assert_array_equal(y, np.ones(10))
  np.testing.assert_allclose(xb[:5], 2.5 * xa[:5], rtol=1e-15)
  np.testing.assert_array_equal(xb[5:], xa[5:])
  np.testing.assert_allclose(xa[5:].mean(0), [np.cos(np.pi / 3), np.sin(np.pi / 3)], atol=0.15)

"""Tests for gs_jax.ntk: our kernels vs explicit NTRF (and neural-tangents on the oldest stack),
features U,S,V, responses, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import models
from gs_jax.theory import ntk


# Every test here runs in 64-bit (the x64 fixture of conftest.py).
pytestmark = pytest.mark.usefixtures("x64")


def _mlp(width=16, n=11, seed=0):
  model = models.MLP(hidden=(width, width), kernel_init="torch")
  x = jax.random.normal(jax.random.PRNGKey(seed), (n, 3), jnp.float64)
  params = model.init(jax.random.PRNGKey(seed + 1), x)["params"]
  params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
  y = np.where(np.asarray(x[:, 0] + 0.3 * x[:, 1]) > 0, 1.0, -1.0)
  return (lambda p, xx: model.apply({"params": p}, xx)), params, x, y


@pytest.mark.parametrize("impl", ntk.IMPLEMENTATIONS)
def test_kernel_matches_explicit_ntrf(impl):
  f, params, x, _ = _mlp()
  phi = np.asarray(ntk.ntrf(f, params, x))
  flat, _ = jax.flatten_util.ravel_pytree(params)
  assert phi.shape == (x.shape[0], flat.size)
  # Blocks of 4 do not divide n = 11: exercises padding and the symmetric fill.
  K = ntk.empirical_ntk(f, params, x, implementation=impl, block_size=4)
  np.testing.assert_allclose(K, phi @ phi.T, rtol=1e-10, atol=1e-12)
  # Cross-kernel between different inputs.
  x2 = x[:5] * 1.7 + 0.2
  phi2 = np.asarray(ntk.ntrf(f, params, x2))
  K12 = ntk.empirical_ntk(f, params, x, x2, implementation=impl, block_size=3)
  np.testing.assert_allclose(K12, phi @ phi2.T, rtol=1e-10, atol=1e-12)


def test_two_implementations_agree():
  f, params, x, _ = _mlp(width=32, n=20)
  Kv = ntk.empirical_ntk(f, params, x, implementation="vector_products", block_size=8)
  Kj = ntk.empirical_ntk(f, params, x, implementation="jacobian_contraction")
  np.testing.assert_allclose(Kv, Kj, rtol=1e-10, atol=1e-12)


def test_ntrf_matches_finite_differences():
  f, params, x, _ = _mlp(width=4, n=3)
  phi = np.asarray(ntk.ntrf(f, params, x))
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  eps = 1e-6
  for j in (0, 7, flat.size - 1):
    e = jnp.zeros_like(flat).at[j].set(eps)
    fd = (f(unravel(flat + e), x) - f(unravel(flat - e), x)) / (2 * eps)
    np.testing.assert_allclose(phi[:, j], fd, rtol=1e-6, atol=1e-9)


def test_features_reproduce_yky_and_svd():
  f, params, x, y = _mlp()
  U, S = ntk.features(f, params, x, y)
  phi = np.asarray(ntk.ntrf(f, params, x))
  K = phi @ phi.T
  n = x.shape[0]
  assert U.dtype == np.float64 and S.dtype == np.float64
  np.testing.assert_allclose(U.T @ U, np.eye(n), atol=1e-10)
  np.testing.assert_allclose(
    U @ np.diag(S**2) @ U.T, np.diag(y) @ K @ np.diag(y), rtol=1e-9, atol=1e-10
  )
  assert np.all(np.diff(S) <= 1e-12) and np.all(S >= 0)
  assert np.all(U.sum(0) >= -1e-12)  # orientation convention
  # Independent route: singular values of YΦ0 from numpy's SVD.
  s_ref = np.linalg.svd(np.diag(y) @ phi, compute_uv=False)
  np.testing.assert_allclose(S, s_ref, rtol=1e-8)
  # {0,1} labels give the same features.
  U01, S01 = ntk.features(f, params, x, (y + 1) / 2, kernel=K)
  np.testing.assert_allclose(S01, S, rtol=1e-10)
  np.testing.assert_allclose(np.abs(U01.T @ U), np.eye(n), atol=1e-6)


def test_v_is_orthonormal_and_usv_is_yphi0():
  f, params, x, y = _mlp(width=8, n=6)
  U, S, V = ntk.features(f, params, x, y, return_v=True)
  phi = np.asarray(ntk.ntrf(f, params, x))
  V = np.asarray(V)
  assert V.shape == (phi.shape[1], x.shape[0])
  np.testing.assert_allclose(V.T @ V, np.eye(x.shape[0]), atol=1e-9)
  np.testing.assert_allclose(U @ np.diag(S) @ V.T, np.diag(y) @ phi, rtol=1e-9, atol=1e-10)


def test_responses_equal_s_vt_theta_in_linear_model():
  """For ŷ = Φ0 w (eq 3), z = U^T Y ŷ = S V^T w (eq 4)."""
  f, params, x, y = _mlp(width=8, n=6)
  U, S, V = ntk.features(f, params, x, y, return_v=True)
  phi = np.asarray(ntk.ntrf(f, params, x))
  w = np.random.default_rng(0).normal(size=phi.shape[1])
  logits0 = np.asarray(f(params, x))
  z = ntk.responses(U, y, logits0 + phi @ w, logits0)
  np.testing.assert_allclose(z, S * (np.asarray(V).T @ w), rtol=1e-9, atol=1e-10)
  # Leading axes are kept: (T, n) -> (T, k).
  zz = ntk.responses(U, y, np.stack([logits0, logits0 + phi @ w]), logits0)
  assert zz.shape == (2, x.shape[0])
  np.testing.assert_allclose(zz[0], 0.0, atol=1e-12)
  np.testing.assert_allclose(zz[1], z, rtol=1e-12)


def test_centred_network_and_ntk_param_model():
  model = models.NTKTwoLayerReLU(width=8192, bias_scale=1.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 2), jnp.float64)
  p0 = model.init(jax.random.PRNGKey(1), x)["params"]
  f = lambda p, xx: model.apply({"params": p}, xx)
  fc = ntk.centred(f, p0)
  np.testing.assert_allclose(fc(p0, x), 0.0, atol=1e-14)
  K = ntk.empirical_ntk(f, p0, x)
  np.testing.assert_allclose(ntk.empirical_ntk(fc, p0, x), K, rtol=1e-12)
  # Wide-network limit: the analytic NTK of the same architecture (independent derivation,
  # arc-cosine kernels of Cho & Saul 2009). With Σ1(x, x') = x·x'/d + β² and cos t =
  # Σ1(x, x')/√(Σ1(x, x)Σ1(x', x')): Θ = Σ1·(π − t)/(2π)  [first layer: E relu'·relu']
  # + √(Σ1(x, x)Σ1(x', x'))·(sin t + (π − t) cos t)/(2π)  [output layer: E relu·relu].
  # Error O(1/√width): ~1% at width 8192.
  xx = np.asarray(x)
  s1 = xx @ xx.T / xx.shape[1] + 1.0
  norms = np.sqrt(np.diag(s1))
  t = np.arccos(np.clip(s1 / np.outer(norms, norms), -1.0, 1.0))
  K_inf = s1 * (np.pi - t) / (2 * np.pi) + np.outer(norms, norms) * (
    np.sin(t) + (np.pi - t) * np.cos(t)
  ) / (2 * np.pi)
  rel = np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf)
  assert rel < 0.05, rel
  ridge = ntk.ridge_from_init(jax.tree_util.tree_map(lambda a: a + 1.0, p0), p0, 0.5)
  n_params = sum(a.size for a in jax.tree_util.tree_leaves(p0))
  np.testing.assert_allclose(ridge, 0.25 * n_params)


def test_bad_input_errors():
  f, params, x, y = _mlp(width=4, n=5)
  with pytest.raises(ValueError, match="backend must be"):
    ntk.empirical_ntk(f, params, x, backend="magic")
  with pytest.raises(ValueError, match="STRUCTURED_DERIVATIVES"):
    ntk.empirical_ntk(f, params, x, implementation="structured_derivatives")
  with pytest.raises(ValueError, match="implementation must be"):
    ntk.empirical_ntk(f, params, x, implementation="magic")
  with pytest.raises(ValueError, match="non-finite"):
    ntk.empirical_ntk(f, params, x.at[0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="per-example shape"):
    ntk.empirical_ntk(f, params, x, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="one logit per example"):
    ntk.empirical_ntk(lambda p, xx: jnp.stack([f(p, xx)] * 2, 1), params, x)
  with pytest.raises(ValueError, match="binary labels"):
    ntk.features(f, params, x, np.array([0, 1, 2, 1, 0]))
  with pytest.raises(ValueError, match="shape"):
    ntk.features(f, params, x, y[:3])
  with pytest.raises(ValueError, match="square"):
    ntk.features_from_kernel(np.ones((5, 4)), y)
  with pytest.raises(ValueError, match="k must be"):
    ntk.features(f, params, x, y, k=0)
  U, S = ntk.features(f, params, x, y)
  with pytest.raises(ValueError, match="no direction"):
    ntk.feature_directions(f, params, x, y, U, np.r_[S[:-1], 0.0])
  with pytest.raises(ValueError, match="logits must end"):
    ntk.responses(U, y, np.zeros(4))
  with pytest.raises(ValueError, match="non-finite"):
    ntk.responses(U, y, np.full(5, np.nan))

"""Tests for gs_jax.dual against closed forms, finite differences, scipy and the primal problem."""

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.special

from gs_jax.base._compat import enable_x64
from gs_jax.theory import dual

# Closed forms eq 12 / eq 13 against the Newton fixed point (see the tests below).
CLOSED_FORM_RTOL = 5e-13
LAMS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
EPS = np.finfo(np.float64).eps


def _orthogonal(rng, n, k=None):
  q, r = np.linalg.qr(rng.normal(size=(n, n)))
  q = q * np.sign(np.diag(r))
  return q if k is None else q[:, :k]


def _rel(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# Round-off bounds for the residual of a float64 α (derivation: dual.SolverInfo), computed from
# each problem's own α, U, S, λ, so they hold whatever the BLAS summation order or FMA use.


def _h_prime(alpha, dynamics):
  return -np.log(alpha) - alpha if dynamics == "taylor" else np.log1p(-alpha) - np.log(alpha)


def _term_sizes(U, S, lam, alpha, dynamics):
  """w_i = 1 + |h'(α_i)| + Σ_j |Q_ij| α_j/λ (Q/λ → I/λ under SD): SolverInfo.residual's scale."""
  q = alpha / lam if dynamics == "sd" else np.abs((U * S**2) @ U.T) @ alpha / lam
  return 1.0 + np.abs(_h_prime(alpha, dynamics)) + q


def _solver_floor(alpha, w, dynamics):
  """ε(2n + 20 + 12 max_i ρ_i/w_i), ρ_i = α_i|h''(α_i)|: the floor of SolverInfo.residual."""
  rho = 1.0 + alpha if dynamics == "taylor" else 1.0 / (1.0 - alpha)
  return EPS * (2 * alpha.size + 20 + 12 * np.max(rho / w))


def _data_rounding_bound(U, S, lam, alpha, w, dynamics):
  """Per-equation bound on |F_i|/w_i that F evaluated from U, S adds to the solver's floor.

  The solver works with M = fl(U S² U^T/λ), off from Q/λ by ≤ γ_{k+3}|U|S²|U|^T/λ (products,
  the division, the symmetrisation); its own evaluation of F rounds by ≤ (γ_n + 2ε) w_i. With
  P = |U| S² |U|^T (I under SD), |F_i(α)|/w_i with the exact Q exceeds the solver's residual by
  ≤ (n/2 + 2)ε + (k + 3)ε/2 · (Pα)_i/(λ w_i); this returns twice that, rounded up.
  """
  n, k = U.shape
  p = alpha / lam if dynamics == "sd" else np.abs(U) @ (S**2 * (np.abs(U).T @ alpha)) / lam
  return (n + k + 6) * EPS * (1.0 + p / w)


def _field_high_precision(U, S, lam, alpha, dynamics, digits=40):
  """F(α) of eq 9 / 10 / 18 in 40-digit decimal arithmetic from the float64 U, S, λ, α.

  Qα/λ is evaluated as U(S²(U^T α))/λ (O(nk) operations); conversion from float64 is exact,
  so the only rounding is ~1e-40 relative: F's value at the returned α, exact for our purpose.
  """
  n, k = U.shape
  with decimal.localcontext() as ctx:
    ctx.prec = digits
    dec = lambda x: decimal.Decimal(float(x))  # pylint: disable=unnecessary-lambda-assignment
    a = [dec(x) for x in alpha]
    if dynamics == "sd":
      qa = [x / dec(lam) for x in a]
    else:
      u = [[dec(x) for x in row] for row in U]
      c = [dec(S[l]) ** 2 * sum(u[j][l] * a[j] for j in range(n)) for l in range(k)]
      qa = [sum(u[i][l] * c[l] for l in range(k)) / dec(lam) for i in range(n)]
    h = [-x.ln() - x if dynamics == "taylor" else ((1 - x) / x).ln() for x in a]
    return np.array([float(hi - qi) for hi, qi in zip(h, qa)])


# ---------------------------------------------------------------------------------------------
# Lambert W and closed forms


def test_lambertw_matches_scipy():
  x = np.concatenate(
    [-1 / np.e + np.logspace(-6, -1, 6), np.linspace(-0.3, 3, 34), np.logspace(0.5, 12, 30)]
  )
  w = dual.lambertw(x)
  ref = scipy.special.lambertw(x).real
  mask = x > -1 / np.e + 1e-4  # W is sqrt-like at the branch point: x's rounding dominates
  assert _rel(w[mask], ref[mask]) < 1e-13
  assert _rel(w[~mask], ref[~mask]) < 1e-7
  assert np.all(w * np.exp(w) - x < 1e-12 * np.maximum(1, np.abs(x)))


def test_lambertw_derivative():
  with enable_x64():
    x = jnp.array([0.5, 1.0, 10.0, 1e4])
    g = jax.vmap(jax.grad(dual.lambertw))(x)
    w = scipy.special.lambertw(np.asarray(x)).real
    np.testing.assert_allclose(g, w / (np.asarray(x) * (1 + w)), rtol=1e-12)


@pytest.mark.parametrize("lam", LAMS)
def test_fixed_point_matches_eq12_equal_strengths(lam):
  rng = np.random.default_rng(int(lam * 1e4) + 1)
  for n in (1, 3, 8):
    U = _orthogonal(rng, n)
    s = rng.uniform(0.1, 5.0)
    alpha_cf, z_cf = dual.fixed_point_equal_strengths(U, s, lam)
    alpha, info = dual.fixed_point(U, np.full(n, s), lam, return_info=True)
    # Measured (x86-64, newest stack): ≤ 5.9e-15 over LAMS for α and z, eq 12 and eq 13.
    # CLOSED_FORM_RTOL leaves ~85× for other processors' round-off.
    assert _rel(alpha, alpha_cf) < CLOSED_FORM_RTOL
    z = dual.responses_at(U, np.full(n, s), lam, alpha)
    assert np.max(np.abs(z - z_cf)) < CLOSED_FORM_RTOL * np.max(np.abs(z_cf))
    assert info.residual < 1e-12 and info.converged


@pytest.mark.parametrize("lam", LAMS)
def test_fixed_point_matches_eq13_uncoupled(lam):
  rng = np.random.default_rng(int(lam * 1e4) + 2)
  n = 7
  S = rng.uniform(0.0, 6.0, n)
  alpha_cf, z_cf = dual.fixed_point_uncoupled(S, lam)
  # Identity, and a permutation (the features are then the examples in another order).
  perm = rng.permutation(n)
  P = np.eye(n)[:, perm]
  for U, order in ((np.eye(n), np.arange(n)), (P, perm)):
    alpha, info = dual.fixed_point(U, S, lam, return_info=True)
    assert _rel(alpha[order], alpha_cf) < CLOSED_FORM_RTOL
    assert _rel(dual.responses_at(U, S, lam, alpha), z_cf) < CLOSED_FORM_RTOL
    assert info.residual < 1e-12


def test_eq13_is_a_fixed_point_of_eq10():
  S, lam = np.array([0.0, 0.5, 2.0, 30.0]), 0.01
  alpha, _ = dual.fixed_point_uncoupled(S, lam)
  np.testing.assert_allclose(-np.log(alpha), alpha * (S**2 + lam) / lam, rtol=1e-13)


@pytest.mark.parametrize("dynamics", dual.DYNAMICS)
def test_residual_below_1e12_on_random_problems(dynamics):
  rng = np.random.default_rng(3)
  for lam in LAMS:
    for n, k in ((2, 2), (10, 10), (30, 12), (60, 60)):
      U = _orthogonal(rng, n, k)
      S = rng.uniform(0, 4, k)
      alpha, info = dual.fixed_point(U, S, lam, dynamics=dynamics, return_info=True)
      assert np.all(alpha > 0) and (dynamics == "taylor" or np.all(alpha < 1))
      # The solver stops at the default tol = 1e-14 or stalls at its round-off floor
      # ε(2n + 20 + 12 max ρ/w) (dual.SolverInfo), ≤ 5e-14 for n ≤ 60 while every α_i ≤ 0.95:
      # the docs' promise < 1e-12 holds with a 20× margin, whatever the CPU.
      w = _term_sizes(U, S, lam, alpha, dynamics)
      res_max = max(1e-14, _solver_floor(alpha, w, dynamics))
      assert info.converged and info.residual <= res_max < 1e-12, (lam, n, k, res_max, info)
      # The relative residual recomputed here from eq 9/10/18 evaluates Qα/λ from U and S, not
      # from the solver's rounded Q/λ: it may exceed the solver's by the rounding of Q/λ and of
      # both evaluations (twice _data_rounding_bound, which covers one of them).
      F = dual.vector_field(U, S, lam, alpha, dynamics)
      assert np.all(
        np.abs(F) / w <= res_max + 2 * _data_rounding_bound(U, S, lam, alpha, w, dynamics)
      ), (lam, n, k)


@pytest.mark.parametrize("dynamics", ["exact", "taylor"])
def test_hard_regime_lambda_1e4_residual_is_roundoff(dynamics):
  # λ = 1e-4: Q/λ has entries ~1e5 that cancel in Qα/λ down to O(10), the regime where the
  # solver used to stop at 2e-11 (its Armijo test could not see ψ's increase through ψ's own
  # round-off). tol = 0 runs Newton until it stalls, so `converged` certifies res ≤ the floor.
  rng = np.random.default_rng(11)
  for n, k in ((30, 12), (45, 3), (60, 60), (90, 40), (120, 119)):
    U = _orthogonal(rng, n, k)
    S = rng.uniform(0, 4, k)
    lam = 1e-4
    alpha, info = dual.fixed_point(U, S, lam, dynamics=dynamics, tol=0.0, return_info=True)
    w = _term_sizes(U, S, lam, alpha, dynamics)
    floor = _solver_floor(alpha, w, dynamics)
    assert info.converged and info.residual <= floor < 1e-12, (n, k, floor, info)
    # Independent check: F at the returned α in 40-digit arithmetic. Its residual is bounded
    # by round-off alone (floor + the rounding of Q/λ and of F's evaluation, per equation), so
    # what remains is round-off of the float64 evaluation, not an unsolved equation.
    exact_rel = np.abs(_field_high_precision(U, S, lam, alpha, dynamics)) / w
    assert np.all(exact_rel <= floor + _data_rounding_bound(U, S, lam, alpha, w, dynamics)), (
      n,
      k,
      float(np.max(exact_rel)),
      floor,
    )


# ---------------------------------------------------------------------------------------------
# Lemma 1 and Theorem 2


def test_lemma1_error_is_second_order_in_delta():
  S, lam = np.array([3.0, 2.0]), 0.01
  deltas = np.array([0.02, 0.01, 0.005, 0.0025])
  errs = []
  for d in deltas:
    U = dual.coupling_matrix(d)
    exact = dual.fixed_point(U, S, lam)
    errs.append(np.max(np.abs(dual.lemma1(U, S, lam) - exact)))
  ratios = np.array(errs[:-1]) / np.array(errs[1:])
  assert np.all((ratios > 3.5) & (ratios < 4.5)), (errs, ratios)

  # n-dimensional: U = expm(δK) for a random skew-symmetric K.
  rng = np.random.default_rng(4)
  K = rng.normal(size=(6, 6))
  K = K - K.T
  S = rng.uniform(0.5, 3, 6)
  errs = []
  for d in deltas:
    U = scipy.linalg.expm(d * K)
    errs.append(np.max(np.abs(dual.lemma1(U, S, lam) - dual.fixed_point(U, S, lam))))
  ratios = np.array(errs[:-1]) / np.array(errs[1:])
  assert np.all((ratios > 3.5) & (ratios < 4.5)), (errs, ratios)


def test_coupling_matrix_eq15():
  U = dual.coupling_matrix(0.5)
  np.testing.assert_allclose(U, [[np.sqrt(0.75), -0.5], [0.5, np.sqrt(0.75)]])
  np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-15)
  with pytest.raises(ValueError, match="delta"):
    dual.coupling_matrix(1.5)


@pytest.mark.parametrize("dynamics", ["taylor", "exact"])
def test_starvation_matches_central_finite_differences(dynamics):
  rng = np.random.default_rng(5)
  for trial in range(3):
    n = 5
    U = _orthogonal(rng, n)
    S = rng.uniform(0.5, 3.0, n)
    lam = float(10 ** rng.uniform(-2, 0))
    M = dual.starvation(U, S, lam, dynamics=dynamics)

    def z_of(s2):
      alpha = dual.fixed_point(U, np.sqrt(s2), lam, dynamics=dynamics)
      return dual.responses_at(U, np.sqrt(s2), lam, alpha, dynamics)

    s2 = S**2
    fd = np.zeros((n, n))
    for i in range(n):
      h = 1e-4 * s2[i]
      e = np.zeros(n)
      e[i] = h
      fd[i] = (z_of(s2 + e) - z_of(s2 - e)) / (2 * h)
    rel = np.max(np.abs(M - fd)) / np.max(np.abs(fd))
    # Measured: ≤ 2.8e-9 (the O(h²) truncation of the central difference, h = 1e-4·s²).
    assert rel < 1e-7, (trial, rel)


def test_implicit_gradients_wrt_U_and_lambda():
  rng = np.random.default_rng(6)
  U = _orthogonal(rng, 5)
  S = rng.uniform(0.5, 3.0, 5)
  lam = 0.05
  V = rng.normal(size=(5, 5))
  with enable_x64():
    for dynamics in dual.DYNAMICS:
      f = lambda U_, lam_, dyn=dynamics: jnp.sum(
        jnp.sin(dual.fixed_point(U_, S, lam_, dynamics=dyn, orth_tol=np.inf))
      )
      gU, glam = jax.grad(f, argnums=(0, 1))(jnp.asarray(U), lam)
      h = 1e-6
      fd_U = (f(U + h * V, lam) - f(U - h * V, lam)) / (2 * h)
      fd_lam = (f(U, lam + h * lam) - f(U, lam - h * lam)) / (2 * h * lam)
      # Measured: ≤ 4.8e-10 relative (round-off of the h = 1e-6 difference): 5e-8 leaves
      # ~100× for other processors.
      assert abs(float(jnp.sum(gU * V)) - fd_U) < 5e-8 * max(abs(fd_U), 1e-3), dynamics
      assert abs(float(glam) - fd_lam) < 5e-8 * abs(fd_lam), dynamics
      # Forward and reverse mode agree (custom_jvp is transposed for reverse mode).
      g = lambda s, dyn=dynamics: dual.fixed_point(U, s, lam, dynamics=dyn)
      jf = jax.jacfwd(g)(jnp.asarray(S))
      jr = jax.jacrev(g)(jnp.asarray(S))
      np.testing.assert_allclose(jf, jr, rtol=1e-10, atol=1e-14)


def test_theorem2_feature1_starves_feature2():
  # dz2*/d(s1²) < 0 for U(δ), δ ∈ (0, 0.5], s1² > s2² (Theorem 2, Taylor dynamics eq 10).
  for lam in (1e-3, 1e-2, 1e-1, 1.0):
    for delta in np.linspace(0.05, 0.5, 10):
      U = dual.coupling_matrix(delta)
      for s1 in (2.05, 3.0, 6.0):
        M = dual.starvation(U, np.array([s1, 2.0]), lam)
        assert M[0, 1] < 0, (lam, delta, s1, M)
        # The exact dynamics eq 9 show the same sign.
        assert dual.starvation(U, np.array([s1, 2.0]), lam, dynamics="exact")[0, 1] < 0


def test_spectral_decoupling_removes_starvation():
  rng = np.random.default_rng(7)
  for n in (2, 5, 12):
    U = _orthogonal(rng, n)
    S = rng.uniform(0.5, 5.0, n)
    for lam in (1e-3, 0.1, 10.0):
      M = dual.starvation(U, S, lam, dynamics="sd")
      off = M - np.diag(np.diag(M))
      assert np.max(np.abs(off)) < 1e-10
      # z* = U^T α*/λ does not depend on S at all: the diagonal vanishes too.
      assert np.max(np.abs(M)) < 1e-10
      # While the weight-decay dynamics couple the features.
      assert (
        np.max(np.abs(dual.starvation(U, S, lam) - np.diag(np.diag(dual.starvation(U, S, lam)))))
        > 1e-8
      )


def test_sd_fixed_point_solves_eq18_scalar_equation():
  for lam in LAMS:
    a = dual.fixed_point(np.eye(3), np.ones(3), lam, dynamics="sd")
    ref = scipy.optimize.brentq(
      lambda x: np.log((1 - x) / x) - x / lam, 1e-300, 1 - 1e-16, xtol=1e-300, rtol=1e-15
    )
    assert _rel(a, np.full(3, ref)) < 1e-12


# ---------------------------------------------------------------------------------------------
# Independent checks: dual problem eq 8 with scipy, primal problems eq 5 / eq 17


def _eq8_optimum(U, S, lam):
  """argmax_α Σ H(α) − α^T U S² U^T α/(2λ), by L-BFGS-B over logit α (written from eq 8)."""
  Q = (U * S**2) @ U.T

  def neg(u):
    a = scipy.special.expit(u)
    H = -(a * np.log(a) + (1 - a) * np.log1p(-a))
    val = -(H.sum() - a @ Q @ a / (2 * lam))
    grad_a = -(np.log((1 - a) / a) - Q @ a / lam)
    return val, grad_a * a * (1 - a)

  res = scipy.optimize.minimize(
    neg,
    np.zeros(U.shape[0]),
    jac=True,
    method="L-BFGS-B",
    options=dict(ftol=1e-15, gtol=1e-13, maxiter=10_000),
  )
  return scipy.special.expit(res.x)


def test_exact_fixed_point_is_the_dual_optimum_of_eq8():
  rng = np.random.default_rng(8)
  for lam in (0.01, 0.3, 3.0):
    U = _orthogonal(rng, 6)
    S = rng.uniform(0.2, 2.0, 6)
    alpha = dual.fixed_point(U, S, lam, dynamics="exact")
    # eq 9 stationarity, written out here.
    Q = (U * S**2) @ U.T
    assert np.max(np.abs(np.log((1 - alpha) / alpha) - Q @ alpha / lam)) < 1e-12
    ref = _eq8_optimum(U, S, lam)
    # L-BFGS-B stops where its own rule says (it changed with scipy's Fortran → C port):
    # measured 2.4e-8 with scipy 1.17.1; 1e-6 leaves 40×. The fixed point itself satisfies
    # eq 9 to 1e-12 (above), so the gap is scipy's.
    assert _rel(alpha, ref) < 1e-6
    assert dual.dual_objective(U, S, lam, alpha) >= dual.dual_objective(U, S, lam, ref) - 1e-12


def _primal_responses(U, S, lam, sd):
  """z = S V^T θ at the minimiser of eq 5 (sd=False) or eq 17 (sd=True), by BFGS on θ."""
  n, k = U.shape
  rng = np.random.default_rng(0)
  m = k + 3
  V = _orthogonal(rng, m, k)
  y = np.array([1.0, -1.0] * n)[:n]
  Phi = np.diag(y) @ U @ np.diag(S) @ V.T  # Y Φ0 = U S V^T

  def loss(theta):
    f = Phi @ theta
    m_ = -y * f
    val = np.logaddexp(0, m_).sum()
    g = Phi.T @ (-y * scipy.special.expit(m_))
    if sd:
      return val + lam / 2 * f @ f, g + lam * Phi.T @ f
    return val + lam / 2 * theta @ theta, g + lam * theta

  res = scipy.optimize.minimize(
    loss, np.zeros(m), jac=True, method="BFGS", options=dict(gtol=1e-12, maxiter=10_000)
  )
  return S * (V.T @ res.x)


@pytest.mark.parametrize("sd", [False, True])
def test_fixed_point_responses_match_the_primal_optimum(sd):
  rng = np.random.default_rng(9)
  U = _orthogonal(rng, 4)
  S = rng.uniform(0.5, 3.0, 4)
  lam = 0.1
  dyn = "sd" if sd else "exact"
  z = dual.responses_at(U, S, lam, dual.fixed_point(U, S, lam, dynamics=dyn), dyn)
  assert _rel(z, _primal_responses(U, S, lam, sd)) < 1e-6


@pytest.mark.parametrize("dynamics", dual.DYNAMICS)
def test_integrate_converges_to_fixed_point(dynamics):
  rng = np.random.default_rng(10)
  U = _orthogonal(rng, 4)
  S = rng.uniform(0.5, 2.0, 4)
  lam = 0.1
  t = np.linspace(0.0, 60.0, 7)
  traj = dual.integrate(U, S, lam, 0.5, t, dynamics=dynamics, eta=1.0)
  alpha = dual.fixed_point(U, S, lam, dynamics=dynamics)
  assert traj.alpha.shape == (7, 4) and traj.z.shape == (7, 4)
  np.testing.assert_allclose(traj.alpha[0], 0.5)
  assert _rel(traj.alpha[-1], alpha) < 1e-6
  assert _rel(traj.z[-1], dual.responses_at(U, S, lam, alpha, dynamics)) < 1e-6
  # The dual objective increases along the flow (it is a gradient flow of ψ).
  psi = [dual.dual_objective(U, S, lam, a, dynamics) for a in traj.alpha]
  assert np.all(np.diff(psi) > -1e-12)


def test_integrate_eta_rescales_time():
  rng = np.random.default_rng(10)
  U, S, lam = _orthogonal(rng, 4), rng.uniform(0.5, 2.0, 4), 0.1
  t = np.linspace(0.0, 0.6, 7)
  a1 = dual.integrate(U, S, lam, 0.3, t, eta=1.0).alpha
  a2 = dual.integrate(U, S, lam, 0.3, t / 2, eta=2.0).alpha
  assert _rel(a2, a1) < 1e-6


# ---------------------------------------------------------------------------------------------
# Precision handling, tracing and bad input


def test_returns_float64_numpy_without_touching_the_global_flag():
  assert not jax.config.jax_enable_x64
  alpha = dual.fixed_point(np.eye(2, dtype=np.float32), np.array([1.0, 2.0], np.float32), 0.1)
  assert isinstance(alpha, np.ndarray) and alpha.dtype == np.float64
  assert not jax.config.jax_enable_x64


def test_tracing_with_x64_off_is_a_clear_error_and_works_with_x64_on():
  U, S = dual.coupling_matrix(0.2), np.array([2.0, 1.0])
  with pytest.raises(ValueError, match="float64"):
    jax.jit(lambda s: dual.fixed_point(U, s, 0.1))(S)
  with enable_x64():
    a = jax.jit(lambda s: dual.fixed_point(U, s, 0.1))(jnp.asarray(S))
    b = jax.vmap(lambda l: dual.fixed_point(U, S, l))(jnp.array([0.1, 1.0]))
    assert a.dtype == jnp.float64
  np.testing.assert_allclose(a, dual.fixed_point(U, S, 0.1), rtol=1e-14)
  np.testing.assert_allclose(b[1], dual.fixed_point(U, S, 1.0), rtol=1e-14)


@pytest.mark.parametrize("lam", [0.0, -1.0, np.nan, np.inf])
def test_bad_lambda(lam):
  with pytest.raises(ValueError, match="lam"):
    dual.fixed_point(np.eye(2), np.ones(2), lam)


def test_bad_inputs():
  U, S = np.eye(3), np.ones(3)
  with pytest.raises(ValueError, match="non-finite"):
    dual.fixed_point(np.where(np.eye(3) > 0, np.nan, 0.0), S, 0.1)
  with pytest.raises(ValueError, match="non-finite"):
    dual.fixed_point(U, np.array([1.0, np.inf, 1.0]), 0.1)
  with pytest.raises(ValueError, match="orthonormal"):
    dual.fixed_point(U * 1.01, S, 0.1)
  with pytest.raises(ValueError, match="orthonormal"):
    dual.starvation(U + 1e-3, S, 0.1)
  with pytest.raises(ValueError, match="shape"):
    dual.fixed_point(U, np.ones(2), 0.1)
  with pytest.raises(ValueError, match=">= 0"):
    dual.fixed_point(U, np.array([1.0, -0.5, 1.0]), 0.1)
  with pytest.raises(ValueError, match="k <= n"):
    dual.fixed_point(np.eye(3)[:2], S, 0.1)
  with pytest.raises(ValueError, match="2-D"):
    dual.fixed_point(np.ones(3), S, 0.1)
  with pytest.raises(ValueError, match="dynamics"):
    dual.fixed_point(U, S, 0.1, dynamics="adam")
  with pytest.raises(ValueError, match="alpha"):
    dual.responses_at(U, S, 0.1, np.ones(2))
  with pytest.raises(ValueError, match="alpha0"):
    dual.integrate(U, S, 0.1, 1.5, np.array([0.0, 1.0]), dynamics="exact")
  with pytest.raises(ValueError, match="increasing"):
    dual.integrate(U, S, 0.1, 0.5, np.array([1.0, 0.0]))
  # Orthonormal columns within the stated tolerance are accepted; rectangular U is fine.
  dual.fixed_point(U + 1e-7, S, 0.1)
  dual.fixed_point(_orthogonal(np.random.default_rng(0), 5, 3), S, 0.1)

"""Dual dynamics of gradient starvation: fixed points, closed forms, Lemma 1, Theorem 2.

Notation (docs/protocols.md §1). ``YΦ0 = U S V^T`` with ``U`` (n×k) having orthonormal columns
(k ≤ n) and strengths ``S = (s_1, …, s_k) ≥ 0``; ``λ > 0`` is the ridge coefficient of eq 5 /
eq 17 (the paper's *sum* loss with ``λ/2``; a training loss ``mean softplus + (wd/2)‖θ‖²``
over n examples corresponds to ``λ = n·wd``, and ``mean softplus + sd_lambda·mean(ŷ²)`` to
``λ = 2·sd_lambda``, see :mod:`gs_jax.losses`). Write ``Q = U S² U^T`` (n×n).

The three dynamics, all of the form ``α̇ = η F(α)`` with ``F = ∇ψ`` the gradient of a
strictly concave function ``ψ``:

* ``"exact"`` (eq 9):   ``F(α) = log((1−α)/α) − Qα/λ``,
  ``ψ(α) = Σ H(α_i) − α^T Q α/(2λ)`` — the dual problem eq 8, domain ``(0,1)^n``;
* ``"taylor"`` (eq 10): ``F(α) = −log α − Aα`` with ``A = Q/λ + I``,
  ``ψ(α) = Σ α_i(1 − log α_i) − α^T A α/2``, domain ``α > 0`` (Theorem 1);
* ``"sd"`` (eq 18):     ``F(α) = log((1−α)/α) − α/λ`` (no U, no S), domain ``(0,1)^n``.

The responses at a dual point (eq 11) are ``z = S² U^T α/λ`` (``"taylor"``, ``"exact"``) and
``z = U^T α/λ`` under spectral decoupling.

:func:`fixed_point` maximises ψ by a damped Newton method (Cholesky of the n×n negative
Hessian, steps taken in log / logit coordinates to stay inside the domain, Armijo
back-tracking on ψ) in float64, and
is differentiable with respect to ``U``, ``S`` and ``λ`` through the implicit-function theorem
(a ``custom_jvp``: ``α̇ = (−∂F/∂α)^{-1} ∂F/∂θ·θ̇``), never by unrolling the iterations, so
``jax.grad``/``jax.jacfwd``/``jax.jacrev`` all work. :func:`starvation` uses it to get every
``dz_j*/d(s_i²)`` (Def. 2) at once.

Precision. Everything here runs in float64. Called with concrete arrays while x64 is off,
each public function enables it for its own scope (``gs_jax._compat.enable_x64``) and
returns NumPy float64 arrays; with x64 on (``jax.config.update("jax_enable_x64", True)``) they
return jax arrays and can be traced (jit, grad, vmap). Tracing them with x64 off is a
``ValueError``: float32 is too coarse for these problems.

Usage::

    from gs_jax.theory import dual
    alpha = dual.fixed_point(U, S, lam)               # eq 10, Theorem 1
    z = dual.responses_at(U, S, lam, alpha)           # eq 11
    M = dual.starvation(U, S, lam)                    # M[i, j] = dz_j*/d(s_i²)
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, NamedTuple, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import _compat
from gs_jax.base.types import Array, ArrayLike, HostOrDeviceArray

enable_x64 = _compat.enable_x64

Dynamics = Literal["taylor", "exact", "sd"]
DYNAMICS = ("taylor", "exact", "sd")

# Largest allowed entry of |U^T U − I| (U from a float32 eigh of an NTK Gram matrix is
# orthonormal to ~1e-6; anything much worse is not an orthonormal basis).
ORTHO_TOL = 1e-5
# Relative residual below which Newton steps may reuse the last Cholesky factor (chord steps).
_CHORD_BELOW = 1e-4
_P = ParamSpec("_P")
_R = TypeVar("_R")


class SolverInfo(NamedTuple):
  """Diagnostics of :func:`fixed_point`.

  Attributes:
    num_steps: iterations taken (Newton steps plus chord steps).
    num_factorizations: Cholesky factorizations of the n×n Hessian (= Newton steps).
    residual: ``max_i |F_i(α)|/w_i``, ``w_i = 1 + |h'(α_i)| + Σ_j |Q_ij| α_j/λ``, at the
      returned point, with ``F = h'(α) − Qα/λ`` (module docstring; under SD ``Q/λ → I/λ``):
      the error of each equation relative to the size of its terms, so that its float64
      round-off floor (below) does not grow with the scale of ``Q/λ``. Measured: ≤ 1.5e-16 on
      random problems with n ≤ 120 and λ from 1e-6 to 1 (``tol=0``).
    abs_residual: ``max_i |F_i(α)|``.
    converged: ``residual <= tol``, or the solver stopped at the round-off floor: a Newton
      step no longer lowered the residual (the iteration ends there once it is ≤ 1e-9) and
      the residual is ≤ the floor. Stopping above the floor gives ``False``.

  Round-off floor (ε = 2^-52, γ_n = nε/2 the bound on the rounding of an n-term dot product in
  any summation order, ``ρ_i = α_i|h''(α_i)|`` = ``1/(1−α_i)`` (eq 9, 18) or ``1 + α_i``
  (eq 10)): (i) evaluating ``F_i`` rounds by ≤ (γ_n + 2ε)·w_i (``Qα/λ``: γ_n Σ_j |Q_ij| α_j/λ;
  the two logarithms and the subtractions: 2ε·w_i); (ii) a float64 α is ≤ ε/2 (relative) from
  the root, and each Newton point is rounded by a few ε, worth ≤ 6ε(ρ_i + w_i) of ``F_i``; (iii) a
  Newton step computed from the rounded F lands, to first order, where F is minus that
  rounding (the Cholesky error only contracts the residual, by ~γ_n·cond per step). The
  residual the solver sees at its last point is thus ≤ (i) + (i) + (ii), and twice that,
  ``ε·(2n + 20 + 12·max_i ρ_i/w_i)``, is the floor used for ``converged``: < 1e-12 for
  n ≤ 2000 while every α_i ≤ 0.9 (``ρ_i/w_i`` ≤ 10/3.2; ≤ 2 for α_i ≤ 1/2).
  """

  num_steps: Any
  num_factorizations: Any
  residual: Any
  abs_residual: Any
  converged: Any


class Trajectory(NamedTuple):
  """Output of :func:`integrate`: ``alpha[i]`` and ``z[i]`` at time ``t[i]``."""

  t: Any
  alpha: Any
  z: Any


# ---------------------------------------------------------------------------------------------
# float64 scope and input checks


def _x64_enabled() -> bool:
  return jax.dtypes.canonicalize_dtype(np.float64) == np.dtype(np.float64)


def _is_tracer(x) -> bool:
  return _compat.is_tracer(x)


def _float64_scope(fn: Callable[_P, _R]) -> Callable[_P, _R]:
  """Runs ``fn`` with x64 on; see "Precision" in the module docstring."""

  @functools.wraps(fn)
  def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
    if _x64_enabled():
      return fn(*args, **kwargs)
    if any(_is_tracer(leaf) for leaf in jax.tree_util.tree_leaves((args, kwargs))):
      raise ValueError(
        f"gs_jax.dual.{fn.__name__} needs float64 but was traced with x64 disabled; call it "
        "on concrete arrays, or enable x64 (jax.config.update('jax_enable_x64', True) or "
        "`with gs_jax._compat.enable_x64():`) around the traced code"
      )
    with enable_x64():
      out = fn(*args, **kwargs)
      return jax.tree_util.tree_map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, out)

  return wrapper


def _f64(x) -> Array:
  return jnp.asarray(x, jnp.float64)


def _check_dynamics(dynamics):
  if dynamics not in DYNAMICS:
    raise ValueError(f"dynamics must be one of {DYNAMICS}; got {dynamics!r}")


def _check_finite(name, x):
  if not _is_tracer(x) and not np.all(np.isfinite(np.asarray(x))):
    raise ValueError(f"{name} has non-finite entries (NaN or inf)")


def _check_lam(lam) -> jax.Array:
  if jnp.ndim(lam) != 0:
    raise ValueError(f"lam must be a scalar; got shape {jnp.shape(lam)}")
  if not _is_tracer(lam):
    lam_v = float(np.asarray(lam))
    if not np.isfinite(lam_v) or lam_v <= 0:
      raise ValueError(f"lam must be a finite number > 0; got {lam_v}")
  return _f64(lam)


def _check_problem(U, S, lam, orth_tol=ORTHO_TOL) -> tuple[Array, Array, Array]:
  """Validates (U, S, λ) and returns them as float64 arrays. See :func:`fixed_point`."""
  if jnp.ndim(U) != 2:
    raise ValueError(f"U must be a 2-D (n, k) array; got shape {jnp.shape(U)}")
  n, k = jnp.shape(U)
  if n == 0 or k == 0:
    raise ValueError(f"U must be non-empty; got shape {(n, k)}")
  if k > n:
    raise ValueError(f"U must be (n, k) with k <= n (orthonormal columns); got shape {(n, k)}")
  if jnp.shape(S) != (k,):
    raise ValueError(f"S must have shape ({k},) to match U of shape {(n, k)}; got {jnp.shape(S)}")
  # Value checks on concrete inputs only (NumPy, before any jax op can turn them into tracers).
  _check_finite("U", U)
  _check_finite("S", S)
  lam = _check_lam(lam)
  if not _is_tracer(S) and np.any(np.asarray(S) < 0):
    raise ValueError(f"S (singular values) must be >= 0; got min {float(np.min(S))}")
  if orth_tol is not None and not _is_tracer(U):
    u = np.asarray(U, np.float64)
    err = float(np.max(np.abs(u.T @ u - np.eye(k))))
    if err > orth_tol:
      raise ValueError(
        f"U must have orthonormal columns: max |U^T U - I| = {err:.2e} > orth_tol = {orth_tol:.1e}"
      )
  return _f64(U), _f64(S), lam


# ---------------------------------------------------------------------------------------------
# Lambert W (principal branch), eq 12 and eq 13


def _lambertw_newton(x):
  """W_0(x) for real x >= −1/e by Halley's method (float64: 30 iterations are plenty)."""
  x = jnp.asarray(x)
  # Starting points: branch-point series near −1/e, log1p for moderate x, asymptotics above.
  p = jnp.sqrt(jnp.maximum(2.0 * (jnp.e * x + 1.0), 0.0))
  w_branch = -1.0 + p - p * p / 3.0 + 11.0 / 72.0 * p**3
  lx = jnp.log(jnp.maximum(x, 3.0))
  llx = jnp.log(lx)
  w_large = lx - llx + llx / lx
  w0 = jnp.where(x < -0.25, w_branch, jnp.where(x < 3.0, jnp.log1p(jnp.maximum(x, -0.25)), w_large))

  def halley(_, w):
    ew = jnp.exp(w)
    f = w * ew - x
    wp1 = w + 1.0
    denom = ew * wp1 - (w + 2.0) * f / (2.0 * wp1)
    step = jnp.where((denom != 0) & (jnp.abs(wp1) > 1e-14), f / denom, 0.0)
    return w - step

  w = jax.lax.fori_loop(0, 30, halley, w0)
  w = jnp.where(x == -1.0 / jnp.e, -1.0, w)
  return jnp.where(x < -1.0 / jnp.e - 1e-15, jnp.nan, w)


@jax.custom_jvp
def _lambertw(x):
  return _lambertw_newton(x)


@_lambertw.defjvp
def _lambertw_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  w = _lambertw(x)
  # W'(x) = W / (x (1 + W)) = 1 / (e^W (1 + W)), the latter finite at x = 0.
  return w, dx / (jnp.exp(w) * (1.0 + w))


@_float64_scope
def lambertw(x: ArrayLike) -> HostOrDeviceArray:
  """Principal branch ``W_0`` of the Lambert W function (``W e^W = x``) for real ``x ≥ −1/e``.

  jax has no Lambert W; this runs Halley's method from a branch-point / log / asymptotic
  starting guess, with derivative ``W/(x(1+W))`` supplied analytically. Returns NaN below −1/e
  (like ``scipy.special.lambertw(x).real`` does not: scipy returns a complex value there).
  """
  return _lambertw(_f64(x))


def _uncoupled_alpha(s2, lam):
  # Solves −log a = (s²/λ + 1) a: a = W(c)/c with c = s²/λ + 1 (= λW/(s²+λ), eq 13).
  c = s2 / lam + 1.0
  return _lambertw(c) / c


@_float64_scope
def fixed_point_equal_strengths(
  U: ArrayLike, s: ArrayLike, lam: ArrayLike
) -> tuple[HostOrDeviceArray, HostOrDeviceArray]:
  """Closed form eq 12: the Taylor fixed point (eq 10) when all strengths equal ``s``.

  With ``S² = s² I`` and square orthogonal ``U``, ``A = (s²/λ + 1) I`` and

    ``α_i* = λ W(s²/λ + 1)/(s² + λ)``,   ``z_j* = s² W(s²/λ + 1)/(s² + λ) · Σ_i u_ij``.

  Args:
    U: (n, n) orthogonal matrix.
    s: the common strength (scalar ≥ 0).
    lam: λ > 0.

  Returns:
    ``(alpha, z)``, shapes (n,) and (n,).
  """
  U = _f64(U)
  if U.ndim != 2 or U.shape[0] != U.shape[1]:
    raise ValueError(f"eq 12 needs a square orthogonal U; got shape {U.shape}")
  if jnp.ndim(s) != 0:
    raise ValueError(f"s must be a scalar strength; got shape {jnp.shape(s)}")
  U, _, lam = _check_problem(U, jnp.full(U.shape[1], s), lam)
  s2 = _f64(s) ** 2
  w = _lambertw(s2 / lam + 1.0)
  alpha = jnp.full(U.shape[0], lam * w / (s2 + lam))
  z = s2 * w / (s2 + lam) * U.sum(axis=0)
  return alpha, z


@_float64_scope
def fixed_point_uncoupled(
  S: ArrayLike, lam: ArrayLike
) -> tuple[HostOrDeviceArray, HostOrDeviceArray]:
  """Closed form eq 13: the Taylor fixed point (eq 10) for ``U = I`` (uncoupled features).

    ``α_i* = λ W(s_i²/λ + 1)/(s_i² + λ)``,   ``z_i* = s_i² W(s_i²/λ + 1)/(s_i² + λ)``.

  Returns:
    ``(alpha, z)``, both of shape ``S.shape``.
  """
  S = _f64(S)
  if S.ndim != 1:
    raise ValueError(f"S must be 1-D; got shape {S.shape}")
  _check_problem(jnp.eye(S.shape[0]), S, lam)
  lam = _f64(lam)
  s2 = S**2
  w = _lambertw(s2 / lam + 1.0)
  return lam * w / (s2 + lam), s2 * w / (s2 + lam)


@_float64_scope
def coupling_matrix(delta: ArrayLike) -> HostOrDeviceArray:
  """Two-feature coupling eq 15: ``U(δ) = [[√(1−δ²), −δ], [δ, √(1−δ²)]]`` for ``|δ| ≤ 1``."""
  if not _is_tracer(delta):
    d = float(np.asarray(delta))
    if not np.isfinite(d) or abs(d) > 1:
      raise ValueError(f"delta must be a finite number in [-1, 1]; got {d}")
  delta = _f64(delta)
  c = jnp.sqrt(1.0 - delta**2)
  return jnp.array([[c, -delta], [delta, c]])


@_float64_scope
def lemma1(U: ArrayLike, S: ArrayLike, lam: ArrayLike) -> HostOrDeviceArray:
  """Lemma 1 (eq 14): the Taylor fixed point for ``U`` close to the identity.

  Linearising ``log α`` around the uncoupled fixed point ``α0*`` of eq 13 (the same strengths
  with ``U = I``) turns eq 10 into a linear system:

    ``α* ≈ [A + diag(1/α0*)]^{-1} (1 − log α0*)``,   ``A = U S² U^T/λ + I``.

  The error is O(δ²) when ``U − I = O(δ)``. ``U`` must be square.
  """
  U, S, lam = _check_problem(U, S, lam)
  if U.shape[0] != U.shape[1]:
    raise ValueError(f"Lemma 1 needs a square U (a perturbed identity); got shape {U.shape}")
  a0 = _uncoupled_alpha(S**2, lam)
  A = (U * S**2) @ U.T / lam + jnp.eye(U.shape[0])
  return jnp.linalg.solve(A + jnp.diag(1.0 / a0), 1.0 - jnp.log(a0))


# ---------------------------------------------------------------------------------------------
# Vector fields, objectives and responses (internal versions take s2 = S² and are traceable)


def _log1m(x):
  """``log(1 − x)`` for ``x < 1``, within ~1 ulp.

  XLA's ``log1p`` (jax 0.5.3, CPU) is off by up to 128 ulp for arguments in about
  [−0.42, −0.35], i.e. ``log((1−α)/α)`` near α ≈ 0.4 had relative errors up to 3e-14. For
  ``x ≥ 1/4`` the subtraction ``1 − x`` rounds by at most ε/2 relative, so ``log(1 − x)`` is
  as accurate as ``log``; below, ``log1p`` is (measured ≤ 1 ulp).
  """
  return jnp.where(x < 0.25, jnp.log1p(-x), jnp.log(1.0 - x))


def _h_prime(alpha, dynamics):
  """The separable part h'(α) of F: ``log((1−α)/α)`` (eq 9, 18) or ``−log α − α`` (eq 10)."""
  if dynamics == "taylor":
    return -jnp.log(alpha) - alpha
  return _log1m(alpha) - jnp.log(alpha)


def _field(alpha, U, s2, lam, dynamics):
  """F(α) of eq 9 / 10 / 18 (module docstring); ``α̇ = η F(α)``."""
  if dynamics == "sd":
    return _h_prime(alpha, dynamics) - alpha / lam
  return _h_prime(alpha, dynamics) - U @ (s2 * (U.T @ alpha)) / lam


def _entropy_terms(alpha, dynamics):
  # Separable part h of ψ (ψ = Σ h(α_i) − quadratic); Taylor folds the +I of A into h.
  if dynamics == "taylor":
    return alpha * (1.0 - jnp.log(alpha)) - 0.5 * alpha**2
  return -alpha * jnp.log(alpha) - (1.0 - alpha) * _log1m(alpha)


def _entropy_increment(alpha, a, dynamics):
  """``h(a) − h(α)`` elementwise (``h`` as in :func:`_entropy_terms`), with error O(ε|a − α|).

  With ``Δ = a − α`` and ``x log x`` differenced as ``α log1p(Δ/α) + Δ log(α + Δ)``:

    eq 9, 18: ``h(a) − h(α) = −α log1p(Δ/α) − (1−α) log1p(−Δ/(1−α)) + Δ (log(1−a) − log a)``,
    eq 10:    ``h(a) − h(α) = Δ − α log1p(Δ/α) − Δ log a − Δ (α + Δ/2)``.

  Every term is proportional to Δ, so near the optimum (Δ → 0) the increment keeps its
  relative accuracy; ``h(a) − h(α)`` from two values of ``h`` would carry an absolute error
  ε|h(α)| however small the step.
  """
  delta = a - alpha
  xlogx = alpha * jnp.log1p(delta / alpha) + delta * jnp.log(a)  # a log a − α log α
  if dynamics == "taylor":
    return delta - xlogx - delta * (alpha + 0.5 * delta)
  beta = 1.0 - alpha
  # (1−a) log(1−a) − (1−α) log(1−α), the same form with 1−a = β − Δ.
  ylogy = beta * jnp.log1p(-delta / beta) - delta * _log1m(a)
  return -xlogx - ylogy


def _logit_path(alpha, v):
  """``sigmoid(logit α + v)``, within a few ulp of the result for every v.

  For ``|v| ≤ 1`` it is evaluated as the increment ``α + α(1−α)(e^v − 1)/(1 + α(e^v − 1))``
  (``1 + α(e^v − 1) ≥ 1/e``, and the result is ≥ α/e, so nothing cancels): no round trip
  through ``logit α``, whose rounding error ``ε|logit α|`` would otherwise move α by a
  relative ``ε|logit α|`` at every step and so set a floor of the residual (measured: 240ε
  for a λ = 1e-5 problem with one α_i ≈ 2e-15, ``|logit α_i|`` ≈ 34).
  """
  e = jnp.expm1(jnp.clip(v, -1.0, 1.0))
  near = alpha + alpha * (1.0 - alpha) * e / (1.0 + alpha * e)
  far = jax.nn.sigmoid(jnp.log(alpha) - _log1m(alpha) + v)
  return jnp.where(jnp.abs(v) <= 1.0, near, far)


def _residual_floor(alpha, w, n, dynamics):
  """Round-off floor of :class:`SolverInfo` ``.residual`` at a float64 α (derived there).

  ``w`` are the term sizes ``w_i`` of the residual, ``n = len(α)``.
  """
  eps = jnp.finfo(jnp.float64).eps
  rho = 1.0 + alpha if dynamics == "taylor" else 1.0 / (1.0 - alpha)  # α_i |h''(α_i)|
  return eps * (2 * n + 20 + 12 * jnp.max(rho / w))


def _curvature(alpha, dynamics):
  # −h''(α): the diagonal of the negative Hessian of ψ.
  if dynamics == "taylor":
    return 1.0 / alpha + 1.0
  return 1.0 / (alpha * (1.0 - alpha))


def _responses(U, s2, lam, alpha, dynamics):
  if dynamics == "sd":
    return U.T @ alpha / lam
  return s2 * (U.T @ alpha) / lam


# ---------------------------------------------------------------------------------------------
# Newton solver


def _newton(U, s2, lam, dynamics, tol, max_iter):
  """Damped Newton ascent on ψ; returns (alpha, SolverInfo)."""
  n = U.shape[0]
  if dynamics == "sd":
    M = abs_M = None  # quadratic part is α^T α/(2λ): diagonal
  else:
    M = (U * s2) @ U.T / lam
    # Symmetric to the last bit, so that F = h'(α) − Mα is exactly the gradient of the ψ the
    # line search evaluates (the rounded product is not: (U_il s_l) U_jl ≠ (U_jl s_l) U_il).
    M = 0.5 * (M + M.T)
    abs_M = jnp.abs(M)
  eps = jnp.finfo(jnp.float64).eps

  def matvec(v):
    return v / lam if M is None else M @ v

  def field(alpha):
    return _h_prime(alpha, dynamics) - matvec(alpha)

  def abs_matvec(v):
    return v / lam if M is None else abs_M @ v

  def term_sizes(alpha):
    # 1 + |h'(α_i)| + Σ_j |M_ij| α_j: the size of the terms summed in F_i.
    return 1.0 + jnp.abs(_h_prime(alpha, dynamics)) + abs_matvec(alpha)

  def residual(alpha, g):
    # |F_i| relative to the size of the terms summed in F_i (SolverInfo.residual).
    return jnp.max(jnp.abs(g) / term_sizes(alpha))

  def path(alpha, d, t):
    # Newton step taken in log α (eq 10) or logit α (eq 9, 18) coordinates: α(t) stays in the
    # domain, dα/dt(0) = d, and the second-order difference from α + t d keeps convergence
    # quadratic.
    if dynamics == "taylor":
      return alpha * jnp.exp(jnp.minimum(t * d / alpha, 50.0))
    return _logit_path(alpha, t * d / (alpha * (1.0 - alpha)))

  def factorize(alpha):
    c = _curvature(alpha, dynamics)
    if M is None:
      return c + 1.0 / lam
    return jnp.linalg.cholesky(M + jnp.diag(c))

  def solve(factor, g):
    if M is None:
      return g / factor
    return jax.scipy.linalg.cho_solve((factor, True), g)

  # Start from the uncoupled solution with the diagonal of Q (exact for diagonal Q).
  if M is None:
    alpha0 = jnp.full(n, 0.5 * lam / (1.0 + lam))
  else:
    alpha0 = _uncoupled_alpha(jnp.diag(M) * lam, lam)
  alpha0 = jnp.clip(alpha0, 1e-300, 0.5)
  g0 = field(alpha0)
  res0 = residual(alpha0, g0)

  def cond(state):
    res, it, stalled = state[2], state[3], state[4]
    return (res > tol) & (it < max_iter) & ~stalled

  def body(state):
    alpha, g, res, it, _, factor, num_fact, last_ratio = state
    # Newton step, or a chord step reusing the last Cholesky factor once the residual is small
    # and the previous chord step cut it at least 10× (saves O(n³) work near the optimum).
    refresh = (it == 0) | (res > _CHORD_BELOW) | (last_ratio > 0.1)
    factor = jax.lax.cond(refresh, factorize, lambda _: factor, alpha)
    d = solve(factor, g)
    slope = g @ d  # > 0: (approximate) Newton decrement squared
    m_alpha = matvec(alpha)
    w = term_sizes(alpha)

    def accepted(t):
      # ψ(α(t)) − ψ(α) ≥ Armijo bound. The increment is summed from terms proportional to
      # Δ = α(t) − α (quadratic part: Δ^T(Mα + MΔ/2)), so its round-off is O(nε|Δ|·w) and
      # the test stays meaningful until the residual itself is at round-off.
      a = path(alpha, d, t)
      delta = a - alpha
      m_delta = matvec(delta)
      gain = jnp.sum(_entropy_increment(alpha, a, dynamics)) - delta @ (m_alpha + 0.5 * m_delta)
      noise = 2 * (n + 4) * eps * (jnp.abs(delta) @ (w + abs_matvec(jnp.abs(delta))))
      return (gain >= 1e-4 * t * slope - noise) & jnp.all(jnp.isfinite(a))

    t = jax.lax.while_loop(lambda t: ~accepted(t) & (t > 1e-12), lambda t: 0.5 * t, 1.0)
    alpha_new = path(alpha, d, t)
    g_new = field(alpha_new)
    res_new = residual(alpha_new, g_new)
    # Round-off floor: near the optimum (res ≤ 1e-9, quadratic phase), a Newton step that no
    # longer lowers the residual ends the iteration (far from it, ψ may rise while |F| does
    # not); `converged` then checks that it stopped at the floor derived in SolverInfo. A
    # chord step that fails to lower the residual is undone and followed by a Newton step.
    worse = (res_new >= res) | ~jnp.isfinite(res_new)
    stalled = worse & refresh & (res <= 1e-9)
    alpha_new = jnp.where(worse & (stalled | ~refresh), alpha, alpha_new)
    g_new = jnp.where(worse & (stalled | ~refresh), g, g_new)
    res_new = jnp.where(worse & (stalled | ~refresh), res, res_new)
    ratio = jnp.where(worse, 1.0, res_new / res)
    return (
      alpha_new,
      g_new,
      res_new,
      it + 1,
      stalled,
      factor,
      num_fact + refresh.astype(jnp.int32),
      ratio,
    )

  factor0 = jnp.zeros((n,) if M is None else (n, n))
  init = (
    alpha0,
    g0,
    res0,
    jnp.zeros((), jnp.int32),
    jnp.zeros((), bool),
    factor0,
    jnp.zeros((), jnp.int32),
    jnp.ones(()),
  )
  alpha, g, res, it, stalled, _, num_fact, _ = jax.lax.while_loop(cond, body, init)
  floor = _residual_floor(alpha, term_sizes(alpha), n, dynamics)
  converged = (res <= tol) | (stalled & (res <= floor))
  return alpha, SolverInfo(it, num_fact, res, jnp.max(jnp.abs(g)), converged)


@functools.partial(jax.jit, static_argnames=("dynamics", "max_iter"))
def _solve(U, s2, lam, tol, dynamics, max_iter):
  return _newton(U, s2, lam, dynamics, tol, max_iter)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit(dynamics, alpha, U, s2, lam):
  """Returns ``alpha`` (a root of F); its JVP is that of the implicit function α*(U, s², λ)."""
  del U, s2, lam
  return alpha


@_implicit.defjvp
def _implicit_jvp(dynamics, primals, tangents):
  alpha, U, s2, lam = primals
  _, dU, ds2, dlam = tangents
  # F(α*(θ), θ) = 0  ⇒  (−∂F/∂α) α̇ = ∂F/∂θ·θ̇, with −∂F/∂α = diag(c) + Q/λ SPD.
  _, rhs = jax.jvp(
    lambda U_, s2_, lam_: _field(alpha, U_, s2_, lam_, dynamics), (U, s2, lam), (dU, ds2, dlam)
  )
  c = _curvature(alpha, dynamics)
  if dynamics == "sd":
    dalpha = rhs / (c + 1.0 / lam)
  else:
    H = (U * s2) @ U.T / lam + jnp.diag(c)
    dalpha = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(H, lower=True), rhs)
  return alpha, dalpha


def _fixed_point_s2(U, s2, lam, dynamics, tol=1e-14, max_iter=100):
  alpha, info = _solve(
    jax.lax.stop_gradient(U),
    jax.lax.stop_gradient(s2),
    jax.lax.stop_gradient(lam),
    tol,
    dynamics,
    max_iter,
  )
  return _implicit(dynamics, alpha, U, s2, lam), info


@_float64_scope
def fixed_point(
  U: ArrayLike,
  S: ArrayLike,
  lam: ArrayLike,
  *,
  dynamics: Dynamics = "taylor",
  tol: float = 1e-14,
  max_iter: int = 100,
  orth_tol: float | None = ORTHO_TOL,
  return_info: bool = False,
) -> HostOrDeviceArray | tuple[HostOrDeviceArray, SolverInfo]:
  """The fixed point ``α*`` of the dual dynamics (eq 10 by default; eq 9; eq 18).

  Maximises the strictly concave ψ whose gradient is the vector field F (module docstring) by
  a damped Newton method in float64. Each step solves ``(diag(−h''(α)) + Q/λ) d = F(α)`` by
  Cholesky and moves along ``α(t) = α·exp(t d/α)`` (eq 10) or ``sigmoid(logit α + t d/(α(1−α)))``
  (eq 9, 18) — the Newton step taken in log / logit coordinates, so α never leaves ``α > 0`` /
  ``(0,1)^n`` — with t halved from 1 until ψ rises enough (Armijo; the rise is summed from
  terms proportional to the step, so that round-off in ψ cannot mask it before the residual
  itself is at round-off). Once the residual is below 1e-4, steps reuse the last Cholesky
  factor while each cuts the residual ≥ 10× (chord steps; O(n²) instead of O(n³)). It starts
  from the uncoupled solution eq 13 with strengths ``diag(Q)`` and stops when the relative
  residual (:class:`SolverInfo`) is ≤ ``tol`` or has reached its float64 round-off floor.
  Typically 5–6 factorizations and < 12 iterations (up to ~30 for λ = 1e-4 with k < n).

  Differentiable w.r.t. ``U``, ``S`` and ``lam`` by the implicit-function theorem (see module
  docstring); not w.r.t. ``tol``.

  Args:
    U: (n, k) with orthonormal columns, k ≤ n: max |U^T U − I| must be ≤ ``orth_tol``.
    S: (k,) strengths (singular values of YΦ0), ≥ 0.
    lam: λ > 0 (sum-loss convention, eq 5 / eq 17).
    dynamics: ``"taylor"`` (eq 10, Theorem 1), ``"exact"`` (eq 9, = the dual optimum of eq 8)
      or ``"sd"`` (eq 18, spectral decoupling; depends on λ only).
    tol: target for the relative residual ``SolverInfo.residual``.
    max_iter: iteration cap (Newton plus chord steps).
    orth_tol: tolerance of the orthonormality check; ``None`` skips it (it costs one n·k²
      matrix product, as much as forming Q: worth skipping for large U known to be orthonormal).
    return_info: also return a :class:`SolverInfo`.

  Returns:
    ``alpha`` of shape (n,), or ``(alpha, info)``.

  Raises:
    ValueError: λ ≤ 0 or not finite; non-finite entries in U or S; U not (n, k) with k ≤ n or
      without orthonormal columns; S of the wrong shape or negative; unknown dynamics.
  """
  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam, orth_tol)
  alpha, info = _fixed_point_s2(U, S**2, lam, dynamics, tol, max_iter)
  return (alpha, info) if return_info else alpha


@_float64_scope
def responses_at(
  U: ArrayLike, S: ArrayLike, lam: ArrayLike, alpha: ArrayLike, dynamics: Dynamics = "taylor"
) -> HostOrDeviceArray:
  """Responses at a dual point (eq 11): ``z = S² U^T α/λ``; under SD ``z = U^T α/λ``.

  At the fixed point these are the network's responses ``z* = U^T Y ŷ*`` to the k features.
  """
  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam)
  alpha = _f64(alpha)
  if alpha.shape != (U.shape[0],):
    raise ValueError(f"alpha must have shape ({U.shape[0]},); got {alpha.shape}")
  _check_finite("alpha", alpha)
  return _responses(U, S**2, lam, alpha, dynamics)


@_float64_scope
def vector_field(
  U: ArrayLike, S: ArrayLike, lam: ArrayLike, alpha: ArrayLike, dynamics: Dynamics = "taylor"
) -> HostOrDeviceArray:
  """The right-hand side ``F(α)`` of eq 9 / 10 / 18 with η = 1 (module docstring)."""
  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam)
  return _field(_f64(alpha), U, S**2, lam, dynamics)


@_float64_scope
def dual_objective(
  U: ArrayLike, S: ArrayLike, lam: ArrayLike, alpha: ArrayLike, dynamics: Dynamics = "exact"
) -> HostOrDeviceArray:
  """ψ(α): eq 8 (``"exact"``), its Taylor surrogate (eq 10) or the SD dual (eq 18)."""
  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam)
  alpha = _f64(alpha)
  h = jnp.sum(_entropy_terms(alpha, dynamics))
  if dynamics == "sd":
    return h - alpha @ alpha / (2 * lam)
  return h - jnp.sum(S**2 * (U.T @ alpha) ** 2) / (2 * lam)


@_float64_scope
def starvation(
  U: ArrayLike,
  S: ArrayLike,
  lam: ArrayLike,
  *,
  dynamics: Dynamics = "taylor",
  orth_tol: float | None = ORTHO_TOL,
) -> HostOrDeviceArray:
  """Gradient-starvation matrix (Def. 2): ``M[i, j] = dz_j*/d(s_i²)``.

  By forward-mode autodiff through :func:`fixed_point` (implicit function theorem), one
  k×k Jacobian of ``z*(s²)`` (eq 11). Feature i starves feature j when ``M[i, j] < 0``;
  Theorem 2 says ``M[0, 1] < 0`` for U(δ) of eq 15 with ``s1² > s2²``. Under SD
  (``dynamics="sd"``) ``z* = U^T α*/λ`` does not depend on S at all, so M = 0.
  """
  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam, orth_tol)
  return _starvation_matrix(U, S**2, lam, dynamics)


@functools.partial(jax.jit, static_argnames=("dynamics",))
def _starvation_matrix(U, s2, lam, dynamics):
  def z_of(s2_):
    alpha, _ = _fixed_point_s2(U, s2_, lam, dynamics)
    return _responses(U, s2_, lam, alpha, dynamics)

  return jax.jacfwd(z_of)(s2).T


# ---------------------------------------------------------------------------------------------
# Trajectories


@_float64_scope
def integrate(
  U: ArrayLike,
  S: ArrayLike,
  lam: ArrayLike,
  alpha0: ArrayLike,
  t: ArrayLike,
  dynamics: Dynamics = "taylor",
  eta: float = 1.0,
  *,
  rtol: float = 1e-8,
  atol: float = 1e-10,
  max_steps: int = 100_000,
) -> Trajectory:
  """Trajectories of the dual dynamics ``α̇ = η F(α)`` (eq 9 / 10 / 18) and of ``z`` (eq 11).

  The ODE is stiff (curvatures up to ``s²/λ``), so it is solved with diffrax's implicit
  Kvaerno5 and a PID step-size controller, in ``log α`` (eq 10) or ``logit α`` (eq 9, 18)
  coordinates so that α cannot leave its domain. The trajectory is the same.

  Args:
    U, S, lam: as in :func:`fixed_point`.
    alpha0: initial α, shape (n,) or a scalar broadcast to (n,); in (0, 1) (eq 9, 18) or > 0.
    t: increasing save times, shape (T,); integration starts at ``t[0]``.
    dynamics: ``"taylor"``, ``"exact"`` or ``"sd"``.
    eta: learning rate η > 0 of the dual flow.
    rtol, atol: step-size controller tolerances; max_steps: solver step cap.

  Returns:
    :class:`Trajectory` with ``t`` (T,), ``alpha`` (T, n), ``z`` (T, k).
  """
  import diffrax  # pylint: disable=g-import-not-at-top

  _check_dynamics(dynamics)
  U, S, lam = _check_problem(U, S, lam)
  n = U.shape[0]
  alpha0 = jnp.broadcast_to(_f64(alpha0), (n,))
  t = _f64(t)
  if t.ndim != 1 or t.shape[0] < 1:
    raise ValueError(f"t must be a 1-D array of save times; got shape {t.shape}")
  _check_finite("alpha0", alpha0)
  _check_finite("t", t)
  if not _is_tracer(t) and np.any(np.diff(np.asarray(t)) <= 0):
    raise ValueError("t must be strictly increasing")
  if not _is_tracer(alpha0):
    a = np.asarray(alpha0)
    if np.any(a <= 0) or (dynamics != "taylor" and np.any(a >= 1)):
      raise ValueError(
        f"alpha0 must lie in the domain of the {dynamics!r} dynamics "
        f"({'alpha > 0' if dynamics == 'taylor' else '0 < alpha < 1'})"
      )
  if not _is_tracer(eta) and not float(eta) > 0:
    raise ValueError(f"eta must be > 0; got {eta}")
  s2 = S**2
  to_alpha, from_alpha, _ = _COORDINATES[dynamics]
  sol = diffrax.diffeqsolve(
    diffrax.ODETerm(_ODE_RHS[dynamics]),
    diffrax.Kvaerno5(),
    t0=t[0],
    t1=t[-1],
    dt0=None,
    y0=from_alpha(alpha0),
    args=(U, s2, lam, _f64(eta)),
    saveat=diffrax.SaveAt(ts=t),
    stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
    max_steps=max_steps,
  )
  alpha = to_alpha(sol.ys)
  z = jax.vmap(lambda a: _responses(U, s2, lam, a, dynamics))(alpha)
  return Trajectory(t=t, alpha=alpha, z=z)


# Coordinates u of the ODE: log α (eq 10, α > 0) or logit α (eq 9, 18, α ∈ (0,1)); with
# α = to_alpha(u), u̇ = α̇ / (dα/du).
_COORDINATES = {
  "taylor": (jnp.exp, jnp.log, lambda a: a),
  "exact": (jax.nn.sigmoid, lambda a: jnp.log(a) - _log1m(a), lambda a: a * (1.0 - a)),
}
_COORDINATES["sd"] = _COORDINATES["exact"]


def _make_rhs(dynamics):
  to_alpha, _, dalpha_du = _COORDINATES[dynamics]

  def rhs(_, u, args):
    U, s2, lam, eta = args
    a = to_alpha(u)
    return eta * _field(a, U, s2, lam, dynamics) / dalpha_du(a)

  return rhs


# Module-level functions, so that diffrax's compilation cache is hit by repeated calls.
_ODE_RHS = {d: _make_rhs(d) for d in DYNAMICS}

"""Empirical NTRF / NTK, features ``U, S, V`` and responses ``z`` (docs/protocols.md §1, eq 2–4).

Notation (binary case, docs/protocols.md §1): data ``X`` (n×d), labels ``y ∈ {−1,+1}^n``, ``Y = diag(y)``,
logits ``ŷ(X; θ)``, ``θ ∈ R^m``.

- NTRF (eq 2): ``Φ0 = ∂ŷ(X; θ0)/∂θ ∈ R^{n×m}`` (:func:`ntrf`, explicit, small models only).
- Empirical NTK Gram matrix: ``K = Φ0 Φ0^T`` (:func:`empirical_ntk`, through neural-tangents,
  blocked so that n in the thousands fits in memory).
- Features (Def. 1, eq 4): ``YΦ0 = U S V^T``. :func:`features` takes ``U, S`` from the
  float64 ``eigh`` of ``Y K Y = U S² U^T`` and, on request, ``V = Φ0^T Y U S^{-1}`` as one
  vector–Jacobian product per feature (never an explicit m×n matrix).
- Responses (eq 4, centred logits): ``z = U^T Y (ŷ − ŷ0)`` (:func:`responses`).

Sign convention: the SVD fixes each pair ``(u_j, v_j)`` only up to a common sign. Here every
column of ``U`` is oriented so that ``Σ_i u_ij ≥ 0``, i.e. the feature function ``Φ0 v_j``
(whose values on the training set are ``s_j · y_i u_ij``) correlates non-negatively with the
labels; a network that learns the feature in the direction that fits the labels then has a
positive response ``z_j``.

neural-tangents (and through it tensorflow) is imported inside the functions that need it, so
``import gs_jax`` stays fast.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax import losses

ApplyFn = Callable[..., jax.Array]

IMPLEMENTATIONS = ("vector_products", "jacobian_contraction")
_BROKEN_IMPLEMENTATIONS = ("structured_derivatives", "auto")


def _nt_implementation(implementation: str):
  """Maps our names to ``nt.NtkImplementation``; refuses the ones that fail on jax 0.5.3."""
  import neural_tangents as nt  # lazy: pulls in tensorflow

  name = str(implementation).lower()
  if name in _BROKEN_IMPLEMENTATIONS:
    raise ValueError(
        f"NTK implementation {implementation!r} is not supported: neural-tangents 0.6.5's "
        "STRUCTURED_DERIVATIVES (and AUTO, which may pick it) fails on jax 0.5.3; use one of "
        f"{IMPLEMENTATIONS}")
  if name == "vector_products":
    return nt.NtkImplementation.NTK_VECTOR_PRODUCTS
  if name == "jacobian_contraction":
    return nt.NtkImplementation.JACOBIAN_CONTRACTION
  raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")


def _check_inputs(x, name="x"):
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(f"{name} must have a leading batch axis with at least one example; "
                     f"got shape {x.shape}")
  if not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  return x


def _pad_rows(x, size):
  """Pads ``x`` along axis 0 to ``size`` rows by repeating row 0 (rows are sliced off later)."""
  pad = size - x.shape[0]
  if pad == 0:
    return x
  return jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])], axis=0)


def empirical_ntk(apply_fn: ApplyFn, params, x1, x2=None, *,
                  implementation: str = "jacobian_contraction",
                  block_size: int = 256) -> np.ndarray:
  """Empirical NTK Gram matrix ``K_ij = ⟨∂ŷ(x1_i)/∂θ, ∂ŷ(x2_j)/∂θ⟩`` (so ``K = Φ0 Φ0^T``).

  Computed with ``neural_tangents.empirical_ntk_fn`` in blocks of ``block_size`` rows and
  columns (the last block is padded to the same size so the kernel compiles once), so memory
  is O(block_size² + block_size·m) whatever n is. When ``x2`` is None the Gram matrix of
  ``x1`` is computed from its upper block triangle and symmetrised.

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)`` scalar logits (e.g.
      ``lambda p, x: model.apply({"params": p}, x)``).
    params: the parameter pytree ``θ`` at which to linearise (``θ0`` for the NTK at init).
    x1, x2: inputs with a leading batch axis.
    implementation: "jacobian_contraction" (``JACOBIAN_CONTRACTION``, default: fastest for
      the small MLPs used here — n = 2000 two-moons points, 500-unit net: ~1 s vs ~50 s for
      vector products on 2 CPU cores, compile included — but memory O(block_size·m)) or
      "vector_products" (``NTK_VECTOR_PRODUCTS``: no Jacobian in memory, for large m); the
      two agree to float round-off (tested).
    block_size: rows/columns per kernel call.

  Returns:
    ``K`` as a NumPy array of shape (n1, n2), in the dtype of the model's output.
  """
  import neural_tangents as nt

  impl = _nt_implementation(implementation)
  if block_size < 1:
    raise ValueError(f"block_size must be >= 1; got {block_size}")
  x1 = _check_inputs(x1, "x1")
  symmetric = x2 is None
  x2 = x1 if symmetric else _check_inputs(x2, "x2")
  if x1.shape[1:] != x2.shape[1:]:
    raise ValueError(f"x1 and x2 must have the same per-example shape; got {x1.shape[1:]} "
                     f"and {x2.shape[1:]}")
  out = jax.eval_shape(apply_fn, params, x1[:1])
  if out.shape != (1,):
    raise ValueError(f"apply_fn must return one logit per example, shape (n,); for one "
                     f"example it returned shape {out.shape}")

  def f(p, x):  # NT wants a trailing output axis to trace over
    return apply_fn(p, x)[:, None]

  kernel_fn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
                                          implementation=impl))
  n1, n2 = x1.shape[0], x2.shape[0]
  b1, b2 = min(block_size, n1), min(block_size, n2)
  K = np.zeros((n1, n2), dtype=np.dtype(out.dtype))
  for i in range(0, n1, b1):
    xi = _pad_rows(x1[i:i + b1], b1)
    for j in range(0, n2, b2):
      if symmetric and j + b2 <= i:
        continue  # lower block triangle: filled from the transpose below
      xj = _pad_rows(x2[j:j + b2], b2)
      block = np.asarray(kernel_fn(xi, xj, params))
      ri, rj = min(b1, n1 - i), min(b2, n2 - j)
      K[i:i + ri, j:j + rj] = block[:ri, :rj]
  if symmetric:
    upper = np.triu(K)
    K = upper + np.triu(K, 1).T
  if not np.all(np.isfinite(K)):
    raise ValueError("the empirical NTK has non-finite entries (check the model and params)")
  return K


def ntrf(apply_fn: ApplyFn, params, x) -> jax.Array:
  """Explicit NTRF ``Φ0 = ∂ŷ(X; θ)/∂θ`` (eq 2), shape (n, m), for small models.

  Columns follow ``jax.flatten_util.ravel_pytree(params)``. Memory is n·m: use
  :func:`empirical_ntk` (and :func:`features`) for anything large.
  """
  from jax.flatten_util import ravel_pytree

  x = _check_inputs(x)
  flat, unravel = ravel_pytree(params)
  return jax.jacrev(lambda w: apply_fn(unravel(w), x))(flat)


def _labels_pm1(y, n):
  y = np.asarray(y)
  if y.shape != (n,):
    raise ValueError(f"labels must have shape ({n},) to match the examples; got {y.shape}")
  return np.asarray(losses.to_pm1(y), np.float64)


def orient(U: np.ndarray) -> np.ndarray:
  """Flips each column of ``U`` so that its sum is ≥ 0 (ties: largest-|entry| positive)."""
  U = np.array(U, np.float64, copy=True)
  sums = U.sum(axis=0)
  big = U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])]
  tie = np.isclose(sums, 0.0, atol=1e-12 * np.sqrt(U.shape[0]))
  sign = np.where(tie, np.sign(big), np.sign(sums))
  sign[sign == 0] = 1.0
  return U * sign


def features_from_kernel(K, y, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``U, S`` with ``Y K Y = U S² U^T`` (eq 4 via the Gram matrix), float64, ``s`` descending.

  Args:
    K: (n, n) empirical NTK Gram matrix ``Φ0 Φ0^T`` (symmetric PSD up to round-off).
    y: (n,) binary labels, {0,1} or ±1 (mapped to ±1).
    k: keep the ``k`` strongest features (default: all n).

  Returns:
    ``U`` (n, k) with orthonormal columns oriented by :func:`orient`, and strengths ``S``
    (k,) ≥ 0 (eigenvalues below zero from round-off are clipped to 0).
  """
  K = np.asarray(K, np.float64)
  if K.ndim != 2 or K.shape[0] != K.shape[1]:
    raise ValueError(f"K must be a square (n, n) matrix; got shape {K.shape}")
  if not np.all(np.isfinite(K)):
    raise ValueError("K contains non-finite values (NaN or inf)")
  n = K.shape[0]
  yy = _labels_pm1(y, n)
  if k is None:
    k = n
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}]; got {k}")
  asym = np.max(np.abs(K - K.T)) / max(np.max(np.abs(K)), 1e-300)
  if asym > 1e-4:
    raise ValueError(f"K is not symmetric (relative asymmetry {asym:.2e})")
  M = yy[:, None] * (0.5 * (K + K.T)) * yy[None, :]
  evals, evecs = np.linalg.eigh(M)
  order = np.argsort(evals)[::-1][:k]
  S = np.sqrt(np.clip(evals[order], 0.0, None))
  return orient(evecs[:, order]), S


def gram_eigenvectors(K, columns) -> tuple[np.ndarray, np.ndarray]:
  """Columns of the left singular vectors of the Gram matrix ``K = Φ0 Φ0^T`` itself (no labels).

  For a symmetric PSD ``K``, ``K = U_K diag(σ) U_K^T`` with ``σ`` descending (float64
  ``eigh``); this is ``torch.svd(K)``'s ``U`` up to the sign of each column, the basis the
  released Figure-1(d) code projects the logits on (docs/protocols.md §3.2). Since
  ``Y K Y = (Y U_K) diag(σ) (Y U_K)^T``, column ``j`` equals ``± Y u_j`` with ``u_j`` the
  ``j``-th feature of ``YΦ0`` (:func:`features`, ``s_j² = σ_j``), so
  ``ŷ · U_K[:, j] = ± u_j^T Y ŷ``: the eq-4 response of feature ``j`` with uncentred logits.

  Args:
    K: (n, n) Gram matrix.
    columns: 0-based column indices (0 = strongest).

  Returns:
    ``U_K[:, columns]`` (n, len(columns)), oriented by :func:`orient`, and all eigenvalues
    ``σ`` (n,), descending.
  """
  K = np.asarray(K, np.float64)
  if K.ndim != 2 or K.shape[0] != K.shape[1]:
    raise ValueError(f"K must be a square (n, n) matrix; got shape {K.shape}")
  columns = [int(c) for c in columns]
  if any(not 0 <= c < K.shape[0] for c in columns):
    raise ValueError(f"columns must lie in [0, {K.shape[0]}); got {columns}")
  evals, evecs = np.linalg.eigh(0.5 * (K + K.T))
  order = np.argsort(evals)[::-1]
  return orient(evecs[:, order[columns]]), evals[order]


def feature_directions(apply_fn: ApplyFn, params, x, y, U, S, *,
                       rtol: float = 1e-8) -> jax.Array:
  """Right singular vectors ``V = Φ0^T Y U S^{-1}`` (eq 4), one VJP per feature.

  Returns:
    ``V`` of shape (m, k), columns in ``ravel_pytree(params)`` order. Orthonormal when
    ``U, S`` are the exact SVD factors of ``YΦ0`` (tested).

  Raises:
    ValueError: if some ``s_j ≤ rtol · s_max`` (``V_j`` is undefined; pass a smaller ``k`` to
      :func:`features`).
  """
  from jax.flatten_util import ravel_pytree

  x = _check_inputs(x)
  U = np.asarray(U, np.float64)
  S = np.asarray(S, np.float64)
  n = x.shape[0]
  if U.ndim != 2 or U.shape[0] != n or S.shape != (U.shape[1],):
    raise ValueError(f"expected U (n={n}, k) and S (k,); got U {U.shape} and S {S.shape}")
  if np.any(S <= rtol * S.max()):
    raise ValueError(f"strengths s_j <= {rtol:g}·s_max have no direction V_j = Φ0^T Y u_j / s_j; "
                     "keep fewer features (k)")
  yy = _labels_pm1(y, n)
  flat, unravel = ravel_pytree(params)
  out, vjp = jax.vjp(lambda w: apply_fn(unravel(w), x), flat)
  cot = jnp.asarray(yy[:, None] * U / S[None, :], out.dtype)       # (n, k) = Y U S^{-1}
  (Vt,) = jax.vmap(vjp, in_axes=1)(cot)                             # (k, m)
  return Vt.T


def features(apply_fn: ApplyFn, params, x, y, *, k: int | None = None, return_v: bool = False,
             kernel=None, implementation: str = "jacobian_contraction", block_size: int = 256):
  """Features of ``YΦ0 = U S V^T`` (Def. 1, eq 4) at ``params`` (usually ``θ0``).

  ``U, S`` come from the float64 ``eigh`` of ``Y K Y`` with ``K`` the empirical NTK
  (:func:`empirical_ntk`, or ``kernel`` if already computed); ``V`` (on request) from
  :func:`feature_directions`.

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)`` logits.
    params: parameters at which the network is linearised.
    x: (n, …) training inputs; y: (n,) binary labels ({0,1} or ±1).
    k: number of features to keep (strongest first; default all n).
    return_v: also return ``V`` (m, k).
    kernel: a precomputed (n, n) NTK Gram matrix of ``x`` (skips the NTK computation).
    implementation, block_size: passed to :func:`empirical_ntk`.

  Returns:
    ``(U, S)`` or ``(U, S, V)``; ``U`` (n, k) and ``S`` (k,) are float64 NumPy arrays.
  """
  x = _check_inputs(x)
  if kernel is None:
    kernel = empirical_ntk(apply_fn, params, x, implementation=implementation,
                           block_size=block_size)
  U, S = features_from_kernel(kernel, y, k)
  if not return_v:
    return U, S
  return U, S, feature_directions(apply_fn, params, x, y, U, S)


def responses(U, y, logits, logits0=None):
  """Responses ``z = U^T Y (ŷ − ŷ0)`` to the features (eq 4 with centred logits).

  In the linear regime ``ŷ − ŷ0 = Φ0 (θ − θ0)`` this is ``S V^T (θ − θ0)``.

  Args:
    U: (n, k) feature weights per example (from :func:`features`).
    y: (n,) binary labels ({0,1} or ±1).
    logits: (..., n) logits ŷ; any leading axes (steps, seeds) are kept.
    logits0: (..., n) logits at initialisation, broadcastable to ``logits`` (default 0).

  Returns:
    ``z`` of shape (..., k).
  """
  U = jnp.asarray(U)
  logits = jnp.asarray(logits)
  if U.ndim != 2:
    raise ValueError(f"U must be a (n, k) matrix; got shape {U.shape}")
  n = U.shape[0]
  if logits.shape[-1:] != (n,):
    raise ValueError(f"logits must end with an axis of n={n} examples; got shape "
                     f"{logits.shape}")
  yy = jnp.asarray(_labels_pm1(y, n), U.dtype)
  d = logits if logits0 is None else logits - jnp.asarray(logits0)
  if not bool(jnp.all(jnp.isfinite(d))):
    raise ValueError("logits contain non-finite values (NaN or inf)")
  return (d * yy) @ U


def centred(apply_fn: ApplyFn, params0) -> ApplyFn:
  """The centred network ``f_c(x; θ) = f(x; θ) − f(x; θ0)`` of docs/protocols.md §1 (so ``f_c(·; θ0) = 0``).

  Centring removes the random function at initialisation, so that in the linear regime
  ``ŷ = Φ0 (θ − θ0)`` exactly as in eq 3 (with θ measured from θ0). Pair it with the ridge
  ``λ/2 ‖θ − θ0‖²`` (:func:`ridge_from_init`).
  """
  def f_c(params, x):
    return apply_fn(params, x) - jax.lax.stop_gradient(apply_fn(params0, x))
  return f_c


def ridge_from_init(params, params0, lam):
  """``λ/2 ‖θ − θ0‖²`` over every leaf (the ridge of eq 5 around the initialisation)."""
  return losses.l2_penalty(params, lam, params0)

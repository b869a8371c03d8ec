"""Empirical NTRF / NTK, features ``U, S, V`` and responses ``z`` (docs/protocols.md §1, eq 2–4).

Notation (binary case, docs/protocols.md §1): data ``X`` (n×d), labels ``y ∈ {−1,+1}^n``, ``Y = diag(y)``,
logits ``ŷ(X; θ)``, ``θ ∈ R^m``.

- NTRF (eq 2): ``Φ0 = ∂ŷ(X; θ0)/∂θ ∈ R^{n×m}`` (:func:`ntrf`, explicit, small models only).
- Empirical NTK Gram matrix: ``K = Φ0 Φ0^T`` (:func:`empirical_ntk`: Jacobian contraction or
  VJP/JVP products with JAX's own transforms, blocked so that n in the thousands fits in
  memory; neural-tangents optionally, as a second backend and reference).
- Features (Def. 1, eq 4): ``YΦ0 = U S V^T``. :func:`features` takes ``U, S`` from the
  float64 ``eigh`` of ``Y K Y = U S² U^T`` and, on request, ``V = Φ0^T Y U S^{-1}`` as one
  vector–Jacobian product per feature (never an explicit m×n matrix).
- Responses (eq 4, centred logits): ``z = U^T Y (ŷ − ŷ0)`` (:func:`responses`); during
  training, inside a compiled loop, through :func:`response_probe` and
  :func:`gs_jax.train.with_probe`.
- At scale (CIFAR-sized n, m in the hundreds of thousands): :func:`top_features` — the dense
  route (blocked Gram + top-k ``eigh``) or the matrix-free one
  (:func:`features_matrix_free`: block Krylov on ``YΦ0`` with Jacobian–block products, never
  Φ0 or K). Two-logit nets enter through :func:`logit_difference`.

Sign convention: the SVD fixes each pair ``(u_j, v_j)`` only up to a common sign. Here every
column of ``U`` is oriented so that ``Σ_i u_ij ≥ 0``, i.e. the feature function ``Φ0 v_j``
(whose values on the training set are ``s_j · y_i u_ij``) correlates non-negatively with the
labels; a network that learns the feature in the direction that fits the labels then has a
positive response ``z_j``.

Nothing here needs neural-tangents: it is imported only for ``backend="neural_tangents"``
(the optional ``nt`` extra, JAX < 0.6), and then inside the function that needs it (it pulls in
tensorflow).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import batching
from gs_jax.base.types import ApplyFn, Array, Params, PRNGKey, PyTree
from gs_jax.nn import losses

IMPLEMENTATIONS = ("vector_products", "jacobian_contraction")
BACKENDS = ("jax", "neural_tangents")
_BROKEN_IMPLEMENTATIONS = ("structured_derivatives", "auto")


def _check_implementation(implementation: str) -> str:
  name = str(implementation).lower()
  if name in _BROKEN_IMPLEMENTATIONS:
    raise ValueError(
      f"NTK implementation {implementation!r} is not supported (neural-tangents 0.6.5's "
      "STRUCTURED_DERIVATIVES, and AUTO, which may pick it, fail on jax 0.5.3); use one of "
      f"{IMPLEMENTATIONS}"
    )
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}")
  return name


def _nt_kernel_fn(apply_fn: ApplyFn, implementation: str):
  """``neural_tangents.empirical_ntk_fn`` of a scalar-logit net (the optional ``nt`` extra)."""
  try:
    import neural_tangents as nt  # lazy: pulls in tensorflow
  except ImportError as e:
    raise ImportError(
      "backend='neural_tangents' needs the optional neural-tangents package "
      "(pip install 'gs-jax[nt]', which brings the JAX < 0.6 it runs on); "
      f"the default backend='jax' needs nothing more ({e})"
    ) from e
  impl = {
    "vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
  }[implementation]

  def f(p, x):  # NT wants a trailing output axis to trace over
    return apply_fn(p, x)[:, None]

  return jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=impl))


def _jax_kernel_fn(apply_fn: ApplyFn, implementation: str):
  """Jitted ``(x1, x2, params) -> Φ(x1) Φ(x2)^T`` for one block, with JAX transforms only.

  ``"jacobian_contraction"``: each block's per-example gradients ``∂ŷ(x_i)/∂θ`` as a pytree
  (``vmap(grad)``), contracted leaf by leaf, ``K = Σ_leaves J1_leaf J2_leafᵀ`` — memory
  O(block·m). ``"vector_products"``: ``K = J1 (J2ᵀ E)`` with ``E`` the identity on the
  block's outputs — one VJP of ``ŷ(x2)`` per column of ``E`` (``J2ᵀ e_j``, a parameter-shaped
  vector), pushed through ``ŷ(x1)`` by a JVP, all under ``vmap``: no Jacobian row is ever
  stored per example, only one parameter vector per column at a time in the vmapped program.
  """

  def scalar(p, xi):
    return apply_fn(p, xi[None])[0]

  def contraction(x1, x2, params):
    g = jax.vmap(jax.grad(scalar), in_axes=(None, 0))
    j1, j2 = g(params, x1), g(params, x2)
    blocks = jax.tree_util.tree_map(
      lambda a, b: a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T, j1, j2
    )
    return sum(jax.tree_util.tree_leaves(blocks))

  def vector_products(x1, x2, params):
    out2, vjp2 = jax.vjp(lambda p: apply_fn(p, x2), params)

    def column(e):  # K[:, j] = J1 J2ᵀ e_j
      (t,) = vjp2(e)
      return jax.jvp(lambda p: apply_fn(p, x1), (params,), (t,))[1]

    return jax.vmap(column, out_axes=1)(jnp.eye(out2.shape[0], dtype=out2.dtype))

  return jax.jit(contraction if implementation == "jacobian_contraction" else vector_products)


def _check_inputs(x, name="x"):
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[0] == 0:
    raise ValueError(
      f"{name} must have a leading batch axis with at least one example; got shape {x.shape}"
    )
  if not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  return x


def empirical_ntk(
  apply_fn: ApplyFn,
  params: Params,
  x1,
  x2=None,
  *,
  implementation: str = "jacobian_contraction",
  block_size: int = 256,
  backend: str = "jax",
) -> np.ndarray:
  """Empirical NTK Gram matrix ``K_ij = ⟨∂ŷ(x1_i)/∂θ, ∂ŷ(x2_j)/∂θ⟩`` (so ``K = Φ0 Φ0^T``).

  Computed in blocks of ``block_size`` rows and columns (the last block is padded to the same
  size so the kernel compiles once), so memory is O(block_size² + block_size·m) whatever n
  is. When ``x2`` is None the Gram matrix of ``x1`` is computed from its upper block triangle
  and symmetrised. Accumulation is in the model's dtype (float64 under
  :func:`gs_jax._compat.enable_x64` with float64 parameters, as the tests do).

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)`` scalar logits (e.g.
      ``lambda p, x: model.apply({"params": p}, x)``).
    params: the parameter pytree ``θ`` at which to linearise (``θ0`` for the NTK at init).
    x1, x2: inputs with a leading batch axis.
    implementation: "jacobian_contraction" (default: per-example gradients contracted leaf
      by leaf — fastest for the small MLPs used here, memory O(block_size·m)) or
      "vector_products" (VJP then JVP per column, no per-example Jacobian in memory, for
      large m); the two agree to float round-off (tested).
    block_size: rows/columns per kernel call.
    backend: "jax" (default; JAX transforms only, any supported JAX) or "neural_tangents"
      (``neural_tangents.empirical_ntk_fn`` with the same implementation; needs the optional
      ``nt`` extra and so JAX < 0.6). Both agree to float round-off (tests/theory/test_ntk.py, on the
      oldest stack).

  Returns:
    ``K`` as a NumPy array of shape (n1, n2), in the dtype of the model's output.
  """
  impl = _check_implementation(implementation)
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
  if block_size < 1:
    raise ValueError(f"block_size must be >= 1; got {block_size}")
  x1 = _check_inputs(x1, "x1")
  symmetric = x2 is None
  x2 = x1 if symmetric else _check_inputs(x2, "x2")
  if x1.shape[1:] != x2.shape[1:]:
    raise ValueError(
      f"x1 and x2 must have the same per-example shape; got {x1.shape[1:]} and {x2.shape[1:]}"
    )
  out = jax.eval_shape(apply_fn, params, x1[:1])
  if out.shape != (1,):
    raise ValueError(
      f"apply_fn must return one logit per example, shape (n,); for one "
      f"example it returned shape {out.shape}"
    )

  kernel_fn = (_jax_kernel_fn if backend == "jax" else _nt_kernel_fn)(apply_fn, impl)
  n1, n2 = x1.shape[0], x2.shape[0]
  b1, b2 = min(block_size, n1), min(block_size, n2)
  K = np.zeros((n1, n2), dtype=np.dtype(out.dtype))
  for i in range(0, n1, b1):
    xi = batching.pad_rows(x1[i : i + b1], b1)
    for j in range(0, n2, b2):
      if symmetric and j + b2 <= i:
        continue  # lower block triangle: filled from the transpose below
      xj = batching.pad_rows(x2[j : j + b2], b2)
      block = np.asarray(kernel_fn(xi, xj, params))
      ri, rj = min(b1, n1 - i), min(b2, n2 - j)
      K[i : i + ri, j : j + rj] = block[:ri, :rj]
  if symmetric:
    upper = np.triu(K)
    K = upper + np.triu(K, 1).T
  if not np.all(np.isfinite(K)):
    raise ValueError("the empirical NTK has non-finite entries (check the model and params)")
  return K


def ntrf(apply_fn: ApplyFn, params: Params, x) -> Array:
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
  if k < n:  # only the top k eigenpairs (LAPACK's MRRR on the tridiagonal form)
    import scipy.linalg

    evals, evecs = scipy.linalg.eigh(M, subset_by_index=(n - k, n - 1), driver="evr")
  else:
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


def feature_directions(
  apply_fn: ApplyFn,
  params: Params,
  x,
  y,
  U,
  S,
  *,
  rtol: float = 1e-8,
  batch_size: int | None = None,
) -> Array:
  """Right singular vectors ``V = Φ0^T Y U S^{-1}`` (eq 4), one VJP per feature.

  With ``batch_size`` the VJPs run over chunks of that many examples (the last one padded by
  :func:`gs_jax.batching.pad_rows` with zero cotangents) and are summed in float64, so memory
  is O(batch_size · activations + m·k) whatever n is (CIFAR-sized training sets).

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
    raise ValueError(
      f"strengths s_j <= {rtol:g}·s_max have no direction V_j = Φ0^T Y u_j / s_j; "
      "keep fewer features (k)"
    )
  yy = _labels_pm1(y, n)
  flat, unravel = ravel_pytree(params)
  cot = yy[:, None] * U / S[None, :]  # (n, k) = Y U S^{-1}
  if batch_size is None or batch_size >= n:
    out, vjp = jax.vjp(lambda w: apply_fn(unravel(w), x), flat)
    (Vt,) = jax.vmap(vjp, in_axes=1)(jnp.asarray(cot, out.dtype))  # (k, m)
    return Vt.T

  @jax.jit
  def chunk(xb, cb):
    _, vjp = jax.vjp(lambda w: apply_fn(unravel(w), xb), flat)
    return jax.vmap(vjp, in_axes=1)(cb.astype(flat.dtype))[0]  # (k, m)

  Vt = np.zeros((U.shape[1], flat.size))
  for i in range(0, n, batch_size):
    xb, cb = x[i : i + batch_size], cot[i : i + batch_size]
    cb = np.concatenate([cb, np.zeros((batch_size - len(cb), cb.shape[1]))])
    Vt += np.asarray(chunk(batching.pad_rows(xb, batch_size), cb), np.float64)
  return jnp.asarray(Vt.T, flat.dtype)


def features(
  apply_fn: ApplyFn,
  params: Params,
  x,
  y,
  *,
  k: int | None = None,
  return_v: bool = False,
  kernel=None,
  implementation: str = "jacobian_contraction",
  block_size: int = 256,
  backend: str = "jax",
) -> tuple[Any, ...]:
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
    implementation, block_size, backend: passed to :func:`empirical_ntk`.

  Returns:
    ``(U, S)`` or ``(U, S, V)``; ``U`` (n, k) and ``S`` (k,) are float64 NumPy arrays.
  """
  x = _check_inputs(x)
  if kernel is None:
    kernel = empirical_ntk(
      apply_fn, params, x, implementation=implementation, block_size=block_size, backend=backend
    )
  U, S = features_from_kernel(kernel, y, k)
  if not return_v:
    return U, S
  return U, S, feature_directions(apply_fn, params, x, y, U, S)


def responses(U, y, logits, logits0=None) -> Array:
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
    raise ValueError(f"logits must end with an axis of n={n} examples; got shape {logits.shape}")
  yy = jnp.asarray(_labels_pm1(y, n), U.dtype)
  d = logits if logits0 is None else logits - jnp.asarray(logits0)
  if not bool(jnp.all(jnp.isfinite(d))):
    raise ValueError("logits contain non-finite values (NaN or inf)")
  return (d * yy) @ U


def centred(apply_fn: ApplyFn, params0: Params) -> ApplyFn:
  """The centred network ``f_c(x; θ) = f(x; θ) − f(x; θ0)`` of docs/protocols.md §1 (so ``f_c(·; θ0) = 0``).

  Centring removes the random function at initialisation, so that in the linear regime
  ``ŷ = Φ0 (θ − θ0)`` exactly as in eq 3 (with θ measured from θ0). Pair it with the ridge
  ``λ/2 ‖θ − θ0‖²`` (:func:`ridge_from_init`).
  """

  def f_c(params, x):
    return apply_fn(params, x) - jax.lax.stop_gradient(apply_fn(params0, x))

  return f_c


def ridge_from_init(params: Params, params0: Params, lam) -> Array:
  """``λ/2 ‖θ − θ0‖²`` over every leaf (the ridge of eq 5 around the initialisation)."""
  return losses.l2_penalty(params, lam, params0)


# ---------------------------------------------------------------- top-k features at scale


def logit_difference(apply_fn: ApplyFn) -> ApplyFn:
  """The scalar logit ``ŷ = f_1 − f_0`` of a two-logit binary network (labels 0, 1 → ∓1).

  Softmax cross-entropy on two logits is the logistic loss of eq 5 on their difference,
  ``−log softmax(f)_c = log(1 + exp(−y·(f_1 − f_0)))`` with ``y = 2c − 1``, so the paper's
  scalar ``ŷ`` (and with it ``Φ0``, ``U``, ``S``, ``z``) of a two-logit net is this difference.
  """

  def f(params, x):
    out = apply_fn(params, x)
    if out.ndim != 2 or out.shape[-1] != 2:
      raise ValueError(f"logit_difference needs (n, 2) logits; got shape {out.shape}")
    return out[:, 1] - out[:, 0]

  return f


def _flat_scalar_fn(apply_fn: ApplyFn, params):
  from jax.flatten_util import ravel_pytree

  flat, unravel = ravel_pytree(params)
  return flat, (lambda w, x: apply_fn(unravel(w), x))


def _pass_fn(g, flat, products: str):
  """Jitted ``(xb, cb, Q) -> (Z, G)`` on one chunk of B rows with weights ``cb`` (= y_i, 0 on
  padded rows): ``Z = C Φ_B Q`` (B, l) and ``G = Φ_B^T C Z`` (m, l), ``C = diag(cb)``.

  ``products="jacobian"``: the chunk's Jacobian ``Φ_B`` (B, m) is formed by B per-example
  VJPs (``vmap(grad)``) and multiplied with all l columns at once — one backward pass per
  example whatever l is, memory O(B·m). ``"jvp"``: l JVPs and l VJPs over the chunk, never a
  Jacobian row — memory O(m·l + l·B·activations), ~l/3× the work.
  """

  def scalar(w, xi):
    return g(w, xi[None])[0]

  @jax.jit
  def jacobian(xb, cb, Q):
    J = jax.vmap(jax.grad(scalar), in_axes=(None, 0))(flat, xb) * cb[:, None]
    Z = J @ Q
    return Z, J.T @ Z

  @jax.jit
  def jvp(xb, cb, Q):
    Z = (
      jax.vmap(lambda q: jax.jvp(lambda w: g(w, xb), (flat,), (q,))[1], in_axes=1, out_axes=1)(Q)
      * cb[:, None]
    )
    _, vjp = jax.vjp(lambda w: g(w, xb), flat)
    G = jax.vmap(lambda c: vjp(c)[0], in_axes=1, out_axes=1)(Z * cb[:, None])
    return Z, G

  if products == "jacobian":
    return jacobian
  if products == "jvp":
    return jvp
  raise ValueError(f"products must be 'jacobian' or 'jvp'; got {products!r}")


def _orthonormal_block(W, basis, drop_tol=1e-10):
  """Columns of ``W`` made orthonormal to ``basis`` (an (m, d) array with orthonormal columns,
  or None) and to each other, float64; directions whose remainder is ≤ ``drop_tol`` × the
  largest column norm (rank exhausted, up to the round-off of the products that made ``W``)
  are dropped.

  Two rounds of (block projection, SVQB: ``W ← W V_+ E_+^{-1/2}`` from ``eigh(W^T W)``;
  Stathopoulos & Wu 2002): only matrix products over the long m axis (BLAS-3), 5× faster than
  Householder QR of an m×l block here, and the second round restores the orthogonality the
  squared condition number of the first may lose (as CholeskyQR2).
  """
  thresh = (drop_tol * max(np.linalg.norm(W, axis=0).max(), 1e-300)) ** 2
  for _ in range(2):
    if basis is not None and basis.shape[1]:
      W = W - basis @ (basis.T @ W)
    e, V = np.linalg.eigh(W.T @ W)
    keep = e > thresh
    W = W @ (V[:, keep] / np.sqrt(e[keep]))
    thresh = drop_tol**2  # columns now have unit norm
  return W


def features_matrix_free(
  apply_fn: ApplyFn,
  params: Params,
  x,
  y,
  k: int,
  *,
  block: int | None = None,
  max_passes: int = 8,
  tol: float = 1e-6,
  batch_size: int = 64,
  products: str = "jacobian",
  key: PRNGKey | None = None,
  return_v: bool = False,
  return_info: bool = False,
  on_pass: Callable | None = None,
) -> tuple[Any, ...]:
  """Top-k features ``U_k, S_k`` (and ``V_k``) of ``YΦ0`` without forming ``Φ0`` or ``K``.

  Block Krylov (block Lanczos with full reorthogonalisation) on ``A^T A``, ``A = YΦ0`` (n×m),
  followed by Rayleigh–Ritz (Musco & Musco 2015, "randomized block Krylov methods"):

  - ``Q_0``: an orthonormal random m×l block (``l = block``, default ``max(2k, k + 10)``).
  - Pass t streams the data once, in chunks of ``batch_size`` examples, and computes
    ``Z_t = A Q_t`` (n×l) and ``W = A^T Z_t = A^T A Q_t`` (m×l; chunk sums accumulated in
    float64); ``Q_{t+1}`` = ``W`` orthonormalised (float64) against ``Q_0..Q_t``.
  - After pass t the basis ``Q = [Q_0..Q_t]`` is orthonormal and ``A Q = [Z_0..Z_t]``
    exactly, so the SVD ``A Q = Û Σ̂ W_R^T`` (n × l(t+1), float64) gives Ritz values ``Σ̂`` —
    lower bounds of the singular values of A, converging from below — and ``U ≈ Û``.
  - It stops when the top-k Ritz values moved by ≤ ``tol`` (relative) in the last pass, after
    ``max_passes`` passes, or when the Krylov space holds the whole row space (exact).

  Cost per pass: one backward pass per example (``products="jacobian"``, see
  :func:`_pass_fn`) plus ``2·n·m·l`` multiply-adds. Memory: the bases ``Q`` (m × l·passes) and
  ``A Q`` (n × l·passes) in float64 plus one chunk's Jacobian (batch_size × m, float32) —
  O((n + m)·k) for fixed passes and chunk size, against O(n·m) for ``Φ0`` and O(n²) for K.
  Measured (``benchmarks/ntk_features.py``, README): top 20 of 10,000 CIFAR images for
  :class:`gs_jax.models.NarLeNet` (m = 249,442), block 50, tol 1e-4 — 5 passes, 392–635 s and
  1.8 GB peak RSS on 2 shared, loaded CPU cores; singular values within 3e-7 of the dense route
  at n = 1,000 and 2,000.

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)``, one scalar logit per example (wrap a two-logit
      net with :func:`logit_difference`).
    params: parameters at which the network is linearised (``θ0``).
    x: (n, …) inputs.
    y: (n,) binary labels ({0,1} or ±1).
    k: number of features.
    block: block size l ≥ k (default ``max(2k, k + 10)``).
    max_passes, tol: stopping rule (above).
    batch_size: examples per chunk (the last chunk is padded and its padding weighted 0).
    products: "jacobian" (default, fastest when l ≫ 1) or "jvp" (memory O(m·l) only).
    key: PRNG key of the random start block (default ``PRNGKey(0)``).
    return_v: also return ``V_k = Φ0^T Y U_k S_k^{-1}`` (:func:`feature_directions`, VJPs in
      chunks; m×k).
    return_info: also return ``{"passes", "ritz_change", "krylov_dim", "converged"}``.
    on_pass: called after every pass with ``{"pass", "krylov_dim", "ritz_change", "s"}``
      (progress of long runs).

  Returns:
    ``(U, S)``, ``(U, S, V)``, with ``info`` appended on request. ``U`` (n, k) float64 with
    orthonormal columns oriented by :func:`orient`; ``S`` (k,) float64, descending.
  """
  x = _check_inputs(x)
  n = x.shape[0]
  yy = _labels_pm1(y, n)
  if not 1 <= k <= n:
    raise ValueError(f"k must be in [1, {n}]; got {k}")
  block = max(2 * k, k + 10) if block is None else int(block)
  if block < k:
    raise ValueError(f"block must be >= k={k}; got {block}")
  if max_passes < 2:
    raise ValueError(f"max_passes must be >= 2; got {max_passes}")
  flat, g = _flat_scalar_fn(apply_fn, params)
  out = jax.eval_shape(g, flat, x[:1])
  if out.shape != (1,):
    raise ValueError(
      f"apply_fn must return one logit per example, shape (n,); for one "
      f"example it returned shape {out.shape} (two logits: logit_difference)"
    )
  m, dtype = flat.size, flat.dtype
  run = _pass_fn(g, flat, products)
  b = batching.chunk_size(n, batch_size)
  rng = np.random.default_rng(
    np.asarray(jax.random.key_data(key if key is not None else jax.random.PRNGKey(0))).ravel()
  )
  Q = _orthonormal_block(rng.standard_normal((m, min(block, m))), None)
  # [Q_0 .. Q_t], filled as passes go; column-major, so untouched columns take no memory
  basis = np.empty((m, block * max_passes), order="F")
  dim, images = 0, []
  prev, change, converged = None, np.inf, False
  for t in range(max_passes):
    Qd = jnp.asarray(Q, dtype)
    Z, W = np.zeros((n, Q.shape[1])), np.zeros((m, Q.shape[1]))
    for i in range(0, n, b):
      xb, cb = x[i : i + b], yy[i : i + b]
      cb = np.concatenate([cb, np.zeros(b - len(cb))])
      Zb, Gb = run(jnp.asarray(batching.pad_rows(xb, b)), jnp.asarray(cb, dtype), Qd)
      Z[i : i + len(xb)] = np.asarray(Zb, np.float64)[: len(xb)]
      W += np.asarray(Gb, np.float64)
    basis[:, dim : dim + Q.shape[1]] = Q
    dim += Q.shape[1]
    images.append(Z)
    AQ = np.concatenate(images, axis=1)
    if AQ.shape[1] >= k:
      Uh, sig, _ = np.linalg.svd(AQ, full_matrices=False)
      if prev is not None:
        change = float(np.max(np.abs(sig[:k] - prev) / np.maximum(sig[:k], 1e-300)))
      prev = sig[:k]
      if on_pass is not None:
        on_pass({"pass": t + 1, "krylov_dim": int(AQ.shape[1]), "ritz_change": change, "s": prev})
    # W's float32 products leave round-off of ~eps·‖W‖ outside the row space of A: a
    # remainder below 1e3·eps is no new direction.
    Q = _orthonormal_block(W, basis[:, :dim], drop_tol=1e3 * float(jnp.finfo(dtype).eps))
    if t >= 1 and change <= tol:
      converged = True
      break
    if Q.shape[1] == 0:  # the Krylov space holds the whole row space: Ritz values are exact
      converged = True
      break
  if prev is None:
    raise ValueError(f"the Krylov space has dimension {AQ.shape[1]} < k={k}: A has rank < k")
  U, S = orient(Uh[:, :k]), np.asarray(prev, np.float64)
  res: list[Any] = [U, S]
  if return_v:
    res.append(feature_directions(apply_fn, params, x, y, U, S, batch_size=b))
  if return_info:
    res.append(
      {
        "passes": t + 1,
        "ritz_change": change,
        "krylov_dim": int(AQ.shape[1]),
        "converged": converged,
        "block": block,
        "products": products,
      }
    )
  return tuple(res)


def top_features(
  apply_fn: ApplyFn,
  params: Params,
  x,
  y,
  k: int,
  *,
  method: str = "matrix_free",
  return_v: bool = False,
  batch_size: int = 64,
  **kwargs,
) -> tuple[Any, ...]:
  """Top-k features of ``YΦ0`` (eq 4) by either route; ``(U, S)`` or ``(U, S, V)``.

  ``method="dense"``: the empirical NTK Gram ``K`` in blocks
  (:func:`empirical_ntk`; ``kwargs``: ``implementation``, ``block_size``, ``backend``), then the top-k
  ``eigh`` of ``Y K Y`` in float64 — time O(n²·m), memory O(n²) (n up to ~10⁴).
  ``method="matrix_free"``: :func:`features_matrix_free` (``kwargs`` passed on) — time
  O(passes·n·(backward + m·l)), memory O((n + m)·l·passes). ``V`` on request as VJPs in
  chunks of ``batch_size`` (:func:`feature_directions`).
  """
  if method == "matrix_free":
    return features_matrix_free(
      apply_fn, params, x, y, k, batch_size=batch_size, return_v=return_v, **kwargs
    )
  if method != "dense":
    raise ValueError(f"method must be 'dense' or 'matrix_free'; got {method!r}")
  x = _check_inputs(x)
  U, S = features(apply_fn, params, x, y, k=k, **kwargs)
  if not return_v:
    return U, S
  return U, S, feature_directions(apply_fn, params, x, y, U, S, batch_size=batch_size)


def response_probe(
  apply_fn: ApplyFn,
  x,
  y,
  U,
  logits0,
  *,
  batch_size: int = 500,
  params_of: Callable[[Any], Params] = lambda state: state.params,
) -> tuple[Callable[[Any, PyTree], Array], dict[str, Array]]:
  """``(probe, data)`` that record the responses ``z(t) = U^T Y (ŷ_t − ŷ_0)`` (eq 4) during
  training, for :func:`gs_jax.train.with_probe` (``hparams["probe"] = data``).

  ``probe(state, data)`` evaluates ``apply_fn(params_of(state), ·)`` (scalar logits, e.g.
  :func:`logit_difference`) on the n examples ``x`` in chunks of ``batch_size`` (``lax.map``
  over a padded (chunks, batch_size, …) array, so memory is one chunk's activations) and
  returns the (k,) responses in float32; padded rows carry zero weight. It is traceable and
  runs inside the compiled training loop.

  Args:
    x: (n, …) model inputs; y: (n,) binary labels; U: (n, k) features (:func:`features`);
    logits0: (n,) logits ``ŷ_0`` at initialisation.
  """
  x = _check_inputs(x)
  n = x.shape[0]
  U = np.asarray(U, np.float64)
  if U.ndim != 2 or U.shape[0] != n:
    raise ValueError(f"U must have shape (n={n}, k); got {U.shape}")
  logits0 = np.asarray(logits0, np.float32)
  if logits0.shape != (n,):
    raise ValueError(f"logits0 must have shape ({n},); got {logits0.shape}")
  b = batching.chunk_size(n, batch_size)
  rows = -(-n // b) * b
  yu = np.zeros((rows, U.shape[1]), np.float32)
  yu[:n] = _labels_pm1(y, n)[:, None] * U
  data = {
    "x": batching.pad_rows(x, rows).reshape((rows // b, b) + x.shape[1:]),
    "yu": jnp.asarray(yu),
    "logits0": jnp.asarray(batching.pad_rows(logits0, rows)),
  }

  def probe(state, d):
    params = params_of(state)
    logits = jax.lax.map(lambda xb: apply_fn(params, xb), d["x"]).reshape(-1)
    return (logits - d["logits0"]) @ d["yu"]

  return probe, data


def feature_input_gradients(apply_fn: ApplyFn, params: Params, x, V) -> Array:
  """Input gradients ``∇_x g_j(x_j)`` of the feature functions ``g_j(x) = ∇_θ ŷ(x; θ)·v_j``.

  Feature j acts on an input as the directional derivative of the logit along ``v_j`` (its
  values on the training set are ``(Φ0 v_j)_i = s_j y_i u_ij``); its gradient with respect to
  the input shows which pixels it responds to.

  Args:
    x: (k, …) one input per feature (e.g. the training example feature j weighs most).
    V: (m, k) feature directions (:func:`feature_directions`).

  Returns:
    (k, …) gradients, one per feature at its own input.
  """
  flat, g = _flat_scalar_fn(apply_fn, params)
  x = _check_inputs(x)
  V = jnp.asarray(V, flat.dtype)
  if V.ndim != 2 or V.shape != (flat.size, x.shape[0]):
    raise ValueError(f"V must have shape (m={flat.size}, k={x.shape[0]}); got {V.shape}")

  def one(xi, v):
    feature = lambda xx: jax.jvp(lambda w: g(w, xx[None])[0], (flat,), (v,))[1]
    return jax.grad(feature)(xi)

  return jax.jit(jax.vmap(one, in_axes=(0, 1)))(x, V)


def region_shares(maps, mask) -> np.ndarray:
  """Share of each map's squared mass inside ``mask``: ``Σ_{mask} m² / Σ m²``.

  Args:
    maps: (k, r, …) — r maps per feature (e.g. input-gradient attributions at r examples),
      pooled: the share is over all r maps of a feature together.
    mask: boolean, broadcastable to one map's shape (…), True inside the region.

  Returns:
    (k,) float64 shares in [0, 1] (0 for a feature whose maps are all zero).
  """
  maps = np.asarray(maps, np.float64)
  if maps.ndim < 3:
    raise ValueError(f"maps must have shape (k, r, ...); got {maps.shape}")
  sq = np.square(maps)
  inside = np.where(np.broadcast_to(np.asarray(mask, bool), maps.shape[2:]), sq, 0.0)
  total = sq.reshape(len(sq), -1).sum(axis=1)
  return np.where(
    total > 0, inside.reshape(len(sq), -1).sum(axis=1) / np.maximum(total, 1e-300), 0.0
  )


def feature_region_shares(
  apply_fn: ApplyFn, params: Params, x, U, V, mask, *, per_feature: int = 8, centre=None
) -> np.ndarray:
  """Where each feature looks: the share of its input attribution inside a region of the input.

  Feature j acts on an input as ``g_j(x) = ∇_θ ŷ(x; θ)·v_j`` (:func:`feature_input_gradients`).
  Its attribution at a training example is ``∇_x g_j(x_i) ⊙ (x_i − c)`` (gradient × input, the
  first-order split of ``g_j(x_i) − g_j(c)`` over pixels), with ``c`` = ``centre`` (default: the
  mean of ``x``): a region in which the data do not vary (e.g. a blank half) gets none of
  it, whatever the gradient there. The share is pooled over the ``per_feature`` examples
  with the largest ``|u_ij|`` (:func:`region_shares`).

  Args:
    x: (n, …) the examples of ``U``; U: (n, k); V: (m, k) (:func:`feature_directions`).
    mask: boolean of one input's shape (…), the region.

  Returns:
    (k,) shares in [0, 1].
  """
  x = _check_inputs(x)
  U = np.asarray(U)
  n, k = U.shape
  if x.shape[0] != n:
    raise ValueError(f"x has {x.shape[0]} examples and U {n} rows")
  r = min(per_feature, n)
  idx = np.argsort(-np.abs(U), axis=0)[:r].T  # (k, r)
  V = jnp.asarray(V)
  grads = feature_input_gradients(
    apply_fn, params, x[idx.ravel()], jnp.repeat(V, r, axis=1)
  )  # (k·r, …)
  c = jnp.mean(x, axis=0) if centre is None else jnp.asarray(centre)
  attr = np.asarray(grads) * np.asarray(x[idx.ravel()] - c)
  return region_shares(attr.reshape((k, r) + x.shape[1:]), mask)

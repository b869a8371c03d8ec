"""Feature dynamics of two-moons training: Figure 1(d) (docs/protocols.md §3.2).

Per seed, at the initialisation θ0, the empirical NTK Gram matrix ``K = Φ0 Φ0^T`` (float64)
defines two views of "what the network has learned", both recorded at *every* training step
inside the compiled scan (:func:`response_objective`):

- our named features (:func:`identify_features`): a horizontal ``u1`` and a vertical ``u2``
  in the strongest singular space of ``YΦ0`` (Def. 1, eq 4), with responses
  ``z = u^T Y (ŷ_t − ŷ_0)`` (centred logits);
- the released code's view (:func:`gs_jax.ntk.gram_eigenvectors`): columns ``c`` (0-based,
  default 1 and 6) of the left singular vectors ``U_K`` of ``K`` itself, with
  ``r_c = |ŷ_t · U_K[:, c]|`` (uncentred logits, absolute value).

The settings (Δ, SD coefficient) share one compiled trainer; :func:`setup` builds a setting's
data, initial states and per-seed features, :func:`train_setting` trains all seeds at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.nn import models
from gs_jax.theory import ntk
from gs_jax import training as train
from gs_jax.data import toy


def grid(resolution: int = 60, lim: float = 2.0) -> np.ndarray:
  """``resolution²`` points of ``[−lim, lim]²`` (x1 varies fastest), shape (resolution², 2)."""
  g = np.linspace(-lim, lim, resolution)
  return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def identify_features(
  apply_fn, params0, x, y, *, num_candidates: int = 3, columns=(1, 6), grid_points=None
) -> dict:
  """One seed's horizontal (z1) and vertical (z2) features, and the released view's columns.

  With ``YΦ0 = U S V^T`` (Def. 1, eq 4; ``U, S`` from the float64 ``eigh`` of ``Y K Y``) and
  ``U_k`` its ``k = num_candidates`` strongest columns: the strongest features are smooth
  functions that each mix a constant, x1 and x2, so none is purely horizontal or vertical.
  We project the label-weighted centred coordinates ``t_c = Y (x_c − mean x_c)`` onto
  ``span(U_k)``:

      u1 ∝ U_k U_k^T t_1                     (horizontal),
      u2 ∝ (I − u1 u1^T) U_k U_k^T t_2       (vertical, Gram–Schmidt against u1),

  unit vectors oriented so that ``Σ_i u_i > 0`` (the feature fits the labels).
  ``captured_c = ‖U_k U_k^T t_c‖² / ‖t_c‖²`` is the share of ``t_c`` inside the top-k space.
  The response to ``u`` is ``z = u^T Y (ŷ_t − ŷ_0)`` (eq 4). A feature's function on the
  plane is the minimum-norm linearised function equal to ``y_i u_i`` on the data,
  ``g(x) = ∇_θ f(x; θ0) · V_k S_k^{-1} a`` with mixing weights ``a = U_k^T u`` (JVPs along
  ``v_j = Φ0^T Y u_j / s_j``); ``corr`` are the correlations of ``g`` with x1 and x2 on
  ``grid_points``.

  The released view's column ``c`` of ``U_K`` is ``± Y u_c`` (:func:`gs_jax.ntk.gram_eigenvectors`),
  i.e. feature ``c`` of ``YΦ0`` itself (``a = e_c``); its function and correlations are
  computed the same way.

  Args:
    apply_fn: ``apply_fn(params, x) -> (n,)`` logits (evaluated in float64 here).
    params0: parameters at initialisation; x: (n, 2) inputs; y: (n,) labels ±1.
    num_candidates: k ≥ 2.
    columns: 0-based columns of ``U_K`` for the released view.
    grid_points: (G, 2) points for the feature functions (default :func:`grid`).

  Returns:
    dict with ``U`` (n, 2) = [u1, u2], ``a`` (2, k), ``captured`` (2,), ``strengths`` (the
    ``s_j`` up to one past the largest index used), ``corr`` (2, 2) rows z1, z2 and columns x1, x2,
    ``g`` (2, G); ``U_released`` (n, len(columns)), ``corr_released``, ``g_released``.
  """
  from gs_jax.base._compat import enable_x64
  from jax.flatten_util import ravel_pytree

  grid_points = grid() if grid_points is None else np.asarray(grid_points)
  columns = tuple(int(c) for c in columns)
  k_all = max(num_candidates, max(columns, default=0) + 1)
  with enable_x64():
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params0)
    x64 = jnp.asarray(x, jnp.float64)
    K = ntk.empirical_ntk(apply_fn, p64, x64)
    # One more strength than needed: its gap to the last used column is worth reporting.
    U, S = ntk.features_from_kernel(K, y, min(k_all + 1, len(y)))
    U, S, strengths = U[:, :k_all], S[:k_all], S
    V = ntk.feature_directions(apply_fn, p64, x64, y, U, S)
    flat, unravel = ravel_pytree(p64)
    gx = jnp.asarray(grid_points, jnp.float64)
    g_sing = np.asarray(
      jax.vmap(  # (k_all, G)
        lambda v: jax.jvp(lambda w: apply_fn(unravel(w), gx), (flat,), (v,))[1]
      )(V.T)
    )
  U_released, _ = ntk.gram_eigenvectors(K, columns)
  Uk = U[:, :num_candidates]
  yy = np.asarray(y, np.float64)
  xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
  t1, t2 = yy * xc[:, 0], yy * xc[:, 1]
  p1, p2 = Uk @ (Uk.T @ t1), Uk @ (Uk.T @ t2)
  captured = [float(p1 @ p1 / (t1 @ t1)), float(p2 @ p2 / (t2 @ t2))]
  u1 = p1 / np.linalg.norm(p1)
  u2 = p2 - (u1 @ p2) * u1
  u2 /= np.linalg.norm(u2)
  u1, u2 = (u if u.sum() >= 0 else -u for u in (u1, u2))
  a = np.stack([Uk.T @ u1, Uk.T @ u2])  # (2, k)
  g = (a / S[None, :num_candidates]) @ g_sing[:num_candidates]  # (2, G)
  g_released = g_sing[list(columns)] / S[list(columns), None]

  def corr(funcs):
    return np.array([[np.corrcoef(f, grid_points[:, c])[0, 1] for c in (0, 1)] for f in funcs])

  return {
    "U": np.stack([u1, u2], 1),
    "a": a,
    "captured": captured,
    "strengths": strengths,
    "corr": corr(g),
    "g": g,
    "U_released": U_released,
    "corr_released": corr(g_released),
    "g_released": g_released,
  }


def response_objective(logits, batch, params, step, hparams):
  """:func:`gs_jax.train.binary_objective` plus both views' responses at θ_t as metrics.

  The objective sees the logits before the step's update, so the history holds θ_0 … θ_{T−1}
  (as the released code, which records ``ŷ`` before ``optimizer.step()``). ``batch`` carries
  per seed ``U`` (n, 2), ``logits0`` (n,) and ``U_released`` (n, c):
  ``z = U^T Y (ŷ − ŷ_0)`` (eq 4) and ``released = |ŷ · U_released|``.
  """
  loss, metrics = train.binary_objective(logits, batch, params, step, hparams)
  z = ((logits - batch["logits0"]) * batch["y"]) @ batch["U"]
  return loss, {**metrics, "z": z, "released": jnp.abs(logits @ batch["U_released"])}


def make_trainer(*, width: int, lr: float, momentum: float, weight_decay: float, chunk: int):
  """``(model, init, train)``: the 2 → width → 1 ReLU net (PyTorch init), SGD with coupled
  weight decay, and the seed trainer with :func:`response_objective`."""
  model = models.two_layer_relu(width)
  tx = train.make_optimizer("sgd", lr, momentum=momentum, weight_decay=weight_decay)
  return (
    model,
    train.make_seed_init(model, tx),
    train.make_seed_trainer(model.apply, tx, response_objective, chunk=chunk),
  )


def setup(
  model, init, seeds, delta: float, *, num_candidates: int, columns, grid_points
) -> tuple[dict, object, list]:
  """Data, initial states and per-seed features of one Δ (they do not depend on SD).

  Returns ``(batches, states0, feats)``: ``batches`` (every array with a leading seed axis:
  ``x``, ``y``, ``U``, ``U_released``, ``logits0`` at θ0 in float32), the initial states
  and the per-seed :func:`identify_features` dicts (features of the exact θ0 trained from).
  """
  data = toy.two_moons_seeds(seeds, delta)
  states0 = init(jax.vmap(jax.random.PRNGKey)(jnp.asarray(list(seeds))), data)
  params0 = jax.device_get(states0.params)
  apply_fn = lambda p, xx: model.apply({"params": p}, xx)
  feats = [
    identify_features(
      apply_fn,
      jax.tree_util.tree_map(lambda a: a[i], params0),
      data["x"][i],
      data["y"][i],
      num_candidates=num_candidates,
      columns=columns,
      grid_points=grid_points,
    )
    for i in range(len(data["x"]))
  ]
  logits0 = jax.vmap(apply_fn)(states0.params, jnp.asarray(data["x"]))
  batches = {
    **data,
    "logits0": np.asarray(logits0, np.float32),
    "U": np.stack([f["U"] for f in feats]).astype(np.float32),
    "U_released": np.stack([f["U_released"] for f in feats]).astype(np.float32),
  }
  return batches, states0, feats


def train_setting(model, trainer, states0, batches, sd_lambda: float, steps: int, **kwargs):
  """Trains every seed of one setting; returns (states, history, trajectories).

  ``kwargs`` go to the trainer (``desc``, ``progress``, ``checkpoint``, ``on_chunk``).
  ``trajectories`` holds ``z`` and ``released`` of shape (S, steps + 1, ·) at θ_0 … θ_T (the
  history's θ_0 … θ_{T−1} and the final state, computed the same way) and the final
  ``train_accuracy`` (S,).
  """
  states, history = trainer(
    states0, batches, {"sd_lambda": jnp.float32(sd_lambda)}, steps, **kwargs
  )
  logits = np.asarray(
    jax.vmap(lambda p, xx: model.apply({"params": p}, xx))(states.params, jnp.asarray(batches["x"]))
  )
  y = batches["y"]
  z_end = np.einsum("sn,snk->sk", (logits - batches["logits0"]) * y, batches["U"])
  r_end = np.abs(np.einsum("sn,snk->sk", logits, batches["U_released"]))
  traj = {
    "z": np.concatenate([history["z"], z_end[:, None]], axis=1),
    "released": np.concatenate([history["released"], r_end[:, None]], axis=1),
    "train_accuracy": np.mean((logits > 0) == (y > 0), axis=1),
  }
  return states, history, traj

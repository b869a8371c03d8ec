"""Gradient starvation measured on trained models: Theorem 2 and Figure 5 (docs/protocols.md §1,
§3.2).

Trained models are compared with the dual theory of :mod:`gs_jax.dual`:

- the linear model ``ŷ = Φ0 θ`` of eq 3 (:class:`gs_jax.models.LinearModel`) on the
  two-feature problem ``YΦ0 = U(δ) diag(s1, s2) V^T`` (eq 15, :func:`gs_jax.data.toy.coupled_features`),
  trained from θ = 0 by full-batch gradient descent on eq 5 (ridge) or eq 17 (spectral
  decoupling) — :func:`train_linear`;
- finite two-layer ReLU nets in NTK parametrisation on two label-+1 clusters
  (:func:`gs_jax.data.toy.clusters`), centred, with the ridge ``λ/2‖θ − θ0‖²``, whose first
  feature is strengthened at fixed U (:class:`gs_jax.models.FeatureScaledNet`) or by scaling
  the first cluster's inputs — :func:`network_problems`, :func:`train_network`,
  :func:`evaluate_network`;
- the dual gradient ascent of Figure 5 (Euler steps of eq 9) — :func:`dual_ascent`.

All of it runs in float64: call it inside ``gs_jax._compat.enable_x64()``.
Every training loop is :func:`gs_jax.train.make_seed_trainer` (configurations of a sweep are
its "seeds"), with :func:`gs_jax.losses.theory_objective`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from gs_jax.theory import dual, ntk
from gs_jax.nn import losses, models
from gs_jax.base import jsonio, stats
from gs_jax import training as train
from gs_jax.data import toy

PENALTIES = ("ridge", "sd")
# The dual dynamics whose fixed point is the optimum of each training objective.
DYNAMICS_OF = {"ridge": "exact", "sd": "sd"}


def dual_responses(U, S, lam, dynamics: str = "exact") -> np.ndarray:
  """The predicted responses ``z* = responses_at(fixed_point(U, S, λ))`` (eq 9–11, eq 18)."""
  alpha = dual.fixed_point(U, S, lam, dynamics=dynamics)
  return np.asarray(dual.responses_at(U, S, lam, alpha, dynamics))


def penalty_hparams(lam: float, penalty: str) -> dict:
  """``hparams`` of :func:`gs_jax.losses.theory_objective`: eq 5 (``"ridge"``) or eq 17 (``"sd"``)."""
  if penalty not in PENALTIES:
    raise ValueError(f"penalty must be one of {PENALTIES}; got {penalty!r}")
  return {
    "ridge": jnp.float64(lam if penalty == "ridge" else 0.0),
    "sd": jnp.float64(lam if penalty == "sd" else 0.0),
  }


def curvature_bound(s_max: float, lam: float, penalty: str) -> float:
  """Upper bound L of the Hessian of eq 5 / eq 17 in θ for a model with top strength s_max.

  The logistic loss has curvature ≤ 1/4 per example, so eq 5 has ``L ≤ s_max²/4 + λ`` and
  eq 17 (penalty ``λ/2‖Φ0θ‖²``) ``L ≤ s_max²(1/4 + λ)``; gradient descent with step 1/L
  converges monotonically.
  """
  return s_max**2 / 4 + lam if penalty == "ridge" else s_max**2 * (0.25 + lam)


def _with_logits(logits, batch, params, step, hparams):
  loss, metrics = losses.theory_objective(logits, batch, params, step, hparams)
  return loss, {**metrics, "logits": logits}


def train_linear(
  phi,
  y,
  *,
  lam: float,
  penalty: str,
  lr: float,
  steps: int,
  record_logits: bool = False,
  chunk: int = 5000,
  progress: bool = True,
  desc: str | None = None,
  checkpoint=None,
):
  """Trains ``ŷ = Φ0 θ`` from θ = 0 by full-batch GD (``optax.sgd(lr)``) on eq 5 or eq 17.

  Every ``Φ0`` of the stack ``phi`` (C, n, m) is one "seed" of
  :func:`gs_jax.train.make_seed_trainer`, all trained in one compiled program.

  Returns:
    ``(logits (C, n), grad_norm (C,), history)`` at the end; ``history`` holds ``loss`` and
    ``nll`` per step (C, steps), and with ``record_logits`` the logits *before* every step,
    (C, steps, n).
  """
  model = models.LinearModel()
  tx = optax.sgd(lr)
  phi = jnp.asarray(phi, jnp.float64)
  batches = {"x": phi, "y": jnp.broadcast_to(jnp.asarray(y, jnp.float64), phi.shape[:2])}
  states = train.make_seed_init(model, tx)(
    jax.random.split(jax.random.PRNGKey(0), len(phi)), batches
  )
  objective = _with_logits if record_logits else losses.theory_objective
  hp = penalty_hparams(lam, penalty)
  trainer = train.make_seed_trainer(model.apply, tx, objective, chunk=chunk)
  states, history = trainer(
    states, batches, hp, steps, desc=desc, progress=progress, checkpoint=checkpoint
  )
  logits, _, grad_norm = train.objective_at(model.apply, objective, states, batches, hp)
  return np.asarray(logits), np.asarray(grad_norm), history


def dual_ascent(U, S, lam: float, *, lr: float, steps: int, every: int, clip: float = 1e-15):
  """Gradient ascent on the dual eq 8 (Euler steps of eq 9) from α = 1/2, the dual point of θ = 0.

  ``α ← clip(α + lr·F(α), clip, 1 − clip)`` with ``F = dual.vector_field(…, "exact")``.

  Returns:
    ``(z_path, z_end)``: responses ``z = S² U^T α/λ`` (eq 11) at steps 0, every, 2·every, …
    (``steps // every + 1``, k) and at the end (k,).
  """

  @jax.jit
  def run(U, S):
    return train.field_ascent(
      lambda a: dual.vector_field(U, S, lam, a, "exact"),
      jnp.full(U.shape[0], 0.5),
      lr,
      steps,
      project=lambda a: jnp.clip(a, clip, 1.0 - clip),
      observe=lambda a: dual.responses_at(U, S, lam, a, "exact"),
      every=every,
    )

  alpha, z_path = run(jnp.asarray(U, jnp.float64), jnp.asarray(S, jnp.float64))
  z_end = dual.responses_at(U, S, lam, alpha, "exact")
  return np.asarray(z_path), np.asarray(z_end)


def _dz2_ds1sq(z2, s1):
  """Finite-difference ``dz2/d(s1²)`` along a sweep (sorted by s1), as ``np.gradient``."""
  order = np.argsort(s1)
  out = np.empty(len(s1))
  out[order] = np.gradient(np.asarray(z2)[order], np.asarray(s1)[order] ** 2)
  return out


def linear_check(lcfg, *, chunk: int = 5000, progress: bool = True, checkpoints=None) -> dict:
  """Theorem 2 on the linear model: trained responses vs the dual fixed point over a sweep of s1.

  ``lcfg`` has the fields of ``configs.theorem2``'s ``linear`` (``s1``, ``s2``, ``delta``,
  ``m``, ``seed``, ``lam``, ``steps``). Both penalties are trained: eq 5 against
  ``fixed_point(…, "exact")`` (eq 9) and eq 17 against ``"sd"`` (eq 18); each with step 1/L
  (:func:`curvature_bound`) for ``steps`` steps. ``checkpoints`` maps a penalty to a
  :class:`gs_jax.checkpoint.Checkpointer` (resume).

  Returns a dict per penalty with, per s1, the trained and predicted responses, their
  relative error, the gradient norm at the end, ``dz2/d(s1²)`` by finite differences (trained
  and dual) and by autodiff through the fixed point (``dual.starvation``), and for eq 5 the
  Taylor fixed point (eq 10).
  """
  prob = toy.coupled_features(lcfg.s1, lcfg.s2, delta=lcfg.delta, m=lcfg.m, seed=lcfg.seed)
  U, y, S_all = prob["U"], prob["y"], prob["S"]
  out = {}
  for penalty in PENALTIES:
    dyn = DYNAMICS_OF[penalty]
    lr = 1.0 / curvature_bound(float(S_all[:, 0].max()), lcfg.lam, penalty)
    logits, grad_norm, _ = train_linear(
      prob["phi"],
      y,
      lam=lcfg.lam,
      penalty=penalty,
      lr=lr,
      steps=lcfg.steps,
      chunk=chunk,
      progress=progress,
      desc=f"linear {penalty}",
      checkpoint=(checkpoints or {}).get(penalty),
    )
    z_tr = np.asarray(ntk.responses(U, y, logits))
    z_du = np.stack([dual_responses(U, S, lcfg.lam, dyn) for S in S_all])
    rel = np.linalg.norm(z_tr - z_du, axis=1) / np.linalg.norm(z_du, axis=1)
    res = {
      "z_trained": z_tr,
      "z_dual": z_du,
      "rel_error": rel,
      "max_rel_error": float(rel.max()),
      "grad_norm": grad_norm,
      "dz2_ds1sq_trained_fd": _dz2_ds1sq(z_tr[:, 1], S_all[:, 0]),
      "dz2_ds1sq_dual_fd": _dz2_ds1sq(z_du[:, 1], S_all[:, 0]),
      "dz2_ds1sq_dual_autodiff": np.array(
        [np.asarray(dual.starvation(U, S, lcfg.lam, dynamics=dyn))[0, 1] for S in S_all]
      ),
    }
    if penalty == "ridge":
      res["z_taylor"] = np.stack([dual_responses(U, S, lcfg.lam, "taylor") for S in S_all])
    out[penalty] = jsonio.to_builtin(res)
  return out


# --------------------------------------------------------------------------- finite networks


def sweep_points(ncfg) -> list[tuple[float, float]]:
  """The ``(c, κ)`` of every configuration: κ at fixed c (``sweep="kappa"``), or the first
  cluster's scale c at κ = 1 (``sweep="input"``)."""
  if ncfg.sweep == "kappa":
    return [(float(ncfg.c), float(k)) for k in ncfg.kappas]
  if ncfg.sweep == "input":
    return [(float(c), 1.0) for c in ncfg.scales]
  raise ValueError(f"sweep must be 'kappa' or 'input'; got {ncfg.sweep!r}")


def network_problems(ncfg, width: int):
  """The net of width ``width`` and every (seed, sweep point) to train, seed-major.

  For each seed, θ0 is the NTK-parametrised net's initialisation from ``PRNGKey(seed)``
  (:class:`gs_jax.models.NTKTwoLayerReLU`); for each sweep point, ``U, S`` come from the
  empirical NTK at θ0 on that point's data (``gs_jax.ntk.features``, all n features), ``v``
  is the first right singular vector, and the effective strengths are ``(κ s1, s2, …)``.

  Returns:
    ``(net, problems)``: a :class:`gs_jax.models.FeatureScaledNet` and a list of dicts with
    ``seed, c, kappa, x, y, U, S`` (effective) ``, variables`` (initial) and ``logits0``.
  """
  model = models.NTKTwoLayerReLU(width=int(width), bias_scale=ncfg.bias_scale)
  f = lambda p, x: model.apply({"params": p}, x)
  points = sweep_points(ncfg)
  data = {
    c: tuple(
      jnp.asarray(a)
      for a in toy.clusters(
        c, n_per_cluster=ncfg.n_per_cluster, angle_deg=ncfg.angle_deg, jitter=ncfg.jitter
      )
    )
    for c, _ in points
  }
  problems, unravel = [], None
  for seed in range(ncfg.seeds):
    p0 = model.init(jax.random.PRNGKey(seed), data[points[0][0]][0])["params"]
    flat0, unravel = ravel_pytree(p0)
    for c, kappa in points:
      x, y = data[c]
      U, S = ntk.features(f, p0, x, y)
      v1 = ntk.feature_directions(f, p0, x, y, U[:, :1], S[:1])[:, 0]
      S = S.copy()
      S[0] *= kappa
      problems.append(
        {
          "seed": seed,
          "c": c,
          "kappa": kappa,
          "x": x,
          "y": y,
          "U": U,
          "S": S,
          "variables": models.FeatureScaledNet.variables(flat0, v1, kappa),
          "logits0": f(p0, x),
        }
      )
  return models.FeatureScaledNet(f, unravel), problems


def train_network(
  net,
  problems,
  *,
  lam: float,
  steps: int,
  momentum: float = 0.0,
  chunk: int = 5000,
  progress: bool = True,
  desc: str | None = None,
  checkpoint=None,
):
  """Trains every problem (one "seed" each) by full-batch GD on eq 5 with the centred logits.

  Step ``1/(max κ²s1²/4 + λ)`` (:func:`curvature_bound`), heavy-ball ``momentum`` optional
  (same minimiser). Returns ``(logits (P, n), grad_norm (P,), history)`` at the end.
  """
  s_max = max(float(p["S"][0]) for p in problems)
  tx = optax.sgd(1.0 / curvature_bound(s_max, lam, "ridge"), momentum=momentum or None)
  stack = lambda *a: jnp.stack(a)
  states = jax.tree_util.tree_map(
    stack, *[train.make_state(p["variables"], tx, jax.random.PRNGKey(p["seed"])) for p in problems]
  )
  batches = jax.tree_util.tree_map(
    stack, *[{"x": p["x"], "y": p["y"], "logits0": p["logits0"]} for p in problems]
  )
  hp = penalty_hparams(lam, "ridge")
  trainer = train.make_seed_trainer(net.apply, tx, losses.theory_objective, chunk=chunk)
  states, history = trainer(
    states, batches, hp, steps, desc=desc, progress=progress, checkpoint=checkpoint
  )
  logits, _, grad_norm = train.objective_at(net.apply, losses.theory_objective, states, batches, hp)
  return np.asarray(logits), np.asarray(grad_norm), history


def evaluate_network(ncfg, problems, logits, grad_norm) -> tuple[dict, dict]:
  """Trained responses ``z = U^T Y (ŷ − ŷ0)`` against ``dual_responses(U, S, λ, "exact")``.

  Returns ``(metrics, per_seed)``: ``per_seed`` arrays have shape (seeds, sweep points[, 2]);
  a seed's relative error is its mean over the sweep, ``dz2/d(s1²)`` (finite differences
  along the sweep for the trained nets and the dual, autodiff through the fixed point) is
  negative when feature 1 starves feature 2. ``metrics`` summarise them over seeds with
  :func:`gs_jax.stats.mean_std` (sample std) and the fraction of negative slopes.
  """
  lam, half = ncfg.lam, ncfg.n_per_cluster
  rows = {
    k: []
    for k in (
      "s1",
      "s2",
      "s3",
      "coupling",
      "z_trained",
      "z_dual",
      "rel_error",
      "rel_error_top2",
      "dz2_ds1sq_autodiff",
      "grad_norm",
    )
  }
  for p, lg, gn in zip(problems, logits, grad_norm):
    U, S = p["U"], p["S"]
    z_tr = np.asarray(ntk.responses(U, p["y"], lg, p["logits0"]))
    z_du = dual_responses(U, S, lam, "exact")
    for k, v in (
      ("s1", S[0]),
      ("s2", S[1]),
      ("s3", S[2]),
      ("coupling", np.linalg.norm(U[half:, 0])),
      ("z_trained", z_tr[:2]),
      ("z_dual", z_du[:2]),
      ("rel_error", np.linalg.norm(z_tr - z_du) / np.linalg.norm(z_du)),
      ("rel_error_top2", np.linalg.norm(z_tr[:2] - z_du[:2]) / np.linalg.norm(z_du[:2])),
      ("dz2_ds1sq_autodiff", np.asarray(dual.starvation(U, S, lam, dynamics="exact"))[0, 1]),
      ("grad_norm", gn),
    ):
      rows[k].append(v)
  shape = (ncfg.seeds, len(problems) // ncfg.seeds)
  per_seed = {k: np.asarray(v, np.float64).reshape(shape + np.shape(v[0])) for k, v in rows.items()}
  per_seed["dz2_ds1sq_trained_fd"] = np.stack(
    [_dz2_ds1sq(z[:, 1], s) for z, s in zip(per_seed["z_trained"], per_seed["s1"])]
  )
  per_seed["dz2_ds1sq_dual_fd"] = np.stack(
    [_dz2_ds1sq(z[:, 1], s) for z, s in zip(per_seed["z_dual"], per_seed["s1"])]
  )
  metrics = {
    k: stats.mean_std(per_seed[k].mean(axis=1))
    for k in (
      "rel_error",
      "rel_error_top2",
      "dz2_ds1sq_trained_fd",
      "dz2_ds1sq_dual_fd",
      "dz2_ds1sq_autodiff",
    )
  }
  metrics.update(
    rel_error_max=float(per_seed["rel_error"].max()),
    frac_trained_fd_negative=float(np.mean(per_seed["dz2_ds1sq_trained_fd"] < 0)),
    frac_dual_fd_negative=float(np.mean(per_seed["dz2_ds1sq_dual_fd"] < 0)),
    frac_autodiff_negative=float(np.mean(per_seed["dz2_ds1sq_autodiff"] < 0)),
    max_grad_norm=float(per_seed["grad_norm"].max()),
  )
  return metrics, jsonio.to_builtin(per_seed)

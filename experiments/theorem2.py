"""Theorem 2 checked against trained models: linear (exact) and finite-width networks.

    python -m experiments.theorem2                       # both parts, ~minutes on 2 CPU cores
    python -m experiments.theorem2 --part=linear
    python -m experiments.theorem2 --part=network --widths=64,256,1024 --seeds=2

(a) Linear model (docs/protocols.md §1, eq 3–5, eq 15). ``Φ0 = Y U(δ) S V^T`` with ``U(δ)`` the
coupling matrix of eq 15, ``S = diag(s1, s2)`` and ``V`` (m×2) random orthonormal; the model
``ŷ = Φ0 θ`` (θ0 = 0) is trained by full-batch gradient descent on eq 5 (sum of logistic
losses + ``λ/2‖θ‖²``), through ``gs_jax.train.make_train_step``/``fit``, until the gradient
norm is at float64 round-off. Its responses ``z = U^T Y ŷ`` are compared with
``dual.fixed_point(U, S, λ, dynamics="exact")`` (eq 8–9, eq 11), which is the exact optimum of
the same problem, for a sweep of s1 at fixed s2: z2 falls as s1 grows (Theorem 2, feature 1
starves feature 2). The same model trained with spectral decoupling (eq 17: ``λ/2‖ŷ‖²``
instead of the ridge) is compared with ``dynamics="sd"``: z2 stays flat.

(b) Finite networks. A two-layer ReLU net in NTK parametrisation
(``gs_jax.models.NTKTwoLayerReLU``, bias-free by default), centred output ``f(x;θ) − f(x;θ0)``
and ridge ``λ/2‖θ − θ0‖²`` (docs/protocols.md §1), on 2-D data: all labels +1 as in Figure 5, one
cluster around ``c·(1, 0)`` and one around ``(cos φ, sin φ)`` (``--n_per_cluster`` jittered
points each). For each width and seed, ``U, S`` come from the empirical NTK at init
(``gs_jax.ntk.features``, all n features). The first feature's strength is then scaled:

- ``--sweep=kappa`` (default): by κ at *fixed U*, the intervention Theorem 2 is about: the
  net is reparametrised as ``θ = θ0 + (I + (κ−1) v1 v1^T) ω`` (:class:`FeatureScaledNet`,
  ridge on ω), which turns ``YΦ0 = U S V^T`` into ``U diag(κ s1, s2, …) V^T``;
- ``--sweep=input``: by scaling the first cluster's inputs by c (U changes with c too: the
  clusters decouple as c grows, which releases feature 2; reported, not hidden).

Each net is trained by full-batch GD (``gs_jax.train.make_train_step``/``fit``, vmapped over
seeds × sweep values) to convergence, and its responses ``z = U^T Y (ŷ − ŷ0)`` are compared
with the dual prediction ``responses_at(U, S, λ, fixed_point(U, S, λ, "exact"))``. The
relative error should shrink as the width grows (the NTK moves less during training). The
sign of ``dz2/d(s1²)`` is estimated from the trained nets and from the dual by differences
along the sweep, and from ``dual.starvation`` (autodiff through the fixed point).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from experiments import common


# ---------------------------------------------------------------------------------------------
# shared: GD on a sum-loss objective through gs_jax.train


def _objective(logits, batch, params, step, hparams):
  """Eq 5 / eq 17 with centred logits: ``Σ softplus(−y(ŷ−ŷ0)) + ridge/2‖θ−θ0‖² + sd/2‖ŷ−ŷ0‖²``.

  ``batch`` carries ``y`` (±1), ``logits0`` (ŷ at θ0) and ``params0`` (θ0); ``hparams`` the
  coefficients ``ridge`` (λ of eq 5) and ``sd`` (λ of eq 17), sum-loss convention.
  """
  import jax.numpy as jnp

  from gs_jax import losses, ntk

  del step
  yc = logits - batch["logits0"]
  nll = losses.logistic_loss(yc, batch["y"], kind="pm1", reduction="sum")
  loss = (nll + ntk.ridge_from_init(params, batch["params0"], hparams["ridge"])
          + 0.5 * hparams["sd"] * jnp.sum(jnp.square(yc)))
  return loss, {"nll": nll}


def _train_gd(model, keys, batches, hparams, lr, num_steps, progress, desc, momentum=0.0):
  """Full-batch GD (optax.sgd, no momentum) of every config in ``batches`` at once.

  Returns the final params and the gradient norm of the objective at them.
  """
  import jax
  import jax.numpy as jnp
  import optax

  from gs_jax import train

  tx = optax.sgd(lr, momentum=momentum or None)
  trainer = train.make_seed_trainer(model, tx, _objective, chunk=5000)
  states, hist = trainer(keys, batches, hparams, num_steps, desc=desc, progress=progress)

  def grad_norm(params, batch):
    def loss(p):
      return _objective(model.apply({"params": p}, batch["x"]), batch, p, 0, hparams)[0]
    g = jax.grad(loss)(params)
    return jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(g)))

  gn = jax.vmap(grad_norm)(states.params, batches)
  logits = jax.vmap(lambda p, x: model.apply({"params": p}, x))(states.params, batches["x"])
  return states.params, np.asarray(logits), np.asarray(gn), np.asarray(hist["loss"][:, -1])


# ---------------------------------------------------------------------------------------------
# (a) linear model


def linear_check(s1_values=(2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0), s2=2.0, delta=0.5,
                 lam=0.01, m=3, num_steps=100_000, seed=0, progress=True):
  """Trained linear model ``ŷ = Φ0 θ`` vs the exact dual fixed point, over a sweep of s1."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from jax.experimental import enable_x64

  from gs_jax import dual, ntk

  class Linear(nn.Module):  # ŷ = Φ0 θ with the rows of Φ0 as inputs; θ0 = 0
    @nn.compact
    def __call__(self, x, train=False):
      del train
      return x @ self.param("theta", nn.initializers.zeros, (x.shape[-1],), x.dtype)

  s1_values = np.asarray(s1_values, np.float64)
  y = np.ones(2)
  U = np.asarray(dual.coupling_matrix(delta))
  V = np.linalg.qr(np.random.default_rng(seed).normal(size=(m, 2)))[0]
  phis = np.stack([np.diag(y) @ U @ np.diag([a, s2]) @ V.T for a in s1_values])   # (C, 2, m)
  C = len(s1_values)
  out = {"s1": s1_values.tolist(), "s2": s2, "delta": delta, "lam": lam, "m": m,
         "num_steps": num_steps}
  with enable_x64():
    batches = {"x": jnp.asarray(phis), "y": jnp.ones((C, 2)), "logits0": jnp.zeros((C, 2)),
               "params0": {"theta": jnp.zeros((C, m))}}
    keys = jnp.stack([jax.random.PRNGKey(0)] * C)
    smax = float(s1_values.max())
    for name, hp, dyn in (("erm", {"ridge": lam, "sd": 0.0}, "exact"),
                          ("sd", {"ridge": 0.0, "sd": lam}, "sd")):
      # Curvature of eq 5 ≤ s_max²/4 + λ (eq 17: s_max²(1/4 + λ)); lr = 1/L.
      L = smax**2 / 4 + lam if name == "erm" else smax**2 * (0.25 + lam)
      hp = jax.tree_util.tree_map(jnp.float64, hp)
      t0 = time.time()
      _, logits, gnorm, _ = _train_gd(Linear(), keys, batches, hp, 1.0 / L, num_steps, progress,
                                      f"linear {name}")
      z_tr = np.stack([np.asarray(ntk.responses(U, y, lg)) for lg in logits])
      z_dual, z_taylor, M = [], [], []
      for a in s1_values:
        S = np.array([a, s2])
        alpha = dual.fixed_point(U, S, lam, dynamics=dyn)
        z_dual.append(np.asarray(dual.responses_at(U, S, lam, alpha, dyn)))
        if name == "erm":
          at = dual.fixed_point(U, S, lam, dynamics="taylor")
          z_taylor.append(np.asarray(dual.responses_at(U, S, lam, at, "taylor")))
        M.append(float(np.asarray(dual.starvation(U, S, lam, dynamics=dyn))[0, 1]))
      z_dual = np.stack(z_dual)
      rel = np.linalg.norm(z_tr - z_dual, axis=1) / np.linalg.norm(z_dual, axis=1)
      s1sq = s1_values**2
      out[name] = {"z_trained": z_tr.tolist(), "z_dual": z_dual.tolist(),
                   "rel_error": rel.tolist(), "max_rel_error": float(rel.max()),
                   "grad_norm": gnorm.tolist(),
                   "dz2_ds1sq_trained_fd": np.gradient(z_tr[:, 1], s1sq).tolist(),
                   "dz2_ds1sq_dual_fd": np.gradient(z_dual[:, 1], s1sq).tolist(),
                   "dz2_ds1sq_dual_autodiff": M, "seconds": time.time() - t0}
      if z_taylor:
        out[name]["z_taylor"] = np.stack(z_taylor).tolist()
  return out


def plot_linear(res, path_base):
  plt = common.matplotlib_pyplot()

  s1sq = np.asarray(res["s1"])**2
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  for j, ax in enumerate(axes[:2]):
    for name, c in (("erm", "tab:red"), ("sd", "tab:green")):
      r = res[name]
      ax.plot(s1sq, np.asarray(r["z_dual"])[:, j], "-", color=c,
              label=f"dual fixed point ({'eq 9, exact' if name == 'erm' else 'eq 18, SD'})")
      ax.plot(s1sq, np.asarray(r["z_trained"])[:, j], "o", mfc="none", color=c, ms=8,
              label=f"trained by GD ({'ridge, eq 5' if name == 'erm' else 'SD, eq 17'})")
    ax.plot(s1sq, np.asarray(res["erm"]["z_taylor"])[:, j], "--", color="gray",
            label="Taylor fixed point (eq 10)")
    ax.set_xlabel("s1²")
    ax.set_ylabel(f"z{j + 1}*")
    ax.set_title(f"response to feature {j + 1} (s2 = {res['s2']}, δ = {res['delta']}, "
                 f"λ = {res['lam']})", fontsize=9)
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  ax = axes[2]
  for name, c in (("erm", "tab:red"), ("sd", "tab:green")):
    ax.semilogy(s1sq, np.maximum(res[name]["rel_error"], 1e-17), "o-", color=c,
                label=f"{name.upper()}: |z_trained − z_dual| / |z_dual|")
  ax.axhline(1e-4, color="k", ls=":", label="1e-4 target")
  ax.set_xlabel("s1²")
  ax.set_title("trained linear model vs dual prediction", fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.suptitle("Theorem 2, linear model Φ0 = Y U(δ) S Vᵀ: a stronger feature 1 lowers z2 "
               "(ridge), not under SD", fontsize=10)
  fig.tight_layout()
  common.save_figure(fig, path_base)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# (b) finite networks


def cluster_data(c, n_per_cluster=8, angle_deg=90.0, jitter=0.1, seed=0):
  """Two clusters of label-+1 points: around ``c·(1, 0)`` and around ``(cos φ, sin φ)``.

  The setting of Theorem 2 / Figure 5 (all labels +1, two features coupled through the kernel):
  with a bias-free ReLU net the NTK is 1-homogeneous in each input, so scaling cluster A by
  ``c`` multiplies its kernel block by c² and the cross block by c — the first feature's
  strength grows with c while the second cluster is unchanged. The jitter is drawn once (fixed
  ``seed``) and scaled with its cluster.
  """
  rng = np.random.default_rng(seed)
  e = jitter * rng.normal(size=(2, n_per_cluster, 2))
  phi = np.deg2rad(angle_deg)
  xa = c * (np.array([1.0, 0.0]) + e[0])
  xb = np.array([np.cos(phi), np.sin(phi)]) + e[1]
  return np.concatenate([xa, xb]), np.ones(2 * n_per_cluster)


class FeatureScaledNet:
  """A network reparametrised so that feature 1 is κ times stronger, with U and V unchanged.

  ``θ = θ0 + P ω`` with ``P = I + (κ − 1) v1 v1^T`` (v1 = first right singular vector of
  ``YΦ0``, eq 4): then ``YΦ0 P = U diag(κ s1, s2, …) V^T``, so in the linear regime only
  ``s1`` changes — the intervention of Theorem 2 (∂/∂s1² at fixed U) — while the network stays
  a finite nonlinear net. The trainable parameters are ``{"omega": ω}`` (ridge ``λ/2‖ω‖²``);
  θ0, v1 and κ live in a non-trainable ``"frozen"`` collection (so configurations with
  different θ0, v1, κ can be vmapped). Exposes the ``apply(variables, x, train=, rngs=,
  mutable=)`` interface that ``gs_jax.train.make_train_step`` uses.
  """

  def __init__(self, apply_fn, unravel):
    self.apply_fn, self.unravel = apply_fn, unravel

  def theta(self, variables):
    fr, w = variables["frozen"], variables["params"]["omega"]
    return fr["theta0"] + w + (fr["kappa"] - 1.0) * fr["v"] * (fr["v"] @ w)

  def apply(self, variables, x, train=False, rngs=None, mutable=False):
    del train, rngs
    out = self.apply_fn(self.unravel(self.theta(variables)), x)
    return (out, {"frozen": variables["frozen"]}) if mutable else out


def network_check(widths=(64, 256, 1024, 4096, 8192), kappas=(1.0, 1.25, 1.5, 1.75, 2.0),
                  scales=None, c=1.5, seeds=(0, 1, 2), lam=0.1, n_per_cluster=8,
                  angle_deg=90.0, jitter=0.1, bias_scale=0.0, num_steps=30_000,
                  momentum=0.0, progress=True):
  """Finite-width NTK-parametrised nets vs the dual prediction from their NTK at init.

  Two sweeps of the first feature's strength: ``kappas`` (default) scales s1 by κ at fixed
  U through :class:`FeatureScaledNet` on the data of scale ``c``; ``scales`` (if given,
  κ = 1) rescales the first cluster's inputs instead, which also changes U (the two clusters
  decouple as c grows).
  """
  import jax
  import jax.numpy as jnp
  import optax
  from jax.experimental import enable_x64
  from jax.flatten_util import ravel_pytree

  from gs_jax import dual, models, ntk, train

  sweep = "kappa" if scales is None else "input"
  configs = ([(c, k) for k in kappas] if sweep == "kappa" else [(sc, 1.0) for sc in scales])
  rows = []
  with enable_x64():
    data = {cc: cluster_data(cc, n_per_cluster, angle_deg, jitter) for cc, _ in configs}
    for width in widths:
      model = models.NTKTwoLayerReLU(width=int(width), bias_scale=bias_scale)
      f = lambda p, x, model=model: model.apply({"params": p}, x)
      states, batch_list, info = [], [], []
      for sd in seeds:
        key = jax.random.PRNGKey(int(sd))
        p0 = model.init(key, jnp.asarray(data[configs[0][0]][0]))["params"]
        flat0, unravel = ravel_pytree(p0)
        for cc, kappa in configs:
          x, y = (jnp.asarray(a) for a in data[cc])
          U, S = ntk.features(f, p0, x, y)
          v1 = ntk.feature_directions(f, p0, x, y, U[:, :1], S[:1])[:, 0]
          S_eff = S.copy()
          S_eff[0] *= kappa
          info.append((sd, cc, kappa, U, S_eff, f(p0, x), y))
          omega = {"omega": jnp.zeros_like(flat0)}
          frozen = {"frozen": {"theta0": flat0, "v": v1, "kappa": jnp.float64(kappa)}}
          states.append((key, omega, frozen))
          batch_list.append({"x": x, "y": y, "logits0": f(p0, x), "params0": omega})
      net = FeatureScaledNet(f, unravel)
      smax2 = max(float(i[4][0])**2 for i in info)
      lr = 1.0 / (smax2 / 4 + lam)          # logistic curvature ≤ 1/4 per example
      tx = optax.sgd(lr, momentum=momentum or None)
      stack = lambda *a: jnp.stack(a)
      st = train.TrainState(
          step=jnp.zeros((len(states),), jnp.int32),
          params=jax.tree_util.tree_map(stack, *[o for _, o, _ in states]),
          opt_state=jax.vmap(tx.init)(jax.tree_util.tree_map(stack, *[o for _, o, _ in states])),
          model_state=jax.tree_util.tree_map(stack, *[fr for _, _, fr in states]),
          key=jnp.stack([k for k, _, _ in states]))
      batches = jax.tree_util.tree_map(stack, *batch_list)
      hp = {"ridge": jnp.float64(lam), "sd": jnp.float64(0.0)}
      t0 = time.time()
      logits, gnorm = _fit_configs(net, tx, st, batches, hp, num_steps, progress,
                                   f"width {width}")
      secs = time.time() - t0
      for i, (sd, cc, kappa, U, S, lg0, y) in enumerate(info):
        z_tr = np.asarray(ntk.responses(U, y, logits[i], lg0))
        alpha = dual.fixed_point(U, S, lam, dynamics="exact")
        z_du = np.asarray(dual.responses_at(U, S, lam, alpha, "exact"))
        M = np.asarray(dual.starvation(U, S, lam, dynamics="exact"))
        rows.append({"width": int(width), "seed": int(sd), "c": float(cc), "kappa": float(kappa),
                     "s1": float(S[0]), "s2": float(S[1]), "s3": float(S[2]),
                     "coupling": float(np.linalg.norm(U[n_per_cluster:, 0])),
                     "z_trained": z_tr[:2].tolist(), "z_dual": z_du[:2].tolist(),
                     "rel_error": float(np.linalg.norm(z_tr - z_du) / np.linalg.norm(z_du)),
                     "rel_error_top2": float(np.linalg.norm(z_tr[:2] - z_du[:2])
                                             / np.linalg.norm(z_du[:2])),
                     "dz2_ds1sq_autodiff": float(M[0, 1]), "grad_norm": float(gnorm[i]),
                     "seconds_width": secs})
  return {"sweep": sweep, "lam": lam, "n": 2 * n_per_cluster, "angle_deg": angle_deg,
          "jitter": jitter, "c": c, "bias_scale": bias_scale, "momentum": momentum,
          "num_steps": num_steps, "widths": [int(w) for w in widths],
          "configs": [list(map(float, cf)) for cf in configs], "seeds": list(map(int, seeds)),
          "rows": rows, "summary": summarize_network(rows)}


def _fit_configs(net, tx, states, batches, hparams, num_steps, progress, desc, chunk=5000):
  """``gs_jax.train.fit`` vmapped over configurations, in jitted chunks with a tqdm bar.

  Returns the final logits and the gradient norm of the objective at the final parameters.
  """
  import functools

  import jax
  import jax.numpy as jnp
  from tqdm.auto import tqdm

  from gs_jax import train

  step = train.make_train_step(net, tx, _objective)

  @functools.partial(jax.jit, static_argnums=2)
  def run(st, b, length):
    return jax.vmap(lambda s, bb: train.fit(step, s, bb, hparams, length)[0])(st, b)

  done = 0
  with tqdm(total=num_steps, desc=desc, disable=not progress, leave=False) as bar:
    while done < num_steps:
      length = min(chunk, num_steps - done)
      states = run(states, batches, length)
      done += length
      bar.update(length)

  def final(st, b):
    variables = lambda p: {"params": p, **st.model_state}
    loss = lambda p: _objective(net.apply(variables(p), b["x"]), b, p, 0, hparams)[0]
    g = jax.grad(loss)(st.params)
    gn = jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(g)))
    return net.apply(variables(st.params), b["x"]), gn

  logits, gn = jax.jit(jax.vmap(final))(states, batches)
  return np.asarray(logits), np.asarray(gn)


def summarize_network(rows):
  """Per width: mean/max relative error; signs of dz2/d(s1²) from trained nets and dual."""
  out = []
  for w in sorted({r["width"] for r in rows}):
    rw = [r for r in rows if r["width"] == w]
    seeds = sorted({r["seed"] for r in rw})
    fd_tr, fd_du, ad = [], [], []
    for sd in seeds:
      rs = sorted((r for r in rw if r["seed"] == sd), key=lambda r: r["s1"])
      s1sq = np.array([r["s1"]**2 for r in rs])
      fd_tr.append(np.gradient([r["z_trained"][1] for r in rs], s1sq))
      fd_du.append(np.gradient([r["z_dual"][1] for r in rs], s1sq))
      ad.append([r["dz2_ds1sq_autodiff"] for r in rs])
    fd_tr, fd_du, ad = map(np.asarray, (fd_tr, fd_du, ad))
    rel = np.array([r["rel_error"] for r in rw])
    out.append({"width": w, "rel_error_mean": float(rel.mean()),
                "rel_error_max": float(rel.max()),
                "rel_error_top2_mean": float(np.mean([r["rel_error_top2"] for r in rw])),
                "dz2_ds1sq_trained_fd_mean": float(fd_tr.mean()),
                "frac_trained_fd_negative": float(np.mean(fd_tr < 0)),
                "dz2_ds1sq_dual_fd_mean": float(fd_du.mean()),
                "frac_dual_fd_negative": float(np.mean(fd_du < 0)),
                "dz2_ds1sq_autodiff_mean": float(ad.mean()),
                "frac_autodiff_negative": float(np.mean(ad < 0)),
                "max_grad_norm": float(max(r["grad_norm"] for r in rw)),
                "seconds": rw[0]["seconds_width"]})
  return out


def plot_network(res, path_base):
  plt = common.matplotlib_pyplot()

  summ = res["summary"]
  widths = np.array([s["width"] for s in summ])
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  ax = axes[0]
  ax.loglog(widths, [s["rel_error_mean"] for s in summ], "o-", label="mean over seeds and sweep")
  ax.loglog(widths, [s["rel_error_max"] for s in summ], "s--", label="max")
  ref = summ[0]["rel_error_mean"] * np.sqrt(widths[0] / widths)
  ax.loglog(widths, ref, ":", color="gray", label="∝ 1/√width")
  ax.loglog(widths, summ[0]["rel_error_mean"] * widths[0] / widths, "-.", color="gray",
            label="∝ 1/width")
  ax.set_xlabel("width")
  ax.set_ylabel("|z_trained − z_dual| / |z_dual|")
  ax.set_title(f"trained finite nets vs dual prediction (λ = {res['lam']}, n = {res['n']})",
               fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, which="both")
  rows = res["rows"]
  wmax = max(widths)
  for j, ax in enumerate(axes[1:]):
    for w, c in ((min(widths), "tab:orange"), (wmax, "tab:blue")):
      for sd in res["seeds"]:
        rs = sorted((r for r in rows if r["width"] == w and r["seed"] == sd),
                    key=lambda r: r["s1"])
        s1sq = [r["s1"]**2 for r in rs]
        lab = sd == res["seeds"][0]
        ax.plot(s1sq, [r["z_dual"][j] for r in rs], "-", color=c,
                label=f"dual, width {w}" if lab else None)
        ax.plot(s1sq, [r["z_trained"][j] for r in rs], "o", mfc="none", color=c,
                label=f"trained, width {w}" if lab else None)
    ax.set_xlabel("s1² (from the empirical NTK at init)")
    ax.set_ylabel(f"z{j + 1}")
    how = ("s1 scaled by κ at fixed U" if res["sweep"] == "kappa"
           else "first cluster's inputs scaled (U changes too)")
    ax.set_title(f"response to feature {j + 1}: {how}", fontsize=9)
    ax.grid(alpha=0.3)
  axes[2].legend(fontsize=8)
  fig.suptitle("Theorem 2 on finite two-layer ReLU nets (NTK param., centred, ridge on θ−θ0)",
               fontsize=10)
  fig.tight_layout()
  common.save_figure(fig, path_base)
  plt.close(fig)


def _floats(s):
  return tuple(float(v) for v in s.split(","))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("both", "linear", "network"), default="both",
                      help="which check to run")
  parser.add_argument("--out_dir", default="runs/theorem2", help="output directory")
  parser.add_argument("--lam_linear", type=float, default=0.01, help="λ of part (a)")
  parser.add_argument("--delta", type=float, default=0.5, help="δ of U(δ), eq 15, part (a)")
  parser.add_argument("--s2", type=float, default=2.0, help="s2 of part (a)")
  parser.add_argument("--s1", default="2,2.5,3,3.5,4,4.5,5,5.5,6", help="s1 sweep of part (a)")
  parser.add_argument("--linear_steps", type=int, default=100_000, help="GD steps, part (a)")
  parser.add_argument("--lam", type=float, default=0.1, help="λ of part (b) (sum loss)")
  parser.add_argument("--widths", default="64,256,1024,4096,8192", help="widths, part (b)")
  parser.add_argument("--sweep", choices=("kappa", "input"), default="kappa",
                      help="part (b): scale s1 by κ at fixed U (reparametrised net) or "
                           "scale the first cluster's inputs by c (U changes too)")
  parser.add_argument("--kappas", default="1,1.25,1.5,1.75,2", help="κ sweep, part (b)")
  parser.add_argument("--c", type=float, default=1.5, help="first-cluster scale, κ sweep")
  parser.add_argument("--scales", default="1.5,1.75,2,2.25,2.5",
                      help="first-cluster scales c of the input sweep, part (b)")
  parser.add_argument("--seeds", type=int, default=3, help="init seeds per width, part (b)")
  parser.add_argument("--n_per_cluster", type=int, default=8, help="points per cluster, (b)")
  parser.add_argument("--angle", type=float, default=90.0,
                      help="angle φ (degrees) of the second cluster, part (b)")
  parser.add_argument("--bias_scale", type=float, default=0.0,
                      help="β of the hidden bias in the NTK-param. net, part (b)")
  parser.add_argument("--momentum", type=float, default=0.0,
                      help="heavy-ball momentum of the GD in part (b) (same minimiser)")
  parser.add_argument("--network_steps", type=int, default=30_000, help="GD steps, part (b)")
  parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  path = os.path.join(args.out_dir, "results.json")
  results = {"config": vars(args)}
  old = common.read_json(path)
  if old:  # resume: keep the part that is not rerun
    results.update({k: v for k, v in old.items() if k in ("linear", "network")})
  if args.part in ("both", "linear"):
    res = linear_check(_floats(args.s1), args.s2, args.delta, args.lam_linear,
                       num_steps=args.linear_steps, progress=not args.no_progress)
    results["linear"] = res
    plot_linear(res, os.path.join(args.out_dir, "theorem2_linear"))
    common.atomic_write_json(path, results)
    print("(a) linear model, trained vs dual fixed point")
    print(f"{'s1':>5} {'z1 GD':>10} {'z1 dual':>10} {'z2 GD':>10} {'z2 dual':>10} "
          f"{'rel.err':>9} {'dz2/ds1² AD':>12} | {'z2 SD GD':>9} {'z2 SD dual':>10} "
          f"{'rel.err':>9}")
    for i, s1 in enumerate(res["s1"]):
      e, s = res["erm"], res["sd"]
      print(f"{s1:5.2f} {e['z_trained'][i][0]:10.5f} {e['z_dual'][i][0]:10.5f} "
            f"{e['z_trained'][i][1]:10.5f} {e['z_dual'][i][1]:10.5f} {e['rel_error'][i]:9.2e} "
            f"{e['dz2_ds1sq_dual_autodiff'][i]:12.4e} | {s['z_trained'][i][1]:9.5f} "
            f"{s['z_dual'][i][1]:10.5f} {s['rel_error'][i]:9.2e}")
  if args.part in ("both", "network"):
    res = network_check(tuple(int(w) for w in args.widths.split(",")), _floats(args.kappas),
                        _floats(args.scales) if args.sweep == "input" else None, args.c,
                        tuple(range(args.seeds)), args.lam, args.n_per_cluster, args.angle,
                        bias_scale=args.bias_scale, num_steps=args.network_steps,
                        momentum=args.momentum, progress=not args.no_progress)
    results["network"] = res
    plot_network(res, os.path.join(args.out_dir, "theorem2_network"))
    common.atomic_write_json(path, results)
    print("(b) finite networks: relative error of the trained responses vs the dual prediction;"
          " sign of dz2/d(s1²)")
    print(f"{'width':>6} {'rel.err mean':>12} {'max':>9} {'top-2':>9} {'FD trained':>11} "
          f"{'(<0)':>5} {'FD dual':>10} {'(<0)':>5} {'autodiff':>10} {'(<0)':>5} {'|grad|':>8}")
    for s in res["summary"]:
      print(f"{s['width']:6d} {s['rel_error_mean']:12.3e} {s['rel_error_max']:9.2e} "
            f"{s['rel_error_top2_mean']:9.2e} {s['dz2_ds1sq_trained_fd_mean']:11.3e} "
            f"{s['frac_trained_fd_negative']:5.2f} {s['dz2_ds1sq_dual_fd_mean']:10.3e} "
            f"{s['frac_dual_fd_negative']:5.2f} {s['dz2_ds1sq_autodiff_mean']:10.3e} "
            f"{s['frac_autodiff_negative']:5.2f} {s['max_grad_norm']:8.1e}")
  print(f"wrote {args.out_dir}/results.json and figures")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])

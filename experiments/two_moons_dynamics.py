"""Figure 1(d): responses to the horizontal and vertical features during two-moons training.

    python -m experiments.two_moons_dynamics                     # 10 seeds, 10,000 epochs
    python -m experiments.two_moons_dynamics --num_epochs=2000 --seeds=3 --out_dir=/tmp/fig1d

Protocol (docs/protocols.md §3.1–3.2): two-moons data (300 points), the 2 → 500 ReLU → 1 net with
PyTorch's default init, full-batch SGD lr 1e-2 momentum 0.9, weight decay 2e-4 in all three
runs, mean logistic loss; three settings: Δ=−0.1 ERM, Δ=+0.1 ERM, Δ=+0.1 SD (sd_lambda
0.003). All seeds train together (``gs_jax.train.make_seed_trainer``).

Features (Def. 1, eq 4) come from ``YΦ0 = U S V^T`` at initialisation, per seed: ``U, S`` from
the float64 eigh of ``Y K Y`` with ``K`` the empirical NTK at θ0 (``gs_jax.ntk.features``).
The responses ``z = U^T Y (ŷ_t − ŷ_0)`` (eq 4, centred logits) of the selected features are
recorded at *every* step inside the compiled training scan, as a metric of the objective
(the batch carries ``U`` and ``ŷ_0``), so no logits are stored.

Which features are "horizontal" (z1) and "vertical" (z2): the strongest singular features of
``YΦ0`` at init are smooth functions that mix a constant, x1 and x2, so no single singular
feature is purely horizontal or vertical (and on the training set x1 and x2 are correlated,
≈ −0.5). We therefore take the k (``--num_candidates``, default 3) strongest features and
project the label-weighted, centred coordinates onto their span: ``u1 ∝ U_k U_k^T Y x1``
(horizontal) and ``u2 ∝ U_k U_k^T Y x2`` made orthogonal to ``u1`` (vertical), so ``u1, u2``
are orthonormal directions of the left singular space of ``YΦ0``. The figure reports, per Δ,
the share of ``‖Y x‖²`` inside that space and the correlation of each feature function with
x1 and x2 on a uniform grid (see :func:`identify_features`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from experiments import common

SETTINGS = (  # (label, Δ, sd_lambda, line style) as in the paper's Figure 1(d)
    ("Δ=−0.1 ERM", -0.1, 0.0, ":"),
    ("Δ=+0.1 ERM", 0.1, 0.0, "--"),
    ("Δ=+0.1 SD", 0.1, 0.003, "-"),
)


def _grid(n=60, lim=2.0):
  g = np.linspace(-lim, lim, n)
  return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def identify_features(model, params0, x, y, *, num_candidates=3, grid=None):
  """Per-seed horizontal (z1) and vertical (z2) feature directions from ``YΦ0`` at init.

  With ``U_k, S_k`` the ``k = num_candidates`` strongest features of ``YΦ0 = U S V^T``
  (``gs_jax.ntk.features``): the label-weighted centred coordinate ``Y h`` (h = x1 or x2 on the
  training points) is projected onto ``span(U_k)``; ``u1 ∝ U_k U_k^T Y x1`` is the horizontal
  feature, ``u2`` the projection of ``Y x2`` made orthogonal to ``u1`` (Gram–Schmidt) the
  vertical one. Both are unit vectors in the left singular space of ``YΦ0`` and oriented so
  that their feature fits the labels (``Σ_i u_i > 0``). ``captured`` is the fraction of
  ``‖Y h‖²`` inside the top-k space. The feature function shown in the figure is the
  minimum-norm linearised function equal to ``y_i u_i`` on the data,
  ``g(x) = ∇_θ f(x; θ0) · V_k S_k^{-1} U_k^T u`` (JVPs along ``v_j = Φ0^T Y u_j / s_j``).

  Returns:
    dict with ``U`` (n, 2) = [u1, u2], the mixing weights ``a`` (2, k) on the singular
    features, ``captured`` (2,), the singular strengths, grid correlations ``corr`` (2, 2) of
    the two feature functions with (x1, x2), the grid functions ``g`` (2, grid) and the
    float32 logits at θ0.
  """
  import jax
  import jax.numpy as jnp
  from jax.experimental import enable_x64
  from jax.flatten_util import ravel_pytree

  from gs_jax import ntk

  grid = _grid() if grid is None else grid
  with enable_x64():
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params0)
    f = lambda p, xx: model.apply({"params": p}, xx)
    x64 = jnp.asarray(x, jnp.float64)
    U, S, V = ntk.features(f, p64, x64, y, k=num_candidates, return_v=True)
    flat, unravel = ravel_pytree(p64)
    gx = jnp.asarray(grid, jnp.float64)
    g_sing = np.asarray(jax.vmap(
        lambda v: jax.jvp(lambda w: f(unravel(w), gx), (flat,), (v,))[1])(V.T))  # (k, grid)
  yy = np.asarray(y, np.float64)
  xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
  t1, t2 = yy * xc[:, 0], yy * xc[:, 1]
  u1 = U @ (U.T @ t1)
  captured = [float(u1 @ u1 / (t1 @ t1))]
  u1 /= np.linalg.norm(u1)
  p2 = U @ (U.T @ t2)
  captured.append(float(p2 @ p2 / (t2 @ t2)))
  u2 = p2 - (u1 @ p2) * u1
  u2 /= np.linalg.norm(u2)
  u1, u2 = (u if u.sum() >= 0 else -u for u in (u1, u2))
  a = np.stack([U.T @ u1, U.T @ u2])                                       # (2, k)
  g = (a / S[None, :]) @ g_sing                                            # (2, grid)
  corr = np.array([[np.corrcoef(gj, grid[:, c])[0, 1] for c in (0, 1)] for gj in g])
  logits0 = np.asarray(model.apply({"params": params0}, jnp.asarray(x)))
  return {"U": np.stack([u1, u2], 1), "a": a, "captured": captured, "strengths": S.tolist(),
          "corr": corr, "g": g, "logits0": logits0}


def feature_dynamics(seeds=tuple(range(10)), num_epochs=10_000, *, width=500,
                     learning_rate=1e-2, momentum=0.9, weight_decay=2e-4, sd_lambda=0.003,
                     num_candidates=3, settings=None, progress=True):
  """Runs the three Figure-1(d) settings and returns the responses along training.

  Returns:
    dict: ``settings`` (list of per-setting dicts with ``label``, ``delta``, ``sd_lambda``,
    ``z`` of shape (S, num_epochs + 1, 2) = responses (z1, z2) at θ_0 … θ_T, the mixing
    weights, ``captured`` and ``corr`` per seed, final train accuracy) plus the grid feature
    functions of the first seed for each Δ.
  """
  import jax
  import jax.numpy as jnp

  from gs_jax import models, train
  from gs_jax.data import toy

  if settings is None:
    settings = [(lab, d, sd_lambda if sd else 0.0, ls) for lab, d, sd, ls in SETTINGS]
  model = models.two_layer_relu(width)
  tx = train.make_optimizer("sgd", learning_rate, momentum=momentum, weight_decay=weight_decay)

  def objective(logits, batch, params, step, hparams):
    loss, metrics = train.binary_objective(logits, batch, params, step, hparams)
    # Responses z = U^T Y (ŷ_t − ŷ_0) of the two identified features (eq 4).
    z = ((logits - batch["logits0"]) * batch["y"]) @ batch["U"]
    return loss, {**metrics, "z": z}

  trainer = train.make_seed_trainer(model, tx, objective, chunk=500)
  keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
  feats, out = {}, []
  for label, delta, sd, style in settings:
    if delta not in feats:  # features depend on the data and init only, not on SD
      data = toy.two_moons_seeds(seeds, delta)
      per_seed = []
      for i, key in enumerate(keys):
        # Exactly the initialisation make_seed_trainer performs for this seed.
        st = train.init_state(model, tx, key, jnp.asarray(data["x"][i]))
        per_seed.append(identify_features(model, st.params, data["x"][i], data["y"][i],
                                          num_candidates=num_candidates))
      batches = {"x": data["x"], "y": data["y"],
                 "U": np.stack([p["U"] for p in per_seed]).astype(np.float32),
                 "logits0": np.stack([p["logits0"] for p in per_seed]).astype(np.float32)}
      feats[delta] = (batches, per_seed)
    batches, per_seed = feats[delta]
    t0 = time.time()
    states, hist = trainer(keys, batches, {"sd_lambda": jnp.float32(sd)}, num_epochs,
                           desc=label, progress=progress)
    final_logits = jax.vmap(lambda p, xx: model.apply({"params": p}, xx))(
        states.params, jnp.asarray(batches["x"]))
    z_final = np.einsum("sn,snk->sk", (np.asarray(final_logits) - batches["logits0"])
                        * batches["y"], batches["U"])
    z = np.concatenate([np.asarray(hist["z"]), z_final[:, None]], axis=1)   # (S, T+1, 2)
    acc = np.mean(np.where(np.asarray(final_logits) > 0, 1.0, -1.0) == batches["y"], axis=1)
    out.append({"label": label, "delta": delta, "sd_lambda": sd, "style": style, "z": z,
                "corr": [p["corr"].tolist() for p in per_seed],
                "captured": [p["captured"] for p in per_seed],
                "mixing": [p["a"].tolist() for p in per_seed],
                "strengths": [p["strengths"] for p in per_seed],
                "train_accuracy": acc.tolist(), "seconds": time.time() - t0,
                "z0_max_abs": float(np.max(np.abs(z[:, 0])))})
  grids = {d: per_seed[0]["g"] for d, (_, per_seed) in feats.items()}
  return {"settings": out, "grid_features": grids, "grid": _grid()}


def plot(result, path_base):
  """Figure 1(d): the z2-vs-z1 paths (mean over seeds), z1(t), z2(t), and the features."""
  plt = common.matplotlib_pyplot()

  fig = plt.figure(figsize=(15, 7.5))
  gs = fig.add_gridspec(2, 4)
  ax = fig.add_subplot(gs[:, :2])
  axt1, axt2 = fig.add_subplot(gs[0, 2]), fig.add_subplot(gs[1, 2])
  colors = {"Δ=−0.1 ERM": "tab:blue", "Δ=+0.1 ERM": "tab:red", "Δ=+0.1 SD": "tab:green"}
  for s in result["settings"]:
    z = s["z"].mean(0)
    c = colors.get(s["label"], None)
    t = np.arange(z.shape[0])
    ax.plot(z[:, 0], z[:, 1], s["style"], color=c, lw=2, label=s["label"])
    ax.plot(z[-1, 0], z[-1, 1], "o", color=c)
    for frac in (0.01, 0.1):
      i = int(frac * (len(t) - 1))
      ax.plot(z[i, 0], z[i, 1], "x", color=c, ms=6)
    axt1.plot(t, z[:, 0], s["style"], color=c, label=s["label"])
    axt2.plot(t, z[:, 1], s["style"], color=c, label=s["label"])
  ax.set_xlabel("z1: response to the horizontal feature")
  ax.set_ylabel("z2: response to the vertical feature")
  ax.set_title("Figure 1(d): feature responses over training (mean over "
               f"{result['settings'][0]['z'].shape[0]} seeds; x = 1%, 10% of epochs, o = end)",
               fontsize=9)
  ax.legend()
  ax.grid(alpha=0.3)
  for a, name in ((axt1, "z1"), (axt2, "z2")):
    a.set_xscale("symlog", linthresh=10)
    a.set_xlabel("epoch")
    a.set_ylabel(name)
    a.grid(alpha=0.3)
  grid = result["grid"]
  n = int(np.sqrt(grid.shape[0]))
  k = len(result["settings"][0]["strengths"][0])
  lines = [f"Features (per seed): U_k, S_k = the k={k} strongest singular features of YΦ0 at init"
           " (eigh of Y K Y, K = empirical NTK).",
           "z1 = u1ᵀY(ŷ−ŷ0), u1 ∝ U_k U_kᵀ Y x1 (label-weighted horizontal coordinate projected on"
           " the top-k space);",
           "z2 = u2ᵀY(ŷ−ŷ0), u2 ∝ U_k U_kᵀ Y x2 made orthogonal to u1 (vertical). Grid corr of"
           " the feature functions with (x1, x2),",
           "share of ‖Yx‖² inside the top-k space (mean over seeds):"]
  done = set()
  for s in result["settings"]:
    if s["delta"] in done:
      continue
    done.add(s["delta"])
    c = np.array(s["corr"])                     # (S, 2 features, 2 coords)
    cap = np.array(s["captured"]).mean(0)
    lines.append(f"Δ={s['delta']:+.1f}: z1 corr ({c[:, 0, 0].mean():+.2f}, "
                 f"{c[:, 0, 1].mean():+.2f}),"
                 f" z2 corr ({c[:, 1, 0].mean():+.2f}, {c[:, 1, 1].mean():+.2f}); captured x1 "
                 f"{cap[0]:.2f}, x2 {cap[1]:.2f}")
  for k, (delta, g) in enumerate(sorted(result["grid_features"].items())[-1:]):
    for j in range(2):
      a = fig.add_subplot(gs[j, 3])
      im = a.imshow(g[j].reshape(n, n), origin="lower", extent=(-2, 2, -2, 2), cmap="RdBu_r")
      a.set_title(f"feature of z{j + 1} (seed 0, Δ={delta:+.1f}): g(x)", fontsize=9)
      fig.colorbar(im, ax=a, fraction=0.046)
  fig.text(0.01, 0.005, "\n".join(lines), fontsize=8, family="monospace", va="bottom")
  fig.tight_layout(rect=(0, 0.13, 1, 1))
  common.save_figure(fig, path_base)
  plt.close(fig)


def summarize(result):
  """Per-setting seed-mean final responses and training accuracy (for results.json)."""
  rows = []
  for s in result["settings"]:
    z = s["z"]
    rows.append({"label": s["label"], "delta": s["delta"], "sd_lambda": s["sd_lambda"],
                 "z1_final_mean": float(z[:, -1, 0].mean()),
                 "z1_final_std": float(z[:, -1, 0].std()),
                 "z2_final_mean": float(z[:, -1, 1].mean()),
                 "z2_final_std": float(z[:, -1, 1].std()),
                 "z2_max_mean_path": float(z[:, :, 1].mean(0).max()),
                 # Direction in the (z1, z2) plane: share of the vertical feature.
                 "z2_over_z1_final": float(z[:, -1, 1].mean() / z[:, -1, 0].mean()),
                 "train_accuracy_mean": float(np.mean(s["train_accuracy"])),
                 "z_at_init_max_abs": s["z0_max_abs"], "seconds": s["seconds"],
                 "captured_z1_z2": s["captured"], "mixing_z1_z2": s["mixing"],
                 "strengths": s["strengths"], "corr_z1_z2_with_x1_x2": s["corr"]})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", type=int, default=10, help="number of seeds (0 … seeds−1)")
  parser.add_argument("--num_epochs", type=int, default=10_000, help="full-batch epochs")
  parser.add_argument("--width", type=int, default=500, help="hidden width")
  parser.add_argument("--learning_rate", type=float, default=1e-2, help="SGD learning rate")
  parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
  parser.add_argument("--weight_decay", type=float, default=2e-4,
                      help="coupled L2 weight decay (all three settings)")
  parser.add_argument("--sd_lambda", type=float, default=0.003,
                      help="SD coefficient of mean(ŷ²) in the SD setting")
  parser.add_argument("--num_candidates", type=int, default=3,
                      help="k: the z1/z2 directions live in the span of the k strongest "
                           "singular features of YΦ0")
  parser.add_argument("--record_every", type=int, default=10,
                      help="stride of the trajectories stored in results.json")
  parser.add_argument("--out_dir", default="runs/two_moons_dynamics", help="output directory")
  parser.add_argument("--no_progress", action="store_true", help="hide progress bars")
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  result = feature_dynamics(tuple(range(args.seeds)), args.num_epochs, width=args.width,
                            learning_rate=args.learning_rate, momentum=args.momentum,
                            weight_decay=args.weight_decay, sd_lambda=args.sd_lambda,
                            num_candidates=args.num_candidates, progress=not args.no_progress)
  base = os.path.join(args.out_dir, "figure1d")
  plot(result, base)
  rows = summarize(result)
  k = max(1, args.record_every)
  common.atomic_write_json(
      os.path.join(args.out_dir, "results.json"),
      {"config": vars(args), "summary": rows,
       "trajectories": {s["label"]: {"epochs": list(range(0, s["z"].shape[1], k)),
                                     "z_mean": s["z"].mean(0)[::k].tolist()}
                        for s in result["settings"]}})
  print(f"{'setting':<12} {'z1 final':>16} {'z2 final':>16} {'max z2':>8} {'z2/z1':>7} "
        f"{'train acc':>9}")
  for r in rows:
    print(f"{r['label']:<12} {r['z1_final_mean']:8.3f} ± {r['z1_final_std']:5.3f} "
          f"{r['z2_final_mean']:8.3f} ± {r['z2_final_std']:5.3f} {r['z2_max_mean_path']:8.3f} "
          f"{r['z2_over_z1_final']:7.3f} "
          f"{r['train_accuracy_mean']:9.3f}")
  print(f"wrote {base}.png/.pdf and results.json")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])

"""Figure 5: primal vs dual paths of the responses, and spectral decoupling (docs/protocols.md §3.2).

    python -m experiments.primal_dual [--out_dir=runs/primal_dual] [--s1 2 3 4 5 6]

Two examples, ``y = (+1, +1)``, ``U = U(δ=0.5)`` (eq 15), ``S = diag(s1, 2)``, λ = 0.01 and a
linear model ``ŷ = Φ0 θ`` with ``Φ0 = Y U S V^T`` (``V`` a random m×2 matrix with orthonormal
columns, so ``YΦ0 = U S V^T`` exactly). For each s1 the script follows the responses
``z = (z1, z2)`` along

  (i)   gradient ascent on the dual eq 8 (Euler steps of eq 9) from ``α = 1/2`` (the dual point
        of θ = 0, since ``α = sigmoid(−yŷ)``), with ``z = S² U^T α/λ`` (eq 11);
  (ii)  gradient descent on the primal eq 5, ``Σ log(1+e^{−yŷ}) + λ/2‖θ‖²``, from θ = 0, with
        ``z = S V^T θ`` (eq 4);
  (iii) gradient descent on the SD primal eq 17, ``Σ log(1+e^{−yŷ}) + λ/2‖ŷ‖²``, from θ = 0;

all three as ``lax.scan`` loops in float64. The paper's claims: (i) and (ii) end at the same
point, the exact fixed point (``dual.fixed_point(..., dynamics="exact")``); larger s1 gives a
smaller final z2 (gradient starvation, Theorem 2); the SD end points ``z* = U^T α*/λ`` do not
depend on s1. ``results.json`` holds every end point and its distance to the fixed point.
"""
from __future__ import annotations

import argparse
import json
import os


import jax
import jax.numpy as jnp
import numpy as np

from jax.experimental import enable_x64

from experiments import common
from gs_jax import dual


def _paths(U, S, lam, y, V, steps, primal_lr, dual_lr, every):
  """Runs (i)–(iii); returns the z paths (saved every ``every`` steps) and end points."""
  Phi = jnp.diag(y) @ U @ jnp.diag(S) @ V.T  # Φ0 with YΦ0 = U S V^T
  Q = (U * S ** 2) @ U.T

  def primal_loss(theta, sd):
    f = Phi @ theta
    fit = jnp.sum(jnp.logaddexp(0.0, -y * f))
    return fit + (0.5 * lam * f @ f if sd else 0.5 * lam * theta @ theta)

  def primal(sd):
    grad = jax.grad(primal_loss)

    def step(theta, _):
      theta = theta - primal_lr * grad(theta, sd)
      return theta, S * (V.T @ theta)

    theta, zs = jax.lax.scan(step, jnp.zeros(V.shape[0]), None, length=steps)
    return zs[every - 1::every], S * (V.T @ theta)

  def dual_ascent():
    def step(a, _):
      g = jnp.log1p(-a) - jnp.log(a) - Q @ a / lam  # ∇ of eq 8 = eq 9 with η = 1
      a = jnp.clip(a + dual_lr * g, 1e-15, 1 - 1e-15)
      return a, S ** 2 * (U.T @ a) / lam

    a0 = jnp.full(U.shape[0], 0.5)
    a, zs = jax.lax.scan(step, a0, None, length=steps)
    z0 = S ** 2 * (U.T @ a0) / lam
    return jnp.concatenate([z0[None], zs[every - 1::every]]), S ** 2 * (U.T @ a) / lam

  return {"dual": dual_ascent(), "primal": primal(False), "primal_sd": primal(True)}


def main(argv=None):
  with enable_x64():  # float64 for the theory (docs/protocols.md §4), without touching the global flag
    _main(argv)


def _main(argv):
  p = argparse.ArgumentParser(description="Figure 5: primal vs dual response paths.")
  p.add_argument("--out_dir", default="runs/primal_dual", help="output directory")
  p.add_argument("--s1", type=float, nargs="+", default=[2.0, 3.0, 4.0, 5.0, 6.0],
                 help="strengths of feature 1")
  p.add_argument("--s2", type=float, default=2.0, help="strength of feature 2")
  p.add_argument("--delta", type=float, default=0.5, help="coupling δ of U(δ), eq 15")
  p.add_argument("--lam", type=float, default=0.01, help="λ of eq 5 / eq 17 (sum loss)")
  p.add_argument("--m", type=int, default=10, help="number of parameters (rows of V)")
  p.add_argument("--seed", type=int, default=0, help="seed of the random V")
  p.add_argument("--steps", type=int, default=200_000, help="steps of every path")
  p.add_argument("--primal_lr", type=float, default=0.02,
                 help="primal step size (stable below 2/(s1²/2 + λ))")
  p.add_argument("--dual_lr", type=float, default=2e-4,
                 help="dual step size (stable below ~2/(s1²/λ + 1/α*))")
  p.add_argument("--every", type=int, default=50, help="save the path every this many steps")
  args = p.parse_args(argv)
  if args.lam <= 0 or args.s2 <= 0 or min(args.s1) <= 0:
    raise ValueError(f"--lam, --s1 and --s2 must be > 0; got lam={args.lam}, s1={args.s1}, "
                     f"s2={args.s2}")
  if args.primal_lr <= 0 or args.dual_lr <= 0:
    raise ValueError("--primal_lr and --dual_lr must be > 0")
  if not 1 <= args.every <= args.steps:
    raise ValueError(f"need 1 <= --every <= --steps; got every={args.every}, steps={args.steps}")
  if args.m < 2:
    raise ValueError(f"--m must be >= 2 (V is m×2 with orthonormal columns); got {args.m}")
  os.makedirs(args.out_dir, exist_ok=True)

  y = jnp.ones(2)
  U = jnp.asarray(dual.coupling_matrix(args.delta))
  rng = np.random.default_rng(args.seed)
  V = jnp.asarray(np.linalg.qr(rng.normal(size=(args.m, 2)))[0])

  results = {"config": vars(args), "runs": []}
  paths = {}
  for s1 in args.s1:
    S = jnp.array([s1, args.s2])
    out = _paths(U, S, args.lam, y, V, args.steps, args.primal_lr, args.dual_lr, args.every)
    paths[s1] = out
    fp = {d: np.asarray(dual.responses_at(U, S, args.lam, dual.fixed_point(
        U, S, args.lam, dynamics=d), d)) for d in dual.DYNAMICS}
    run = {"s1": s1, "fixed_point_z": {d: fp[d].tolist() for d in fp}}
    for name, ref in (("dual", "exact"), ("primal", "exact"), ("primal_sd", "sd")):
      z_end = np.asarray(out[name][1])
      run[name] = {"z_end": z_end.tolist(),
                   "rel_error_vs_fixed_point": float(np.max(np.abs(z_end - fp[ref])
                                                             / np.abs(fp[ref])))}
    run["primal_vs_dual_rel_gap"] = float(np.max(np.abs(
        np.asarray(out["primal"][1]) - np.asarray(out["dual"][1])) / np.abs(fp["exact"])))
    results["runs"].append(run)
    print(f"s1={s1:g}: z* exact {fp['exact'].round(4)}, taylor {fp['taylor'].round(4)}, "
          f"sd {fp['sd'].round(4)} | end rel. errors: dual {run['dual']['rel_error_vs_fixed_point']:.1e}"
          f", primal {run['primal']['rel_error_vs_fixed_point']:.1e}, "
          f"primal SD {run['primal_sd']['rel_error_vs_fixed_point']:.1e}")

  z2 = [r["fixed_point_z"]["exact"][1] for r in results["runs"]]
  z2_sd = [r["primal_sd"]["z_end"][1] for r in results["runs"]]
  results["checks"] = {
      "final_z2_decreases_with_s1": bool(np.all(np.diff(z2) < 0)),
      "sd_end_points_spread": float(np.ptp(np.array([r["primal_sd"]["z_end"]
                                                     for r in results["runs"]]), axis=0).max()),
      "max_primal_dual_rel_gap": max(r["primal_vs_dual_rel_gap"] for r in results["runs"]),
      "final_z2": z2, "final_z2_sd": z2_sd,
  }
  print(json.dumps(results["checks"], indent=1))
  _plot(paths, results, args)
  common.atomic_write_json(os.path.join(args.out_dir, "results.json"), results)
  print("wrote", args.out_dir)


def _plot(paths, results, args):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw=dict(width_ratios=[1, 1, 0.7]))
  cmap = plt.get_cmap("viridis")
  for i, (s1, out) in enumerate(paths.items()):
    c = cmap(i / max(1, len(paths) - 1))
    zd, zp, zs = (np.abs(np.asarray(out[k][0])) for k in ("dual", "primal", "primal_sd"))
    ax = axes[0]
    ax.plot(zp[:, 0], zp[:, 1], "-", color=c, lw=2, label=f"$s_1$={s1:g}")
    ax.plot(zd[:, 0], zd[:, 1], ":", color=c, lw=2)
    z_fp = np.abs(results["runs"][i]["fixed_point_z"]["exact"])
    ax.plot(*z_fp, "o", ms=9, mfc="none", mec="k")
    axes[1].plot(zp[:, 0], zp[:, 1], "-", color=c, lw=1, alpha=0.35)
    axes[1].plot(zs[:, 0], zs[:, 1], "--", color=c, lw=2, label=f"$s_1$={s1:g}")
    axes[1].plot(*np.abs(results["runs"][i]["fixed_point_z"]["sd"]), "o", ms=9, mfc="none",
                 mec="k")
  axes[0].set_title("weight decay (log axes): primal GD from θ=0 (solid),\n"
                    "dual GA from α=1/2 (dotted); ○ = dual.fixed_point(exact)", fontsize=10)
  axes[1].set_title("spectral decoupling: primal GD from θ=0 (dashed),\n"
                    "weight-decay primal faint; ○ = dual.fixed_point(sd)", fontsize=10)
  s1s = [r["s1"] for r in results["runs"]]
  ax = axes[2]
  ax.plot(s1s, [abs(r["fixed_point_z"]["exact"][1]) for r in results["runs"]], "k-o", mfc="none",
          label="weight decay: fixed point (exact)")
  ax.plot(s1s, [abs(r["primal"]["z_end"][1]) for r in results["runs"]], "C0x", ms=9,
          label="weight decay: primal end")
  ax.plot(s1s, [abs(r["dual"]["z_end"][1]) for r in results["runs"]], "C1+", ms=12,
          label="weight decay: dual end")
  ax.plot(s1s, [abs(r["fixed_point_z"]["sd"][1]) for r in results["runs"]], "k--s", mfc="none",
          label="SD: fixed point")
  ax.plot(s1s, [abs(r["primal_sd"]["z_end"][1]) for r in results["runs"]], "C2x", ms=9,
          label="SD: primal end")
  ax.set_xlabel("$s_1$ (strength of feature 1)")
  ax.set_ylabel("final $|z_2|$")
  ax.set_title("feature 1 starves feature 2;\nSD removes the dependence", fontsize=10)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  for ax in axes[:2]:
    ax.set_xlabel("$|z_1|$ (response to feature 1)")
    ax.set_ylabel("$|z_2|$ (response to feature 2)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
  # Log axes: the primal starts at z = 0, the dual at α = 1/2 where z = S²U^Tα/λ is large.
  axes[0].set_xscale("log")
  axes[0].set_yscale("log")
  fig.suptitle(f"Figure 5: U(δ={args.delta}), S=diag($s_1$, {args.s2:g}), λ={args.lam}, "
               "y=(+1,+1)")
  fig.tight_layout()
  for ext in ("png", "pdf"):
    fig.savefig(os.path.join(args.out_dir, f"fig5_primal_dual.{ext}"), dpi=130)
  plt.close(fig)


if __name__ == "__main__":
  main()

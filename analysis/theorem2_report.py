"""Theorem-2 and Figure-5 tables and figures from a run directory.

    python -m analysis.theorem2_report runs/theorem2/paper      # experiments.theorem2
    python -m analysis.theorem2_report runs/primal_dual/paper   # experiments.primal_dual

For ``experiments.theorem2``: prints the linear-model table (per s1: trained vs dual
responses, relative error, dz2/d(s1²)) and the width table (relative error mean ± sample std
over seeds, signs of dz2/d(s1²)), and draws ``theorem2_linear.{png,pdf}`` and
``theorem2_network.{png,pdf}``. For ``experiments.primal_dual`` (Figure 5): prints the fixed
points and end-point errors per s1, and draws ``figure5.{png,pdf}`` from ``paths.npz``: the
response paths of primal GD (eq 5) and dual GA (eq 8) with the exact fixed points, the SD
primal paths (eq 17) with theirs, and the final |z2| against s1. Figures go to the run
directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.experiment import results as results_lib


def _save(plt, fig, stem) -> list[Path]:
  fig.tight_layout()
  paths = results_lib.save_figure(fig, stem)
  plt.close(fig)
  return paths


def linear_table(lin: dict, s1) -> str:
  r, s = lin["ridge"], lin["sd"]
  lines = [
    "(a) linear model, trained by GD vs the dual fixed point (ridge: eq 5 vs eq 9; "
    "SD: eq 17 vs eq 18)",
    f"{'s1':>5} {'z1 GD':>10} {'z1 dual':>10} {'z2 GD':>10} {'z2 dual':>10} "
    f"{'rel.err':>9} {'dz2/ds1² AD':>12} | {'z2 SD GD':>9} {'z2 SD dual':>10} "
    f"{'rel.err':>9}",
  ]
  for i, a in enumerate(s1):
    lines.append(
      f"{a:5.2f} {r['z_trained'][i][0]:10.5f} {r['z_dual'][i][0]:10.5f} "
      f"{r['z_trained'][i][1]:10.5f} {r['z_dual'][i][1]:10.5f} {r['rel_error'][i]:9.2e} "
      f"{r['dz2_ds1sq_dual_autodiff'][i]:12.4e} | {s['z_trained'][i][1]:9.5f} "
      f"{s['z_dual'][i][1]:10.5f} {s['rel_error'][i]:9.2e}"
    )
  lines.append(
    f"max rel. error: ridge {r['max_rel_error']:.1e}, SD {s['max_rel_error']:.1e}; "
    f"max |grad| at the end: ridge {max(r['grad_norm']):.1e}, "
    f"SD {max(s['grad_norm']):.1e}"
  )
  return "\n".join(lines)


def network_table(net: dict) -> str:
  lines = [
    "(b) finite networks: relative error of the trained responses vs the dual "
    "prediction (mean ± sample std over seeds); dz2/d(s1²) and the fraction < 0",
    f"{'width':>6} {'rel.err':>19} {'max':>9} {'top-2':>9} {'FD trained':>11} "
    f"{'(<0)':>5} {'FD dual':>10} {'(<0)':>5} {'autodiff':>10} {'(<0)':>5} "
    f"{'|grad|':>8} {'s':>6}",
  ]
  for w in sorted(net, key=int):
    m = net[w]
    lines.append(
      f"{int(w):6d} {m['rel_error']['mean']:9.3e} ± {m['rel_error']['std']:7.1e} "
      f"{m['rel_error_max']:9.2e} {m['rel_error_top2']['mean']:9.2e} "
      f"{m['dz2_ds1sq_trained_fd']['mean']:11.3e} {m['frac_trained_fd_negative']:5.2f} "
      f"{m['dz2_ds1sq_dual_fd']['mean']:10.3e} {m['frac_dual_fd_negative']:5.2f} "
      f"{m['dz2_ds1sq_autodiff']['mean']:10.3e} {m['frac_autodiff_negative']:5.2f} "
      f"{m['max_grad_norm']:8.1e} {m['seconds']:6.0f}"
    )
  return "\n".join(lines)


def figure5_table(res: dict) -> str:
  c = res["metrics"]
  lines = [
    "fixed points z* = (z1, z2), and the end points' relative error to them",
    f"{'s1':>4} {'z* exact':>20} {'z* taylor':>20} {'z* SD':>20} | {'dual':>8} "
    f"{'primal':>8} {'SD':>8}",
  ]
  z = lambda v: f"({v[0]:.4f}, {v[1]:.4f})"
  for r in res["per_s1"]:
    fp = r["fixed_point_z"]
    lines.append(
      f"{r['s1']:4g} {z(fp['exact']):>20} {z(fp['taylor']):>20} {z(fp['sd']):>20} | "
      f"{r['dual']['rel_error_vs_fixed_point']:8.1e} "
      f"{r['primal']['rel_error_vs_fixed_point']:8.1e} "
      f"{r['primal_sd']['rel_error_vs_fixed_point']:8.1e}"
    )
  sd = c["sd_end_point_mean"]
  lines.append(
    f"final z2 decreases with s1: {c['final_z2_decreases_with_s1']} "
    f"({c['final_z2'][0]:.3f} → {c['final_z2'][-1]:.3f}); max primal–dual gap "
    f"{c['max_primal_dual_rel_gap']:.1e}; SD end point ({sd[0]:.3f}, {sd[1]:.3f}), "
    f"spread {c['sd_end_points_spread']:.1e}"
  )
  return "\n".join(lines)


def tables(res: dict) -> str:
  """The tables of a run's results.json (of the parts it holds)."""
  if res["experiment"] == "primal_dual":
    return figure5_table(res)
  out = []
  if "linear" in res["metrics"]:
    out.append(linear_table(res["metrics"]["linear"], res["config"]["linear"]["s1"]))
  if res["metrics"].get("network"):
    out.append(network_table(res["metrics"]["network"]))
  return "\n\n".join(out)


def draw_linear(res: dict, stem) -> list[Path]:
  lin, lc = res["metrics"]["linear"], res["config"]["linear"]
  plt = results_lib.pyplot()
  s1sq = np.asarray(lc["s1"]) ** 2
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  labels = {
    "ridge": ("dual fixed point (eq 9, exact)", "trained by GD (ridge, eq 5)"),
    "sd": ("dual fixed point (eq 18, SD)", "trained by GD (SD, eq 17)"),
  }
  colors = {"ridge": "tab:red", "sd": "tab:green"}
  for j, ax in enumerate(axes[:2]):
    for name, c in colors.items():
      r = lin[name]
      ax.plot(s1sq, np.asarray(r["z_dual"])[:, j], "-", color=c, label=labels[name][0])
      ax.plot(
        s1sq,
        np.asarray(r["z_trained"])[:, j],
        "o",
        mfc="none",
        color=c,
        ms=8,
        label=labels[name][1],
      )
    ax.plot(
      s1sq,
      np.asarray(lin["ridge"]["z_taylor"])[:, j],
      "--",
      color="gray",
      label="Taylor fixed point (eq 10)",
    )
    ax.set_xlabel("s1²")
    ax.set_ylabel(f"z{j + 1}*")
    ax.set_title(
      f"response to feature {j + 1} (s2 = {lc['s2']}, δ = {lc['delta']}, λ = {lc['lam']})",
      fontsize=9,
    )
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  ax = axes[2]
  for name, c in colors.items():
    ax.semilogy(
      s1sq,
      np.maximum(lin[name]["rel_error"], 1e-17),
      "o-",
      color=c,
      label=f"{'ridge' if name == 'ridge' else 'SD'}: |z_trained − z_dual| / |z_dual|",
    )
  ax.axhline(1e-4, color="k", ls=":", label="1e-4 target")
  ax.set_xlabel("s1²")
  ax.set_title("trained linear model vs dual prediction", fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.suptitle(
    "Theorem 2, linear model Φ0 = Y U(δ) S Vᵀ: a stronger feature 1 lowers z2 "
    "(ridge), not under SD",
    fontsize=10,
  )
  return _save(plt, fig, stem)


def draw_network(res: dict, stem) -> list[Path]:
  net, ps, nc = res["metrics"]["network"], res["per_seed"]["network"], res["config"]["network"]
  plt = results_lib.pyplot()
  keys = sorted(net, key=int)
  widths = np.array([int(w) for w in keys])
  mean = np.array([net[w]["rel_error"]["mean"] for w in keys])
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  ax = axes[0]
  ax.loglog(widths, mean, "o-", label="mean over seeds and sweep")
  ax.loglog(widths, [net[w]["rel_error_max"] for w in keys], "s--", label="max")
  ax.loglog(widths, mean[0] * np.sqrt(widths[0] / widths), ":", color="gray", label="∝ 1/√width")
  ax.loglog(widths, mean[0] * widths[0] / widths, "-.", color="gray", label="∝ 1/width")
  # The widths themselves as ticks (log-axis minor labels overlap on a short decade range).
  from matplotlib.ticker import NullFormatter

  ax.set_xticks(widths)
  ax.set_xticklabels([str(w) for w in widths])
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel("width")
  ax.set_ylabel("|z_trained − z_dual| / |z_dual|")
  ax.set_title(
    f"trained finite nets vs dual prediction (λ = {nc['lam']}, n = {2 * nc['n_per_cluster']})",
    fontsize=9,
  )
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3, which="both")
  how = (
    "s1 scaled by κ at fixed U"
    if nc["sweep"] == "kappa"
    else "first cluster's inputs scaled (U changes too)"
  )
  for j, ax in enumerate(axes[1:]):
    for w, c in ((keys[0], "tab:orange"), (keys[-1], "tab:blue")):
      s1sq = np.asarray(ps[w]["s1"]) ** 2
      for seed in range(len(s1sq)):
        order = np.argsort(s1sq[seed])
        first = seed == 0
        ax.plot(
          s1sq[seed][order],
          np.asarray(ps[w]["z_dual"])[seed][order, j],
          "-",
          color=c,
          label=f"dual, width {w}" if first else None,
        )
        ax.plot(
          s1sq[seed][order],
          np.asarray(ps[w]["z_trained"])[seed][order, j],
          "o",
          mfc="none",
          color=c,
          label=f"trained, width {w}" if first else None,
        )
    ax.set_xlabel("s1² (from the empirical NTK at init)")
    ax.set_ylabel(f"z{j + 1}")
    ax.set_title(f"response to feature {j + 1}: {how}", fontsize=9)
    ax.grid(alpha=0.3)
  axes[2].legend(fontsize=8)
  fig.suptitle(
    "Theorem 2 on finite two-layer ReLU nets (NTK param., centred, ridge on θ−θ0)", fontsize=10
  )
  return _save(plt, fig, stem)


def draw_figure5(res: dict, run_dir: Path) -> list[Path]:
  cfg, runs = res["config"], res["per_s1"]
  with np.load(run_dir / "paths.npz") as f:
    paths = {k: f[k] for k in f.files}
  plt = results_lib.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw=dict(width_ratios=[1, 1, 0.7]))
  cmap = plt.get_cmap("viridis")
  for i, s1 in enumerate(paths["s1"]):
    c = cmap(i / max(1, len(runs) - 1))
    zd, zp, zs = (np.abs(paths[k][i]) for k in ("dual", "primal", "primal_sd"))
    axes[0].plot(zp[:, 0], zp[:, 1], "-", color=c, lw=2, label=f"$s_1$={s1:g}")
    axes[0].plot(zd[:, 0], zd[:, 1], ":", color=c, lw=2)
    axes[0].plot(*np.abs(runs[i]["fixed_point_z"]["exact"]), "o", ms=9, mfc="none", mec="k")
    axes[1].plot(zp[:, 0], zp[:, 1], "-", color=c, lw=1, alpha=0.35)
    axes[1].plot(zs[:, 0], zs[:, 1], "--", color=c, lw=2, label=f"$s_1$={s1:g}")
    axes[1].plot(*np.abs(runs[i]["fixed_point_z"]["sd"]), "o", ms=9, mfc="none", mec="k")
  axes[0].set_title(
    "weight decay (log axes): primal GD from θ=0 (solid),\n"
    "dual GA from α=1/2 (dotted); ○ = dual.fixed_point(exact)",
    fontsize=10,
  )
  axes[1].set_title(
    "spectral decoupling: primal GD from θ=0 (dashed),\n"
    "weight-decay primal faint; ○ = dual.fixed_point(sd)",
    fontsize=10,
  )
  s1s = [r["s1"] for r in runs]
  final = lambda f: [abs(f(r)[1]) for r in runs]
  ax = axes[2]
  ax.plot(
    s1s,
    final(lambda r: r["fixed_point_z"]["exact"]),
    "k-o",
    mfc="none",
    label="weight decay: fixed point (exact)",
  )
  ax.plot(s1s, final(lambda r: r["primal"]["z_end"]), "C0x", ms=9, label="weight decay: primal end")
  ax.plot(s1s, final(lambda r: r["dual"]["z_end"]), "C1+", ms=12, label="weight decay: dual end")
  ax.plot(
    s1s, final(lambda r: r["fixed_point_z"]["sd"]), "k--s", mfc="none", label="SD: fixed point"
  )
  ax.plot(s1s, final(lambda r: r["primal_sd"]["z_end"]), "C2x", ms=9, label="SD: primal end")
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
  fig.suptitle(
    f"Figure 5: U(δ={cfg['delta']}), S=diag($s_1$, {cfg['s2']:g}), λ={cfg['lam']}, y=(+1,+1)"
  )
  return _save(plt, fig, run_dir / "figure5")


def load(run_dir) -> dict:
  res = results_lib.read_json(Path(run_dir) / "results.json")
  if res is None:
    raise FileNotFoundError(
      f"no results.json in {run_dir}: run experiments.theorem2 or experiments.primal_dual first"
    )
  return res


def draw(run_dir) -> list[Path]:
  """Draws the figures of what ``run_dir/results.json`` holds; returns their paths."""
  run_dir = Path(run_dir)
  res = load(run_dir)
  if res["experiment"] == "primal_dual":
    return draw_figure5(res, run_dir)
  paths = []
  if "linear" in res["metrics"]:
    paths += draw_linear(res, run_dir / "theorem2_linear")
  if res["metrics"].get("network"):
    paths += draw_network(res, run_dir / "theorem2_network")
  return paths


def report(run_dir) -> dict:
  """Prints the tables, draws the figures of ``run_dir`` and returns its results."""
  res = load(run_dir)
  print(tables(res))
  print("wrote", *draw(run_dir), Path(run_dir) / "results.json")
  return res


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.theorem2_report",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("run_dir", help="output folder of experiments.theorem2 or .primal_dual")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  provenance.gate_files([args.run_dir], args.allow_dirty, "Theorem 2 tables")
  report(args.run_dir)


if __name__ == "__main__":
  main()

"""Figure 1(d) from a run directory of ``experiments.two_moons_dynamics``.

    python -m analysis.two_moons_dynamics_figure runs/two_moons_dynamics/paper

reads ``results.json`` and ``trajectories/<setting>.npz`` and draws ``<figure>.{png,pdf}``
there. Top row, our named features: the (z1, z2) path (seed mean), z1(t), z2(t) and the two
feature functions. Bottom row, the released code's view: its own plot (seed-mean |r_c| over
linear steps, both columns on one axis), each column on a log-step axis, and the two
columns' feature functions. Feature functions are seed 0's, for the last setting's Δ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.experiment import results as results_lib

COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown")
RELEASED_COLORS = ("#2D7F58", "#FA7F05")  # the released plot's colours for columns 1 and 6


def load(run_dir: Path):
  res = results_lib.read_json(run_dir / "results.json")
  if res is None:
    raise FileNotFoundError(f"no results.json in {run_dir}: run experiments.two_moons_dynamics")
  names = [n for n in res["config"]["settings"] if n in res["metrics"]]
  trajs = {}
  for n in names:
    with np.load(run_dir / "trajectories" / f"{n}.npz") as f:
      trajs[n] = {k: f[k] for k in f.files}
  return res, names, trajs


def _time_axis(ax, name):
  ax.set_xscale("symlog", linthresh=10)
  ax.set(xlabel="step", ylabel=name)
  ax.grid(alpha=0.3)


def _feature_map(fig, ax, g, grid, title):
  n = int(round(np.sqrt(len(grid))))
  lim = float(np.abs(grid).max())
  im = ax.imshow(g.reshape(n, n), origin="lower", extent=(-lim, lim, -lim, lim), cmap="RdBu_r")
  ax.set_title(title, fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.046)


def draw(run_dir, stem: str | None = None) -> list[Path]:
  run_dir = Path(run_dir)
  res, names, trajs = load(run_dir)
  cfg, met = res["config"], res["metrics"]
  cols = cfg["released_columns"]
  plt = results_lib.pyplot()
  fig, axes = plt.subplots(2, 5, figsize=(22, 8.5))
  plane, t1, t2, m1, m2 = axes[0]
  rel, r1, r2, m3, m4 = axes[1]
  for i, name in enumerate(names):
    s, c = cfg["settings"][name], COLORS[i % len(COLORS)]
    z, r = trajs[name]["z"].mean(0), trajs[name]["released"].mean(0)
    t = np.arange(len(z))
    plane.plot(z[:, 0], z[:, 1], s["style"], color=c, lw=2, label=s["title"])
    plane.plot(z[-1, 0], z[-1, 1], "o", color=c)
    for frac in (0.01, 0.1):
      j = int(frac * (len(t) - 1))
      plane.plot(z[j, 0], z[j, 1], "x", color=c, ms=6)
    for ax, y in ((t1, z[:, 0]), (t2, z[:, 1]), (r1, r[:, 0]), (r2, r[:, 1])):
      ax.plot(t, y, s["style"], color=c, label=s["title"])
    for j, rc in enumerate(RELEASED_COLORS[: r.shape[1]]):
      rel.plot(
        t,
        r[:, j],
        s["style"],
        color=rc,
        lw=1.5,
        label=f"column {cols[j]}" if i == len(names) - 1 else None,
      )
  seeds = cfg["seeds"]
  plane.set(
    xlabel="z1: response to the horizontal feature", ylabel="z2: response to the vertical feature"
  )
  plane.set_title(
    f"ours: z = uᵀY(ŷ_t − ŷ_0), mean over {seeds} seeds\nx = 1%, 10% of steps, o = end", fontsize=9
  )
  plane.legend(fontsize=8)
  plane.grid(alpha=0.3)
  for ax, label in (
    (t1, "z1 (horizontal)"),
    (t2, "z2 (vertical)"),
    (r1, f"|r_{cols[0]}|"),
    (r2, f"|r_{cols[-1]}|"),
  ):
    _time_axis(ax, label)
  t1.legend(fontsize=8)
  rel.set(xlabel="step", ylabel="|ŷ_t · U_K[:, c]|")
  rel.set_title(
    f"released view (Figure_2/moon_fig_2.py): |ŷ_t·U_K| at columns {cols}\n"
    f"U_K: left singular vectors of the NTK Gram at θ0; mean over {seeds} seeds; "
    "line style = setting",
    fontsize=8,
  )
  rel.legend(fontsize=8)
  rel.grid(alpha=0.3)
  last = names[-1]
  delta = cfg["settings"][last]["delta"]
  tr = trajs[last]
  corr, corr_rel = met[last]["corr_mean"], met[last]["corr_released_mean"]
  for ax, g, label, cc in (
    (m1, tr["g"][0], "z1", corr[0]),
    (m2, tr["g"][1], "z2", corr[1]),
    (m3, tr["g_released"][0], f"column {cols[0]}", corr_rel[0]),
    (m4, tr["g_released"][-1], f"column {cols[-1]}", corr_rel[-1]),
  ):
    _feature_map(
      fig,
      ax,
      g,
      tr["grid"],
      f"feature of {label} (seed 0, Δ={delta:+.1f})\ncorr with (x1, x2), seed "
      f"mean: ({cc[0]:+.2f}, {cc[1]:+.2f})",
    )
  lines = [
    f"Features per seed at θ0: K = Φ0Φ0ᵀ (empirical NTK, float64); YΦ0 = U S Vᵀ. "
    f"Ours: u1 ∝ U_k U_kᵀ Y x1, u2 ∝ U_k U_kᵀ Y x2 ⟂ u1 (k={cfg['num_candidates']}); "
    f"released: columns {cols} (0-based) of K's eigenvectors U_K = ±Y U, uncentred "
    "logits, absolute value."
  ]
  for name in names:
    m = met[name]
    rf = ", ".join(
      f"|r_{c}| {r['mean']:.1f} ± {r['std']:.1f}" for c, r in zip(cols, m["released_final"])
    )
    lines.append(
      f"{cfg['settings'][name]['title']:<11} final z1 {m['z1_final']['mean']:6.1f} "
      f"± {m['z1_final']['std']:4.1f}, z2 {m['z2_final']['mean']:5.1f} ± "
      f"{m['z2_final']['std']:4.1f};  {rf};  share of ‖Y x‖² in top-k "
      f"{m['captured_mean'][0]:.3f}/{m['captured_mean'][1]:.3f} (mean ± sample std)"
    )
  fig.text(0.01, 0.005, "\n".join(lines), fontsize=8, family="monospace", va="bottom")
  fig.tight_layout(rect=(0, 0.09, 1, 1))
  paths = results_lib.save_figure(fig, run_dir / (stem or cfg["figure"]))
  plt.close(fig)
  return paths


def table(res) -> list[str]:
  """README's table (markdown, mean ± sample std of the final values) and, for every SD setting,
  the per-seed paired difference to the ERM setting with the same Δ (same data and θ0)."""
  cfg, met, per_seed = res["config"], res["metrics"], res["per_seed"]
  settings, cols = cfg["settings"], cfg["released_columns"]
  show = lambda d: f"{d['mean']:.1f} ± {d['std']:.1f}"
  lines = [
    f"| setting ({cfg['seeds']} seeds) | z1 final | z2 final | z2/z1 | "
    + " | ".join(f"\\|r_{c}\\| final" for c in cols)
    + " |",
    "|---" * (4 + len(cols)) + "|",
  ]
  for name, m in met.items():
    lines.append(
      f"| {settings[name]['title']} | {show(m['z1_final'])} | {show(m['z2_final'])} | "
      f"{m['z2_over_z1_final']:.3f} | " + " | ".join(show(r) for r in m["released_final"]) + " |"
    )
  for sd, s in settings.items():
    for erm, e in settings.items():
      paired = s["sd_lambda"] > 0 and e["sd_lambda"] == 0 and s["delta"] == e["delta"]
      if paired and sd in met and erm in met:
        diffs = {
          "z1": np.subtract(per_seed[sd]["z1_final"], per_seed[erm]["z1_final"]),
          "z2": np.subtract(per_seed[sd]["z2_final"], per_seed[erm]["z2_final"]),
        }
        r = np.subtract(per_seed[sd]["released_final"], per_seed[erm]["released_final"])
        diffs.update({f"|r_{c}|": r[:, j] for j, c in enumerate(cols)})
        lines.append(
          f"paired {s['title']} − {e['title']} (per seed): "
          + "; ".join(
            f"{k} {show(results_lib.mean_std(d))} (higher in {int(np.sum(d > 0))}/{len(d)})"
            for k, d in diffs.items()
          )
        )
  return lines


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.two_moons_dynamics_figure",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("run_dir", help="output folder of experiments.two_moons_dynamics")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  run_dir = Path(args.run_dir)
  provenance.gate_files([run_dir], args.allow_dirty, "Figure 1(d) table")
  print("wrote", *draw(run_dir))
  print("\n".join(table(load(run_dir)[0])))


if __name__ == "__main__":
  main()

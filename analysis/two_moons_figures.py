"""Two-moons decision maps (Figure 1 a–c, Appendix B) from a run directory.

    python -m analysis.two_moons_figures runs/two_moons/paper

reads ``results.json`` and ``maps/<panel>.npz`` written by ``experiments.two_moons`` and draws
``<figure>.{png,pdf}`` there: seed-averaged logits, their zero level set (black) and seed 0's
training points, with each panel's input-space margin in its title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.experiment import results as results_lib
from gs_jax.data import toy


def load_maps(run_dir: Path, names) -> dict:
  maps = {}
  for name in names:
    with np.load(run_dir / "maps" / f"{name}.npz") as m:
      maps[name] = (m["xs"], m["ys"], m["z"])
  return maps


def draw(run_dir, names=None, stem: str | None = None, ncols: int | None = None) -> list[Path]:
  """Draws the panels ``names`` (default: every panel in results.json) of ``run_dir``."""
  run_dir = Path(run_dir)
  res = results_lib.read_json(run_dir / "results.json")
  if res is None:
    raise FileNotFoundError(f"no results.json in {run_dir}: run experiments.two_moons first")
  names = [n for n in (names or res["config"]["panels"]) if n in res["metrics"]]
  if not names:
    raise ValueError(f"{run_dir}/results.json holds none of the requested panels")
  stem = stem or res["config"]["figure"]
  ncols = min(ncols or res["config"]["ncols"], len(names))
  maps = load_maps(run_dir, names)
  plt = results_lib.pyplot()
  nrows = -(-len(names) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 3.2 * nrows), squeeze=False)
  for ax, name in zip(axes.ravel(), names):
    panel, m = res["config"]["panels"][name], res["metrics"][name]
    xs, ys, z = maps[name]
    lim = max(np.percentile(np.abs(z), 95), 1e-3)
    ax.contourf(xs, ys, np.clip(z, -lim, lim), levels=21, cmap="RdBu_r", alpha=0.75)
    ax.contour(xs, ys, z, levels=[0.0], colors="k", linewidths=1.5)
    x, y = toy.two_moons(0, panel["delta"], rotation_deg=panel["rotation_deg"])
    for label, color in ((1, "tab:red"), (-1, "tab:blue")):
      pts = x[y == label]
      ax.scatter(pts[:, 0], pts[:, 1], s=6, c=color, edgecolors="k", linewidths=0.2)
    ax.set_title(
      f"{panel['title']}\n{m['seeds']} seeds · {panel['steps']:,} steps\nmargin min "
      f"{m['margin_min']:.3f} · median {m['margin_median']:.3f}",
      fontsize=8,
    )
    ax.set(xlim=(-2, 2), ylim=(-2, 2), aspect="equal", xticks=[], yticks=[])
  for ax in axes.ravel()[len(names) :]:
    ax.axis("off")
  fig.tight_layout()
  paths = results_lib.save_figure(fig, run_dir / stem)
  plt.close(fig)
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.two_moons_figures",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("run_dir", help="output folder of experiments.two_moons")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  provenance.gate_files([args.run_dir], args.allow_dirty, "two-moons figure")
  print("wrote", *draw(args.run_dir))


if __name__ == "__main__":
  main()

r"""Table 2 and Figure 3 (Colored MNIST) from run directories of ``experiments.colored_mnist``.

    python -m analysis.cmnist_table --runs_dir=runs/colored_mnist --out_dir=runs/colored_mnist

Reads ``<runs_dir>/<method>/results.json`` for every method present and writes into
``--out_dir``: ``table2.md`` and ``table2.csv`` (train/test accuracy, mean ± std over restarts,
beside the paper's numbers and the difference in paper standard deviations), and
``figure3.png``/``figure3.pdf`` (per method: 2×2 heatmaps of accuracy (top) and mean binary
prediction entropy (bottom) over the four test variants: rows digit/blank, columns
grayscale/coloured).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import numpy as np

from experiments.colored_mnist import PAPER_TABLE2
from gs_jax.data.colored_mnist import VARIANT_GRID

ORDER = ("erm", "rex", "irm", "sd", "sd_clean", "oracle")
NAMES = {"erm": "ERM", "rex": "V-REx", "irm": "IRM", "sd": "SD", "sd_clean": "SD (clean)",
         "oracle": "Oracle (grayscale)"}
# Figure 3 of the paper (accuracy %, entropy), rows digit/blank × columns grayscale/coloured,
# where docs/protocols.md §3.4 quotes them.
PAPER_FIG3 = {"erm": {"color_blank": (9.4, 0.00), "color_digits": (23.9, None)},
              "sd": {"color_blank": (9.4, 0.41), "color_digits": (67.2, None)},
              "irm": {"color_blank": (49.6, None)}}


def load_runs(runs_dir: str) -> dict[str, dict]:
  """``{method: results}`` for every ``<runs_dir>/<method>/results.json`` (paper order)."""
  if not os.path.isdir(runs_dir):
    raise ValueError(f"runs_dir {runs_dir!r} is not a directory")
  runs = {}
  for name in sorted(os.listdir(runs_dir), key=lambda m: (ORDER.index(m) if m in ORDER else 99, m)):
    path = os.path.join(runs_dir, name, "results.json")
    if os.path.isfile(path):
      with open(path) as f:
        runs[name] = json.load(f)
  if not runs:
    raise ValueError(f"no <method>/results.json under {runs_dir!r}; run "
                     "`python -m experiments.colored_mnist --out_dir=<runs_dir>/<method>` first")
  return runs


def table_rows(runs: dict[str, dict]) -> list[dict]:
  """One row per method: ours and the paper's train/test accuracy in %."""
  rows = []
  for method, res in runs.items():
    tr = 100 * np.array([r["train_acc"] for r in res["restarts"]])
    te = 100 * np.array([r["test_acc"] for r in res["restarts"]])
    paper = PAPER_TABLE2.get(method)
    row = {"method": NAMES.get(method, method), "restarts": len(tr),
           "steps": res["config"]["steps"], "n_train": res.get("n_train"),
           "train_mean": tr.mean(), "train_std": tr.std(), "test_mean": te.mean(),
           "test_std": te.std()}
    if paper:
      (ptm, pts), (pem, pes) = paper
      row.update(paper_train_mean=ptm, paper_train_std=pts, paper_test_mean=pem,
                 paper_test_std=pes, train_diff_sd=(tr.mean() - ptm) / pts,
                 test_diff_sd=(te.mean() - pem) / pes)
    rows.append(row)
  return rows


def markdown_table(rows: list[dict]) -> str:
  out = ["| Method | restarts | train acc % (ours) | train acc % (paper) | test acc % (ours) "
         "| test acc % (paper) | Δtest / paper std |",
         "|---|---|---|---|---|---|---|"]
  for r in rows:
    paper_tr = (f"{r['paper_train_mean']:.1f} ± {r['paper_train_std']:.1f}"
                if "paper_train_mean" in r else "–")
    paper_te = (f"{r['paper_test_mean']:.1f} ± {r['paper_test_std']:.1f}"
                if "paper_test_mean" in r else "–")
    diff = f"{r['test_diff_sd']:+.1f}" if "test_diff_sd" in r else "–"
    out.append(f"| {r['method']} | {r['restarts']} | {r['train_mean']:.1f} ± {r['train_std']:.1f} "
               f"| {paper_tr} | {r['test_mean']:.1f} ± {r['test_std']:.1f} | {paper_te} | {diff} |")
  out.append("| Optimum | | 75 | 75 | 75 | 75 | |")
  return "\n".join(out)


def csv_table(rows: list[dict]) -> str:
  keys = ["method", "restarts", "steps", "n_train", "train_mean", "train_std", "test_mean",
          "test_std", "paper_train_mean", "paper_train_std", "paper_test_mean", "paper_test_std",
          "train_diff_sd", "test_diff_sd"]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
  return buf.getvalue()


def variant_grids(res: dict) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy %, entropy) 2×2 grids, mean over restarts, in :data:`VARIANT_GRID` layout."""
  acc = np.zeros((2, 2))
  ent = np.zeros((2, 2))
  for i, row in enumerate(VARIANT_GRID):
    for j, name in enumerate(row):
      acc[i, j] = 100 * np.mean([r["variants"][name]["accuracy"] for r in res["restarts"]])
      ent[i, j] = np.mean([r["variants"][name]["entropy"] for r in res["restarts"]])
  return acc, ent


def figure3(runs: dict[str, dict], path_stem: str) -> list[str]:
  """Accuracy (top) and entropy (bottom) heatmaps per method; writes PNG and PDF."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  methods = list(runs)
  fig, axes = plt.subplots(2, len(methods), figsize=(2.6 * len(methods) + 1.2, 5.2),
                           squeeze=False, constrained_layout=True)
  rows, cols = ["digit", "blank"], ["grayscale", "coloured"]
  for k, method in enumerate(methods):
    acc, ent = variant_grids(runs[method])
    for ax, data, cmap, vmax, fmt in ((axes[0, k], acc, "RdBu", 100.0, "{:.1f}%"),
                                      (axes[1, k], ent, "YlGn_r", np.log(2), "{:.2f}")):
      im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax)
      for i in range(2):
        for j in range(2):
          v = data[i, j] / vmax
          ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=11,
                  color="white" if (v < 0.25 or v > 0.75) and cmap == "RdBu" or
                  (cmap != "RdBu" and v < 0.35) else "black")
      ax.set_xticks([0, 1], cols)
      ax.set_yticks([0, 1], rows)
      ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False, length=0)
      for s in ax.spines.values():
        s.set_visible(False)
      if k == len(methods) - 1:
        fig.colorbar(im, ax=ax, shrink=0.8, label="accuracy (%)" if cmap == "RdBu"
                     else "entropy (nats)")
    n = len(runs[method]["restarts"])
    axes[0, k].set_title(f"{NAMES.get(method, method)} ({n} runs)", pad=22)
  fig.suptitle("Colored MNIST test variants: accuracy (top), mean prediction entropy (bottom)")
  paths = [path_stem + ".png", path_stem + ".pdf"]
  for p in paths:
    fig.savefig(p, dpi=150)
  plt.close(fig)
  return paths


def figure3_markdown(runs: dict[str, dict]) -> str:
  out = ["| Method | gray digits acc / H | coloured digits acc / H | gray blank acc / H "
         "| coloured blank acc / H |", "|---|---|---|---|---|"]
  for method, res in runs.items():
    acc, ent = variant_grids(res)
    cells = [f"{acc[i, j]:.1f}% / {ent[i, j]:.2f}" for i in range(2) for j in range(2)]
    out.append(f"| {NAMES.get(method, method)} | " + " | ".join(cells) + " |")
  out.append("\nPaper (docs/protocols.md §3.4): coloured blank ERM 9.4% / 0.00, SD 9.4% / 0.41, IRM 49.6%; "
             "coloured digits ERM 23.9%, SD 67.2%.")
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m analysis.cmnist_table", description=__doc__.split("\n\n")[0])
  p.add_argument("--runs_dir", default="runs/colored_mnist",
                 help="folder holding <method>/results.json")
  p.add_argument("--out_dir", default=None, help="where tables and figures go (default runs_dir)")
  args = p.parse_args(argv)
  out_dir = args.out_dir or args.runs_dir
  os.makedirs(out_dir, exist_ok=True)
  runs = load_runs(args.runs_dir)
  rows = table_rows(runs)
  md = markdown_table(rows) + "\n\nFigure 3 numbers (mean over restarts):\n\n" + figure3_markdown(runs)
  with open(os.path.join(out_dir, "table2.md"), "w") as f:
    f.write(md + "\n")
  with open(os.path.join(out_dir, "table2.csv"), "w") as f:
    f.write(csv_table(rows))
  print(md)
  print("wrote", os.path.join(out_dir, "table2.md"), os.path.join(out_dir, "table2.csv"))
  try:
    paths = figure3(runs, os.path.join(out_dir, "figure3"))
  except ImportError as e:  # the tables above are still written
    print(f"Figure 3 not drawn ({e}); install matplotlib")
    return 1
  print("wrote", *paths)
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""Table 2 and Figure 3 (Colored MNIST) from run directories of ``experiments.colored_mnist``.

    python -m analysis.cmnist_table --runs_dir=runs/colored_mnist --out_dir=runs/colored_mnist

Reads ``<runs_dir>/<name>/results.json`` for every run directory present and writes into
``--out_dir``: ``table2.md`` and ``table2.csv`` (train/test accuracy of the final models, mean ±
sample std over restarts, beside the paper's numbers (``gs_jax.paper``) and the difference in
paper standard deviations; the CSV also has the released code's last-step accuracies), and
``figure3.png``/``figure3.pdf`` (per run: 2×2 heatmaps of accuracy (top) and mean binary
prediction entropy (bottom) over the four test variants: rows digit/blank, columns
grayscale/coloured). Result files written before the experiment used ``gs_jax.results``
(``docs/results/colored_mnist_h200``) are read too.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys

import numpy as np

from analysis import provenance
from gs_jax.base import paper
from gs_jax.experiment import results
from gs_jax.data.colored_mnist import VARIANT_GRID, VARIANTS

ORDER = ("erm", "rex", "irm", "sd", "sd_clean", "oracle")
NAMES = {
  "erm": "ERM",
  "rex": "V-REx",
  "irm": "IRM",
  "sd": "SD",
  "sd_clean": "SD (clean)",
  "oracle": "Oracle (grayscale)",
}
ACCURACIES = ("train_acc", "test_acc", "last_step_train_acc", "last_step_test_acc")


def method_of(res: dict) -> str:
  """The preset (``method`` in results written before the presets) a run was started from."""
  config = res["config"]
  return config.get("preset", config.get("method", "?"))


def per_seed(res: dict) -> dict:
  """``{accuracy name: (seeds,) array, "variants": {name: {"accuracy", "entropy"}}}``."""
  if "per_seed" in res:
    out = {k: np.asarray(res["per_seed"][k], np.float64) for k in ACCURACIES}
    out["variants"] = {
      v: {k: np.asarray(a, np.float64) for k, a in m.items()}
      for v, m in res["per_seed"]["variants"].items()
    }
    return out
  restarts = res["restarts"]  # before gs_jax.results: one dict per restart
  out = {k: np.array([r[k] for r in restarts], np.float64) for k in ACCURACIES}
  out["variants"] = {
    v: {
      k: np.array([r["variants"][v][k] for r in restarts], np.float64)
      for k in ("accuracy", "entropy")
    }
    for v in VARIANTS
  }
  return out


def load_runs(runs_dir: str) -> dict[str, dict]:
  """``{directory name: results}`` for every ``<runs_dir>/<name>/results.json``, the paper's
  methods first in its order."""
  if not os.path.isdir(runs_dir):
    raise ValueError(f"runs_dir {runs_dir!r} is not a directory")
  runs = {}
  for name in sorted(os.listdir(runs_dir)):
    res = results.read_json(os.path.join(runs_dir, name, "results.json"))
    if res is not None and "config" in res:
      runs[name] = res
  if not runs:
    raise ValueError(
      f"no <name>/results.json under {runs_dir!r}; run `python -m "
      f"experiments.colored_mnist --preset=<method> --out_dir=<runs_dir>/<method>`"
    )
  rank = lambda name: (
    ORDER.index(method_of(runs[name])) if method_of(runs[name]) in ORDER else len(ORDER),
    name,
  )
  return {name: runs[name] for name in sorted(runs, key=rank)}


def label(name: str, res: dict) -> str:
  method = method_of(res)
  text = NAMES.get(method, method)
  return text if name == method else f"{text} [{name}]"


def table_rows(runs: dict[str, dict]) -> list[dict]:
  """One row per run: ours (mean ± sample std, %) and the paper's train/test accuracy."""
  rows = []
  for name, res in runs.items():
    seeds = per_seed(res)
    row = {
      "method": label(name, res),
      "restarts": len(seeds["train_acc"]),
      "steps": res["config"]["steps"],
      "n_train": res.get("n_train"),
    }
    for key in ACCURACIES:
      ms = results.mean_std(100 * seeds[key])
      prefix = key.replace("_acc", "")
      row[f"{prefix}_mean"], row[f"{prefix}_std"] = ms["mean"], ms["std"]
    ref = paper.TABLE2.get(method_of(res))
    if ref:
      for split in ("train", "test"):
        mean, std = ref[split]
        row.update(
          {
            f"paper_{split}_mean": mean,
            f"paper_{split}_std": std,
            f"{split}_diff_sd": (row[f"{split}_mean"] - mean) / std,
          }
        )
    rows.append(row)
  return rows


def markdown_table(rows: list[dict]) -> str:
  out = [
    "| Method | restarts | train acc % (ours) | train acc % (paper) | test acc % (ours) "
    "| test acc % (paper) | Δtest / paper std |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    ours = lambda s: f"{r[f'{s}_mean']:.1f} ± {r[f'{s}_std']:.1f}"
    ref = lambda s: (
      paper.fmt((r[f"paper_{s}_mean"], r[f"paper_{s}_std"])) if f"paper_{s}_mean" in r else "–"
    )
    diff = f"{r['test_diff_sd']:+.1f}" if "test_diff_sd" in r else "–"
    out.append(
      f"| {r['method']} | {r['restarts']} | {ours('train')} | {ref('train')} "
      f"| {ours('test')} | {ref('test')} | {diff} |"
    )
  opt = f"{paper.TABLE2_OPTIMUM:g}"
  out.append(f"| Optimum | | {opt} | {opt} | {opt} | {opt} | |")
  return "\n".join(out)


def csv_table(rows: list[dict]) -> str:
  keys = [
    "method",
    "restarts",
    "steps",
    "n_train",
    "train_mean",
    "train_std",
    "test_mean",
    "test_std",
    "last_step_train_mean",
    "last_step_train_std",
    "last_step_test_mean",
    "last_step_test_std",
    "paper_train_mean",
    "paper_train_std",
    "paper_test_mean",
    "paper_test_std",
    "train_diff_sd",
    "test_diff_sd",
  ]
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
  return buf.getvalue()


def variant_grids(res: dict) -> tuple[np.ndarray, np.ndarray]:
  """(accuracy %, entropy) 2×2 grids, mean over restarts, in :data:`VARIANT_GRID` layout."""
  variants = per_seed(res)["variants"]
  acc = np.array(
    [[100 * variants[name]["accuracy"].mean() for name in row] for row in VARIANT_GRID]
  )
  ent = np.array([[variants[name]["entropy"].mean() for name in row] for row in VARIANT_GRID])
  return acc, ent


def figure3(runs: dict[str, dict], path_stem: str) -> list:
  """Accuracy (top) and entropy (bottom) heatmaps per run; writes PNG and PDF."""
  plt = results.pyplot()
  names = list(runs)
  fig, axes = plt.subplots(
    2, len(names), figsize=(2.6 * len(names) + 1.2, 5.2), squeeze=False, constrained_layout=True
  )
  rows, cols = ["digit", "blank"], ["grayscale", "coloured"]
  for k, name in enumerate(names):
    acc, ent = variant_grids(runs[name])
    for ax, data, cmap, vmax, fmt in (
      (axes[0, k], acc, "RdBu", 100.0, "{:.1f}%"),
      (axes[1, k], ent, "YlGn_r", np.log(2), "{:.2f}"),
    ):
      im = ax.imshow(data, cmap=cmap, vmin=0.0, vmax=vmax)
      for i in range(2):
        for j in range(2):
          v = data[i, j] / vmax
          dark = (v < 0.25 or v > 0.75) if cmap == "RdBu" else v < 0.35
          ax.text(
            j,
            i,
            fmt.format(data[i, j]),
            ha="center",
            va="center",
            fontsize=11,
            color="white" if dark else "black",
          )
      ax.set_xticks([0, 1], cols)
      ax.set_yticks([0, 1], rows)
      ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False, length=0)
      for s in ax.spines.values():
        s.set_visible(False)
      if k == len(names) - 1:
        fig.colorbar(
          im, ax=ax, shrink=0.8, label="accuracy (%)" if cmap == "RdBu" else "entropy (nats)"
        )
    n = len(per_seed(runs[name])["train_acc"])
    axes[0, k].set_title(f"{label(name, runs[name])}\n({n} runs)", pad=22)
  fig.suptitle("Colored MNIST test variants: accuracy (top), mean prediction entropy (bottom)")
  paths = results.save_figure(fig, path_stem)
  plt.close(fig)
  return paths


def figure3_markdown(runs: dict[str, dict]) -> str:
  out = [
    "| Method | gray digits acc / H | coloured digits acc / H | gray blank acc / H "
    "| coloured blank acc / H |",
    "|---|---|---|---|---|",
  ]
  for name, res in runs.items():
    acc, ent = variant_grids(res)
    cells = [f"{acc[i, j]:.1f}% / {ent[i, j]:.2f}" for i in range(2) for j in range(2)]
    out.append(f"| {label(name, res)} | " + " | ".join(cells) + " |")
  quoted = []
  for method, cells in paper.FIGURE3.items():
    for variant, (acc, ent) in cells.items():
      if acc is not None:
        quoted.append(
          f"{NAMES[method]} {variant.replace('color', 'coloured').replace('_', ' ')} {acc}%"
          + (f" / {ent:.2f}" if ent is not None else "")
        )
  out.append("\nPaper (docs/protocols.md §3.4): " + "; ".join(quoted) + ".")
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.cmnist_table", description=__doc__.split("\n\n")[0]
  )
  p.add_argument(
    "--runs_dir", default="runs/colored_mnist", help="folder holding <name>/results.json"
  )
  p.add_argument("--out_dir", default=None, help="where tables and figures go (default runs_dir)")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  out_dir = args.out_dir or args.runs_dir
  os.makedirs(out_dir, exist_ok=True)
  runs = load_runs(args.runs_dir)
  gate = provenance.gate_files(
    [os.path.join(args.runs_dir, n) for n in runs], args.allow_dirty, "Table 2"
  )
  note = provenance.legacy_note(gate)
  rows = table_rows(runs)
  md = (
    markdown_table(rows)
    + (f"\n\n{note}" if note else "")
    + "\n\nTrain/test accuracy of the final models, mean ± sample std "
    "(ddof=1) over restarts; the paper's ± is the released code's np.std (ddof=0).\n\n"
    "Figure 3 numbers (mean over restarts):\n\n" + figure3_markdown(runs)
  )
  with open(os.path.join(out_dir, "table2.md"), "w") as f:
    f.write(md + "\n")
  with open(os.path.join(out_dir, "table2.csv"), "w") as f:
    f.write(csv_table(rows))
  print(md)
  print("wrote", os.path.join(out_dir, "table2.md"), os.path.join(out_dir, "table2.csv"))
  print("wrote", *figure3(runs, os.path.join(out_dir, "figure3")))
  return 0


if __name__ == "__main__":
  sys.exit(main())

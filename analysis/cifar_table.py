"""Table 1 and Figure 2 from saved ``experiments.cifar`` run directories (docs/protocols.md §3.3).

    python -m analysis.cifar_table --runs='runs/cifar/cifar2_*' --out_dir=runs/cifar_table

``--runs`` takes run directories or glob patterns (comma-separated or repeated). Runs are
grouped by (dataset, model, method, λ, epochs, train_limit); every cell is mean ± std over
seeds (:func:`gs_jax.results.mean_std`: sample std, 0 for a single run). Writes ``table1.md``
and ``table1.csv`` (beside the paper's numbers, :data:`gs_jax.paper.TABLE1`),
``figure2.png``/``.pdf`` (CDF of the per-example L∞ margin, ERM vs SD, pooled over seeds; a
curve further right/below means larger margins) and ``summary.json``. Results files written
before the :class:`gs_jax.results.RunWriter` schema (``docs/results/cifar2_paper_h200``) are
read as well.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
from collections import defaultdict

import numpy as np

from gs_jax import paper, results

# (column, getter of a run's metrics, scale): accuracies in %, the median margin in 1/255 units.
COLUMNS = (
    ("train", lambda m: m["train_acc"], 100),
    ("test IID", lambda m: m["test_iid_acc"]["full"], 100),
    ("test IID (lossless)", lambda m: m["test_iid_acc"]["lossless"], 100),
    ("OOD ε=0.05", lambda m: m["test_ood_acc"]["eps_0.05"]["full"], 100),
    ("OOD ε=5/255", lambda m: m["test_ood_acc"]["eps_5/255"]["full"], 100),
    ("OOD ε=5/255 (lossless)", lambda m: m["test_ood_acc"]["eps_5/255"]["lossless"], 100),
    ("median margin ×255", lambda m: m["margin_median"], 255),
)


def find_runs(patterns) -> list[str]:
  dirs = []
  for pat in patterns:
    for p in pat.split(","):
      matches = sorted(glob.glob(p)) or [p]
      dirs += [m for m in matches if os.path.isfile(os.path.join(m, "results.json"))]
  if not dirs:
    raise ValueError(f"no run directory with a results.json matches {patterns}")
  return sorted(set(dirs))


def read_run(run_dir) -> dict:
  """A run's results.json; a file of the earlier schema (metrics at the top level,
  ``config.config`` for the network) is mapped onto the current one."""
  r = results.read_json(os.path.join(run_dir, "results.json"))
  if "metrics" not in r:
    c = r["config"]
    r["config"] = {**c, "model": c["config"], "augment": not c.get("no_augment", False)}
    r["metrics"] = {k: r[k] for k in ("train_acc", "test_iid_acc", "test_ood_acc",
                                      "strong_attack") if k in r}
    r["metrics"]["margin_median"] = r["margins"]["median"]
  return r


def load_groups(dirs):
  groups = defaultdict(list)
  for d in dirs:
    r = read_run(d)
    c = r["config"]
    groups[(c["dataset"], c["model"], r["method"], c["sd_lambda"], c["epochs"],
            c.get("train_limit", 0))].append(r)
  return dict(sorted(groups.items()))


def mean_std(values, scale=100):
  s = results.mean_std(np.asarray(values, float) * scale)
  return s["mean"], s["std"]


def paper_cells(dataset, method) -> str:
  entry = paper.TABLE1.get((dataset, method.lower()))
  if entry is None:
    return "–"
  return " / ".join(paper.fmt(entry[k]) for k in ("train", "iid", "ood"))


def make_table(groups):
  rows = []
  for (dataset, model, method, lam, epochs, limit), runs in groups.items():
    row = {"dataset": dataset, "model": model, "method": method, "sd_lambda": lam,
           "seeds": len(runs), "epochs": epochs, "n_train": runs[0]["data"]["n_train"],
           "augment": runs[0]["config"]["augment"]}
    for name, get, scale in COLUMNS:
      row[name] = mean_std([get(r["metrics"]) for r in runs], scale)
    strong = [r["metrics"]["strong_attack"] for r in runs if "strong_attack" in r["metrics"]]
    if strong:
      row["PGD-50×5 drop (pts, ε=0.05 / 5/255)"] = tuple(
          100 * max(s[e]["drop"] for s in strong) for e in ("eps_0.05", "eps_5/255"))
    row["paper (train / IID / OOD)"] = paper_cells(dataset, method)
    rows.append(row)
  return rows


def to_markdown(rows) -> str:
  keys = ["dataset", "model", "method", "sd_lambda", "seeds", "epochs", "n_train", "augment"]
  keys += [c[0] for c in COLUMNS]
  for r in rows:   # columns only some rows have (the attack-strength check), in first-seen order
    keys += [k for k in r if k not in keys]
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    cells = []
    for k in keys:
      v = r.get(k, "")
      if isinstance(v, tuple) and k.startswith("PGD"):
        cells.append(f"{v[0]:.1f} / {v[1]:.1f}")
      elif isinstance(v, tuple):
        cells.append(f"{v[0]:.1f} ± {v[1]:.1f}" if "margin" not in k else f"{v[0]:.2f} ± {v[1]:.2f}")
      else:
        cells.append(str(v))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(rows, path):
  fields = []
  for r in rows:
    for k, v in r.items():
      names = [f"{k} mean", f"{k} std"] if isinstance(v, tuple) else [k]
      fields += [n for n in names if n not in fields]
  with open(path + ".tmp", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      flat = {}
      for k, v in r.items():
        if isinstance(v, tuple):
          flat[f"{k} mean"], flat[f"{k} std"] = v
        else:
          flat[k] = v
      w.writerow(flat)
  os.replace(path + ".tmp", path)


def margins_of(runs):
  """Pooled margins (inf where PGD could not flip at eps_max; 0 if misclassified)."""
  return np.concatenate([[np.inf if v is None else v for v in r["margins"]["values"]]
                         for r in runs])


def figure2(groups, stem):
  plt = results.pyplot()
  datasets = sorted({k[0] for k in groups})
  fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
  for ax, dataset in zip(axes[0], datasets):
    eps_max = None
    for (ds, model, method, lam, epochs, _), runs in groups.items():
      if ds != dataset:
        continue
      m = margins_of(runs)
      eps_max = runs[0]["margins"]["eps_max"]
      grid = np.linspace(0, eps_max, 400)
      cdf = (m[None, :] <= grid[:, None]).mean(1)
      ax.plot(grid * 255, cdf, label=f"{method} (λ={lam:g}, {model}, {epochs} ep, "
              f"{len(runs)} seeds, n={len(m)})")
    for e, ls in ((5 / 255, ":"), (0.05, "--")):
      ax.axvline(e * 255, color="gray", ls=ls, lw=0.8)
    ax.set_xlabel("L∞ margin ε (in 1/255 pixel units)")
    ax.set_ylabel("fraction of test images with margin ≤ ε")
    ax.set_title(f"{dataset}: margin CDF (PGD-10 bisection)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  paths = results.save_figure(fig, stem)
  plt.close(fig)
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m analysis.cifar_table", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", action="append", required=True,
                 help="run directories or glob patterns (comma-separated or repeated)")
  p.add_argument("--out_dir", default="runs/cifar_table")
  args = p.parse_args(argv)
  groups = load_groups(find_runs(args.runs))
  rows = make_table(groups)
  os.makedirs(args.out_dir, exist_ok=True)
  md = to_markdown(rows)
  with open(os.path.join(args.out_dir, "table1.md.tmp"), "w") as f:
    f.write(md)
  os.replace(os.path.join(args.out_dir, "table1.md.tmp"), os.path.join(args.out_dir, "table1.md"))
  write_csv(rows, os.path.join(args.out_dir, "table1.csv"))
  figure2(groups, os.path.join(args.out_dir, "figure2"))
  summary = {"rows": rows, "margin_medians": {
      "/".join(map(str, k)): float(np.median(margins_of(v))) for k, v in groups.items()}}
  results.atomic_write_json(os.path.join(args.out_dir, "summary.json"), summary)
  print(md)


if __name__ == "__main__":
  main()

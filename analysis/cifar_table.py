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

Runs of the ``released`` preset (the authors' Figure-2 protocol, docs/protocols.md §3.3) go to
``released_table.md``/``.csv`` (grouped by classes, method and ``sd_coef``; OOD accuracies and
margin quantiles under the released-style and the strong attack, margins in [−1,1] units) and
``released_figure2_<classes>.png``/``.pdf`` per class pair: % of test points misclassified
against the L∞ perturbation in [−1,1] units (Figure 2's axes), ERM vs SD (sd_coef 0.01, 0.1),
both attacks, a band over seeds (min–max) when there are several; with ≥ 3 SD strengths,
``released_sweep_<classes>.png``: IID and OOD (ε = 0.05) accuracy and the median margin
against ``sd_coef``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
from collections import defaultdict

import numpy as np

from analysis import provenance
from gs_jax.base import paper
from gs_jax.experiment import results

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
    r["metrics"] = {
      k: r[k] for k in ("train_acc", "test_iid_acc", "test_ood_acc", "strong_attack") if k in r
    }
    r["metrics"]["margin_median"] = r["margins"]["median"]
  return r


def load_groups(dirs, by="model", strength="sd_lambda"):
  """Runs grouped by (dataset, config[by], method, config[strength], epochs, train_limit)."""
  groups = defaultdict(list)
  for d in dirs:
    r = read_run(d)
    c = r["config"]
    key = c[by] if by != "classes" or c["dataset"] == "cifar2" else "all"  # cifar10: all 10
    groups[
      (c["dataset"], key, r["method"], c[strength], c["epochs"], c.get("train_limit", 0))
    ].append(r)
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
  for (dataset, model, method, lam, epochs, _), runs in groups.items():
    row = {
      "dataset": dataset,
      "model": model,
      "method": method,
      "sd_lambda": lam,
      "seeds": len(runs),
      "epochs": epochs,
      "n_train": runs[0]["data"]["n_train"],
      "augment": runs[0]["config"]["augment"],
    }
    for name, get, scale in COLUMNS:
      row[name] = mean_std([get(r["metrics"]) for r in runs], scale)
    strong = [r["metrics"]["strong_attack"] for r in runs if "strong_attack" in r["metrics"]]
    if strong:
      row["PGD-50×5 drop (pts, ε=0.05 / 5/255)"] = tuple(
        100 * max(s[e]["drop"] for s in strong) for e in ("eps_0.05", "eps_5/255")
      )
    row["paper (train / IID / OOD)"] = paper_cells(dataset, method)
    rows.append(row)
  return rows


def to_markdown(rows, keys=None) -> str:
  if keys is None:
    keys = ["dataset", "model", "method", "sd_lambda", "seeds", "epochs", "n_train", "augment"]
    keys += [c[0] for c in COLUMNS]
  for r in rows:  # columns only some rows have (the attack-strength check), in first-seen order
    keys += [k for k in r if k not in keys]
  lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for r in rows:
    cells = []
    for k in keys:
      v = r.get(k, "")
      if isinstance(v, tuple) and k.startswith("PGD"):
        cells.append(f"{v[0]:.1f} / {v[1]:.1f}")
      elif isinstance(v, tuple):
        digits = 1 if "margin" not in k else 2 if "×255" in k else 3
        cells.append(f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}")
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
  return np.concatenate(
    [[np.inf if v is None else v for v in r["margins"]["values"]] for r in runs]
  )


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
      per_seed = sorted({len(r["margins"]["values"]) for r in runs})
      ax.plot(
        grid * 255,
        cdf,
        label=f"{method} (λ={lam:g}, {model}, {epochs} ep, "
        f"{len(runs)} seed(s) × {'/'.join(map(str, per_seed))} test images, "
        f"pooled n={len(m)})",
      )
    for e, ls in ((5 / 255, ":"), (0.05, "--")):
      ax.axvline(e * 255, color="gray", ls=ls, lw=0.8)
    _label(
      ax,
      "L∞ margin ε (in 1/255 pixel units)",
      "fraction of test images with margin ≤ ε",
      f"{dataset}: margin CDF (PGD-10 bisection)",
      1,
      7,
    )
  return _save(plt, fig, stem)


def _label(ax, xlabel, ylabel, title, y_max, legend_size):
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.set_ylim(0, y_max)
  ax.legend(fontsize=legend_size, loc="lower right")


def _save(plt, fig, stem):
  fig.tight_layout()
  paths = results.save_figure(fig, stem)
  plt.close(fig)
  return paths


RELEASED_ATTACKS = ("released", "strong")
# Figure 2 shows ERM and the SD strengths of the main table; the sweep plot shows them all.
FIGURE2_COEFS = (0.0, 0.01, 0.1)
# (column, getter of a run and an attack, scale): accuracies in %, margins in [−1,1] units.
RELEASED_COLUMNS = (
  ("train", lambda r, a: r["metrics"]["train_acc"], 100),
  ("test IID", lambda r, a: r["metrics"]["test_iid_acc"]["full"], 100),
  ("test IID (lossless)", lambda r, a: r["metrics"]["test_iid_acc"]["lossless"], 100),
  *(
    (f"OOD {e} ({a})", lambda r, a, k=k: r["metrics"]["test_ood_acc"][a][k]["full"], 100)
    for k, e in (
      ("eps_0.05_pm1", "ε=0.05 [−1,1]"),
      ("eps_0.05", "ε=0.05 px"),
      ("eps_5/255", "ε=5/255 px"),
    )
    for a in RELEASED_ATTACKS
  ),
  *(
    (f"margin q{q} ({a})", lambda r, a, q=q: margin_quantile(released_margins(r, a), q / 100), 1)
    for q in (25, 50, 75, 90)
    for a in RELEASED_ATTACKS
  ),
)


def margin_quantile(values, q: float) -> float:
  """Empirical q-quantile of per-example margins (inverted CDF: the smallest margin with at
  least a fraction q of the points at or below it). Margins the attack never found inside the
  bisection bracket are +inf, so a quantile beyond the flipped fraction is inf rather than an
  interpolation between inf values (NaN)."""
  return float(np.quantile(np.asarray(values, float), q, method="inverted_cdf"))


def _cell(values, scale):
  """mean ± sample std over seeds, or a string when some seed's value is infinite."""
  v = np.asarray(values, float)
  if np.all(np.isfinite(v)):
    return mean_std(v, scale)
  return f"beyond the bracket in {int(np.sum(~np.isfinite(v)))}/{len(v)} seeds"


def make_released_table(groups):
  rows = []
  for (dataset, classes, method, coef, epochs, _), runs in groups.items():
    row = {
      "dataset": dataset,
      "classes": classes,
      "method": method,
      "sd_coef": coef,
      "seeds": ",".join(str(r["config"]["seed"]) for r in runs),
      "epochs": epochs,
      "n_train": runs[0]["data"]["n_train"],
      "n strong": runs[0]["metrics"]["margins_pm1"].get("strong", {}).get("n", 0),
    }
    for name, get, scale in RELEASED_COLUMNS:
      a = name.split("(")[-1].rstrip(")")
      if a in RELEASED_ATTACKS and any(a not in r["margins"] for r in runs):
        continue
      row[name] = _cell([get(r, a) for r in runs], scale)
    row["paper (train / IID / OOD)"] = paper_cells(dataset, method)
    rows.append(row)
  return rows


def released_margins(run, attack):
  """[−1,1]-unit margins of one run (inf where the attack never flipped up to eps_max)."""
  return np.array([np.inf if v is None else v for v in run["margins"][attack]["values_pm1"]])


def released_figure2(groups, stem, x_max=0.3):
  plt = results.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  grid = np.linspace(0, x_max, 601)
  classes_shown = sorted({k[1] for k in groups})
  for i, ((_, _, method, coef, epochs, _), runs) in enumerate(groups.items()):
    color = f"C{i}"
    for attack, ls in (("released", "-"), ("strong", "--")):
      if attack not in runs[0]["margins"]:
        continue
      curves = np.stack(
        [100 * (released_margins(r, attack)[None, :] <= grid[:, None]).mean(1) for r in runs]
      )
      n = len(released_margins(runs[0], attack))
      ax.plot(
        grid,
        curves.mean(0),
        ls=ls,
        color=color,
        label=f"{method} sd_coef={coef:g}, {attack} attack, "
        f"{len(runs)} seed(s), {epochs} ep, n={n}",
      )
      if len(runs) > 1:
        ax.fill_between(grid, curves.min(0), curves.max(0), color=color, alpha=0.2, lw=0)
  ax.axvline(0.05, color="gray", ls=":", lw=0.8)
  ax.set_xlim(0, x_max)
  _label(
    ax,
    "L∞ norm of the perturbation ([−1,1] input units)",
    "% of test points misclassified",
    (
      f"CIFAR-2 {' / '.join(classes_shown)}"
      if "all" not in classes_shown
      else "CIFAR-10 (10 classes)"
    )
    + ", released protocol (Figure 2 axes)",
    100,
    6,
  )
  return _save(plt, fig, stem)


def released_sweep(groups, stem):
  """IID accuracy, OOD accuracy at ε = 0.05 ([−1,1] units) and median margin against
  ``sd_coef`` (one classes pair). Points of several seeds: filled, with min–max error bars;
  single-seed points: open markers. Each tick names its seeds and test images; both y axes
  start at 0."""
  plt = results.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
  keys = sorted(groups, key=lambda k: k[3])
  coefs = np.array([k[3] for k in keys])
  x = np.arange(len(coefs))  # categorical axis: 0 sits beside the log-spaced values
  seeds = np.array([len(groups[k]) for k in keys])

  def n_images(k):
    m = groups[k][0]["metrics"]["margins_pm1"]
    return "/".join(str(m[a]["n"]) for a in RELEASED_ATTACKS if m.get(a, {}).get("n"))

  def points(ax, get, label, color, ls="-"):
    v = [np.array([get(r) for r in groups[k]]) for k in keys]
    mean = np.array([a.mean() for a in v])
    ax.plot(x, mean, ls, color=color, lw=1, label=label)
    many = seeds > 1
    lo = mean - np.array([a.min() for a in v])
    hi = np.array([a.max() for a in v]) - mean
    ax.errorbar(
      x[many], mean[many], yerr=[lo[many], hi[many]], fmt="o", color=color, capsize=3, ms=6
    )
    ax.plot(x[~many], mean[~many], "o", mfc="white", mec=color, ms=6)

  points(ax1, lambda r: 100 * r["metrics"]["test_iid_acc"]["full"], "test IID", "C0")
  for attack, ls in (("released", "-"), ("strong", "--")):
    ok = [k for k in keys if all(attack in r["metrics"]["test_ood_acc"] for r in groups[k])]
    if len(ok) == len(keys):
      points(
        ax1,
        lambda r, a=attack: 100 * r["metrics"]["test_ood_acc"][a]["eps_0.05_pm1"]["full"],
        f"OOD ε=0.05 [−1,1], {attack} attack",
        "C1" if attack == "released" else "C3",
        ls,
      )
      points(
        ax2,
        lambda r, a=attack: margin_quantile(released_margins(r, a), 0.5),
        f"median margin, {attack} attack",
        "C2" if attack == "released" else "C4",
        ls,
      )
  ticks = [
    f"{c:g}\n{s} seed{'s' if s > 1 else ''}\nn={n_images(k)}" for c, s, k in zip(coefs, seeds, keys)
  ]
  for ax, ylabel in ((ax1, "accuracy (%)"), (ax2, "L∞ margin ([−1,1] units)")):
    ax.set_xticks(x, ticks, fontsize=7)
    ax.set_xlabel("sd_coef (released SD form; 0 = ERM)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="center right" if ax is ax1 else "lower right")
    ax.grid(alpha=0.3)
  ax1.set_ylim(0, 100)
  fig.suptitle(
    f"CIFAR-2 {keys[0][1]}, released protocol: SD strength sweep\nfilled: mean of "
    "several seeds, bars min–max; open: one seed; n: test images behind the OOD "
    "accuracy and margins (released/strong attack)",
    fontsize=8,
  )
  return _save(plt, fig, stem)


def write_table(rows, out_dir, stem, keys=None):
  md = to_markdown(rows, keys)
  path = os.path.join(out_dir, stem + ".md")
  with open(path + ".tmp", "w") as f:
    f.write(md)
  os.replace(path + ".tmp", path)
  write_csv(rows, os.path.join(out_dir, stem + ".csv"))
  return md


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.cifar_table",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--runs",
    action="append",
    required=True,
    help="run directories or glob patterns (comma-separated or repeated)",
  )
  p.add_argument("--out_dir", default="runs/cifar_table")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  dirs = find_runs(args.runs)
  provenance.gate_files(dirs, args.allow_dirty, "Table 1 / Figure 2")
  runs = {d: read_run(d) for d in dirs}
  for d, r in runs.items():  # diverged runs have no evaluation to tabulate
    if "diverged_at_epoch" in r["metrics"]:
      print(
        f"{d}: training diverged at epoch {r['metrics']['diverged_at_epoch']} "
        "(non-finite loss); left out of the table"
      )
  dirs = [d for d in dirs if "diverged_at_epoch" not in runs[d]["metrics"]]
  if not dirs:
    return
  is_released = {d: runs[d]["config"]["model"] == "released" for d in dirs}
  os.makedirs(args.out_dir, exist_ok=True)
  released = [d for d in dirs if is_released[d]]
  if released:
    rgroups = load_groups(released, by="classes", strength="sd_coef")
    print(write_table(make_released_table(rgroups), args.out_dir, "released_table", keys=[]))
    for classes in sorted({k[1] for k in rgroups}):
      sub = {k: v for k, v in rgroups.items() if k[1] == classes}
      tag = classes.replace(",", "_")
      figure_groups = {k: v for k, v in sub.items() if k[3] in FIGURE2_COEFS}
      released_figure2(figure_groups or sub, os.path.join(args.out_dir, f"released_figure2_{tag}"))
      if len({k[3] for k in sub}) >= 3:
        released_sweep(sub, os.path.join(args.out_dir, f"released_sweep_{tag}"))
  dirs = [d for d in dirs if not is_released[d]]
  if not dirs:
    return
  groups = load_groups(dirs)
  rows = make_table(groups)
  md = write_table(rows, args.out_dir, "table1")
  figure2(groups, os.path.join(args.out_dir, "figure2"))
  summary = {
    "rows": rows,
    "margin_medians": {
      "/".join(map(str, k)): float(np.median(margins_of(v))) for k, v in groups.items()
    },
  }
  results.atomic_write_json(os.path.join(args.out_dir, "summary.json"), summary)
  print(md)


if __name__ == "__main__":
  main()

r"""Table 3 and a Figure-4-style per-group plot (CelebA) from run directories of
``experiments.celeba``.

    python -m analysis.celeba_table --runs_dir=runs/celeba --out_dir=runs/celeba

Reads every ``results.json`` under ``--runs_dir`` (one per method × seed) and writes into
``--out_dir``: ``table3.md`` and ``table3.csv`` — per method, average and worst-group test
accuracy (%) as mean ± sample std over seeds (``gs_jax.results.mean_std``) under the selection
``--selection`` (default the released one, best validation average accuracy), beside
``gs_jax.paper.TABLE3``; the worst group's size and, pooling its test examples over seeds, its
accuracy with a Wilson 95% interval; and ``table3_runs.csv`` with every run's per-group
accuracies, sizes and intervals. ``figure4.png/.pdf``: per-group test accuracy, methods side by
side (mean over seeds, pooled Wilson intervals as error bars). The paper's Figure 4 protocol is
not determined by the released files (docs/protocols.md §3.5), so this plot is ours.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.base import paper
from gs_jax.experiment import results

ORDER = ("erm", "sd", "lff", "group_dro")
NAMES = {"erm": "ERM", "sd": "SD", "lff": "LfF", "group_dro": "Group DRO"}
GROUPS = ("not blond, female", "not blond, male", "blond, female", "blond, male")
SELECTIONS = {
  "best_val_average": "epoch of best validation average accuracy (released rule)",
  "last": "last epoch",
  "best_val_worst_group": "epoch of best validation worst-group accuracy",
}


def run_files(runs_dir: str) -> list[Path]:
  """Every celeba ``results.json`` under ``runs_dir``."""
  if not os.path.isdir(runs_dir):
    raise ValueError(f"runs_dir {runs_dir!r} is not a directory")
  return [
    p
    for p in sorted(Path(runs_dir).rglob("results.json"))
    if results.read_json(p).get("experiment") == "celeba"
  ]


def load_runs(runs_dir: str) -> dict[str, list[dict]]:
  """``{method: [results, …]}`` of every celeba ``results.json`` under ``runs_dir``."""
  runs: dict[str, list[dict]] = {}
  for path in run_files(runs_dir):
    r = results.read_json(path)
    runs.setdefault(r["method"], []).append(r)
  if not runs:
    raise ValueError(f"no celeba results.json under {runs_dir!r}")
  return {m: runs[m] for m in ORDER if m in runs}


def pooled_groups(rs: list[dict], selection: str) -> list[dict]:
  """Per group: correct and n summed over runs, accuracy and its Wilson 95% interval."""
  out = []
  for k in range(4):
    c = sum(r["metrics"][selection]["test"]["groups"][k]["correct"] for r in rs)
    n = sum(r["metrics"][selection]["test"]["groups"][k]["n"] for r in rs)
    out.append(
      {"correct": c, "n": n, "acc": c / n if n else None, "ci95": results.wilson_interval(c, n)}
    )
  return out


def table_rows(runs: dict[str, list[dict]], selection: str = "best_val_average") -> list[dict]:
  rows = []
  for method, rs in runs.items():
    tests = [r["metrics"][selection]["test"] for r in rs]
    avg = results.mean_std([100 * t["average"] for t in tests])
    worst = results.mean_std([100 * t["worst_group"] for t in tests])
    pooled = pooled_groups(rs, selection)
    wg = min(range(4), key=lambda k: pooled[k]["acc"] if pooled[k]["n"] else np.inf)
    p = paper.TABLE3.get(method, {})
    pm = lambda d: f"{d['mean']:.2f} ± {d['std']:.2f}" if d["n"] > 1 else f"{d['mean']:.2f}"
    rows.append(
      {
        "method": NAMES[method],
        "seeds": len(rs),
        "data": f"{rs[0]['data']['source']} ({rs[0]['data']['division']}), "
        f"{rs[0]['data']['image_size']}px, {rs[0]['config']['model']}, {rs[0]['init']}",
        "average": pm(avg),  # one seed: no ± (there is no spread to report)
        "worst_group": pm(worst),
        "worst_group_pooled": f"{100 * pooled[wg]['acc']:.1f} "
        f"[{100 * pooled[wg]['ci95'][0]:.1f}, "
        f"{100 * pooled[wg]['ci95'][1]:.1f}] "
        f"({GROUPS[wg]}, {pooled[wg]['correct']}/{pooled[wg]['n']})",
        "paper_average": paper.fmt(p.get("average")),
        "paper_worst_group": paper.fmt(p.get("worst_group")),
      }
    )
  return rows


SHORT = {
  "best_val_average": "best val. average (released)",
  "last": "last epoch",
  "best_val_worst_group": "best val. worst group",
}


def per_seed_worst(rs: list[dict], selection: str) -> list[str]:
  """The group with the lowest test accuracy in each run (the run's own ``worst_group_id``)."""
  return [GROUPS[r["metrics"][selection]["test"]["worst_group_id"]] for r in rs]


def selections_markdown(runs: dict[str, list[dict]]) -> str:
  """One row per method × selection rule: average and worst-group accuracy (mean ± sample std
  over seeds; the worst group is each seed's own), which group that was per seed, the worst
  group pooled over seeds and the blond males pooled, with Wilson 95% intervals."""
  head = [
    "method",
    "selection",
    "seeds",
    "average %",
    "worst group % (per seed)",
    "worst group per seed",
    "worst group pooled: % (k/n, Wilson 95%)",
    "blond males pooled: % (k/n, Wilson 95%)",
    "paper avg / worst",
  ]
  out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for selection in ("best_val_average", "best_val_worst_group", "last"):
    for method, rs in runs.items():
      tests = [r["metrics"][selection]["test"] for r in rs]
      avg = results.mean_std([100 * t["average"] for t in tests])
      worst = results.mean_std([100 * t["worst_group"] for t in tests])
      pooled = pooled_groups(rs, selection)
      wg = min(range(4), key=lambda k: pooled[k]["acc"] if pooled[k]["n"] else np.inf)
      cell = lambda g: (
        f"{100 * g['acc']:.1f} ({g['correct']}/{g['n']}, "
        f"{100 * g['ci95'][0]:.1f}–{100 * g['ci95'][1]:.1f})"
      )
      p = paper.TABLE3.get(method, {})
      ref = (
        f"{paper.fmt(p.get('average'))} / {paper.fmt(p.get('worst_group'))}"
        if selection == "best_val_average" and p
        else ""
      )
      names = per_seed_worst(rs, selection)
      out.append(
        f"| {NAMES[method]} | {SHORT[selection]} | {len(rs)} | "
        f"{avg['mean']:.2f} ± {avg['std']:.2f} | {worst['mean']:.2f} ± "
        f"{worst['std']:.2f} | {'; '.join(names)} | {GROUPS[wg]}: {cell(pooled[wg])} | "
        f"{cell(pooled[3])} | {ref} |"
      )
  return "\n".join(out)


COLUMNS = (
  ("method", "method"),
  ("seeds", "seeds"),
  ("average", "average % (ours)"),
  ("worst_group", "worst-group % (ours)"),
  ("worst_group_pooled", "worst group, pooled over seeds: % [Wilson 95%] (group, k/n)"),
  ("paper_average", "average % (paper)"),
  ("paper_worst_group", "worst-group % (paper)"),
  ("data", "data, model, init"),
)


def markdown_table(rows: list[dict]) -> str:
  lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(str(r[k]) for k, _ in COLUMNS) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
  buf = io.StringIO()
  w = csv.DictWriter(buf, [k for k, _ in COLUMNS], lineterminator="\n")
  w.writeheader()
  w.writerows(rows)
  return buf.getvalue()


def runs_csv(runs: dict[str, list[dict]], selection: str) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(
    [
      "method",
      "seed",
      "epoch",
      "split",
      "average",
      "group",
      "n",
      "correct",
      "acc",
      "ci95_low",
      "ci95_high",
    ]
  )
  for method, rs in runs.items():
    for r in rs:
      m = r["metrics"][selection]
      for split in ("val", "test"):
        for g in m[split]["groups"]:
          w.writerow(
            [
              method,
              r["config"]["seed"],
              m["epoch"],
              split,
              m[split]["average"],
              GROUPS[g["group"]],
              g["n"],
              g["correct"],
              g["acc"],
              *g["ci95"],
            ]
          )
  return buf.getvalue()


def figure4(runs: dict[str, list[dict]], selection: str, stem: str):
  """Per-group test accuracy of each method, correct answers pooled over seeds, with Wilson 95%
  intervals of the pooled counts; the selection rule in the title, the legend above the axes."""
  plt = results.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 3.9))
  width = 0.8 / len(runs)
  for i, (method, rs) in enumerate(runs.items()):
    pooled = pooled_groups(rs, selection)
    acc = np.array([100 * (g["acc"] or 0) for g in pooled])
    lo = acc - np.array([100 * g["ci95"][0] for g in pooled])
    hi = np.array([100 * g["ci95"][1] for g in pooled]) - acc
    ax.bar(
      np.arange(4) + (i - (len(runs) - 1) / 2) * width,
      acc,
      width,
      yerr=[lo, hi],
      capsize=2,
      label=f"{NAMES[method]} ({len(rs)} seeds)",
    )
  ax.set_xticks(
    np.arange(4), [f"{g}\n(n={pooled[k]['n']} pooled)" for k, g in enumerate(GROUPS)], fontsize=8
  )
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(
    f"Selection: {SELECTIONS[selection]}.\nBars: accuracy pooled over seeds; "
    "error bars: Wilson 95% interval of the pooled count",
    fontsize=8,
  )
  ax.legend(
    fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.16), ncol=len(runs), frameon=False
  )
  fig.tight_layout()
  paths = results.save_figure(fig, stem)
  plt.close(fig)
  return paths


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.celeba_table",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--runs_dir", default="runs/celeba")
  p.add_argument("--out_dir", default=None, help="default: --runs_dir")
  p.add_argument("--selection", default="best_val_average", choices=tuple(SELECTIONS))
  provenance.add_flag(p)
  args = p.parse_args(argv)
  gate = provenance.gate_files(run_files(args.runs_dir), args.allow_dirty, "Table 3")
  out = Path(args.out_dir or args.runs_dir)
  out.mkdir(parents=True, exist_ok=True)
  runs = load_runs(args.runs_dir)
  rows = table_rows(runs, args.selection)
  note = provenance.legacy_note(gate)
  md = markdown_table(rows) + (f"\n{note}\n" if note else "")
  (out / "table3.md").write_text(md)
  (out / "table3.csv").write_text(csv_table(rows))
  (out / "table3_runs.csv").write_text(runs_csv(runs, args.selection))
  figure4(runs, args.selection, str(out / "figure4"))
  print(md)
  return rows


if __name__ == "__main__":
  main()

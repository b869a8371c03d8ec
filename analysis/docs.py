r"""Writes every generated block of README.md and docs/**/*.md from the files under docs/results.

    python -m analysis.docs            # make docs: rewrite the blocks in place
    python -m analysis.docs --check    # exit 1 (and name the blocks) if any block is stale

A block is the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``; the
markers stay, the text between them is :data:`BLOCKS`\ [NAME] of the results folder. Every block
ends with a line naming its source files. Tables come from the analysis modules' own table
functions (``analysis.*_table``, ``theorem2_report``, ``cifar_features_figures``,
``speed_table``, ``stack_reference``), so a number in README or docs/ has one source: a results
file. Runs listed in ``docs/results/LEGACY.json`` (no trusted provenance) are used and the block
says so; any other run with a provenance problem stops the build (``analysis.provenance``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from analysis import cifar_table, provenance
from analysis.cifar_features_figures import pm

ROOT = provenance.ROOT
MARKER = re.compile(
  r"(<!-- generated:(?P<name>[a-z0-9_.-]+) -->)(?P<body>.*?)"
  r"(<!-- /generated:(?P=name) -->)",
  re.S,
)
BLOCKS: dict[str, Callable[[Path], str]] = {}
# Inline numbers in prose: ``<!-- generated:PAGE.fact.KEY -->…<!-- /generated:… -->`` on one
# line is FACTS[PAGE](results)[KEY].
FACTS: dict[str, Callable[[Path], dict]] = {}


def facts(page):
  def register(fn):
    FACTS[page] = fn
    return fn

  return register


def block(name):
  def register(fn):
    BLOCKS[name] = fn
    return fn

  return register


# ---- helpers -------------------------------------------------------------------------------


def read(results: Path, rel: str) -> dict:
  return json.loads((results / rel).read_text())


def rel(results: Path, path) -> str:
  """A path relative to the results folder (what :func:`source` and :func:`read` take)."""
  return Path(path).resolve().relative_to(results.resolve()).as_posix()


def source(results: Path, *paths: str, extra: str = "") -> str:
  """The source line under a table; names the legacy entries of its files."""
  legacy = provenance.load_legacy(results / "LEGACY.json")
  notes = []
  for p in paths:
    entry = provenance.legacy_entry(ROOT / "docs/results" / p, legacy)
    if entry is not None and entry["reason"] not in notes:
      notes.append(entry["reason"])
  line = "Source: " + ", ".join(f"`docs/results/{p}`" for p in paths) + "."
  if notes:
    line += (
      " **Untrusted provenance** (listed in `docs/results/LEGACY.json`, to be rerun): "
      + "; ".join(notes)
      + "."
    )
  return line + (" " + extra if extra else "")


def mean_std(values, scale=1.0) -> dict:
  from gs_jax.experiment import results as results_lib

  return results_lib.mean_std(np.asarray(values, float) * scale)


def minutes(results: Path, paths) -> list[float]:
  """Run time of each results file in minutes (provenance start → end), where recorded."""
  out = []
  for p in paths:
    prov = read(results, p).get("provenance") or {}
    a, b = (provenance.parse_time(prov.get(k)) for k in ("start_time", "end_time"))
    if a is not None and b is not None and prov.get("start_time") and prov.get("end_time"):
      out.append((b - a).total_seconds() / 60)
  return out


def span(values, unit="min") -> str:
  if not values:
    return "not recorded"
  lo, hi = min(values), max(values)
  fmt = (lambda v: f"{v:.0f}") if hi >= 10 else (lambda v: f"{v:.1f}")
  return f"{fmt(lo)} {unit}" if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)} {unit}"


def run_files(results: Path, folder: str) -> list[str]:
  return sorted(p.relative_to(results).as_posix() for p in (results / folder).rglob("results.json"))


def fence(text: str) -> str:
  return "```\n" + text.rstrip() + "\n```"


# ---- two-moons -----------------------------------------------------------------------------


def _moons(results: Path, folder: str) -> dict:
  """{panel: {"title", "steps", "acc", "loss", "min", "seed_min"}} of either schema."""
  res = read(results, f"{folder}/results.json")
  out = {}
  if "metrics" in res:
    for name in [n for n in res["config"]["panels"] if n in res["metrics"]]:
      m, c = res["metrics"][name], res["config"]["panels"][name]
      out[name] = {
        "title": c["title"],
        "steps": c["steps"],
        "acc": m["train_accuracy"],
        "loss": m["final_loss"],
        "min": m["margin_min"],
        "seed_min": m["per_seed_margin_min_mean"],
        "seeds": m["seeds"],
      }
  else:  # the H200 run's schema, before gs_jax.results
    for name, m in res.items():
      per_seed = m["margin"].get("per_seed_min") or [np.nan]
      out[name] = {
        "title": m["config"]["title"],
        "steps": m["config"]["epochs"],
        "acc": m["train_accuracy"],
        "loss": m["final_loss"],
        "min": m["margin"]["min"],
        "seed_min": float(np.mean(per_seed)),
        "seeds": m["seeds"],
      }
  return out


@block("two_moons.figure1")
def two_moons_figure1(results):
  paper = _moons(results, "two_moons_figure1_paper")
  pub = _moons(results, "two_moons_figure1_published")
  rows = [
    "| preset | panel | steps | seeds | train acc. | final loss | margin min "
    "| per-seed margin min (mean) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for preset, panels in (("paper", paper), ("published", pub)):
    for m in panels.values():
      rows.append(
        f"| {preset} | {m['title']} | {m['steps']:,} | {m['seeds']} | {100 * m['acc']:.1f}% "
        f"| {m['loss']:.4f} | {m['min']:.3f} | {m['seed_min']:.3f} |"
      )
  return (
    "\n".join(rows)
    + "\n\n"
    + source(
      results,
      "two_moons_figure1_paper/results.json",
      "two_moons_figure1_published/results.json",
    )
  )


@block("two_moons.dynamics")
def two_moons_dynamics(results):
  from analysis import two_moons_dynamics_figure

  res = read(results, "two_moons_dynamics_paper/results.json")
  return (
    "\n".join(two_moons_dynamics_figure.table(res))
    + "\n\nMean ± sample std (ddof = 1) over seeds of the values at the last step; the paired "
    "lines compare the SD setting with the ERM setting of the same Δ seed by seed (same data "
    "and θ0).\n\n" + source(results, "two_moons_dynamics_paper/results.json")
  )


@block("two_moons.appendix_b")
def two_moons_appendix_b(results):
  rel_ = _moons(results, "two_moons_appendix_b_released")
  long = _moons(results, "two_moons_appendix_b")
  rows = [
    "| panel | `released` (1,000 steps): margin min | per-seed min (mean) "
    "| `long` (10,000 steps): margin min | per-seed min (mean) "
    "| train acc. (released / long) |",
    "|---|---|---|---|---|---|",
  ]
  for name, m in rel_.items():
    l = long.get(name)
    rows.append(
      f"| {m['title']} | {m['min']:.3f} | {m['seed_min']:.3f} | "
      + (f"{l['min']:.3f} | {l['seed_min']:.3f} | " if l else "– | – | ")
      + f"{100 * m['acc']:.0f}% / "
      + (f"{100 * l['acc']:.0f}%" if l else "–")
      + " |"
    )
  best = max(rel_, key=lambda k: rel_[k]["min"])
  second = sorted(rel_, key=lambda k: -rel_[k]["min"])[1]
  return "\n".join(rows) + (
    f"\n\nLargest margin in the released grid: {rel_[best]['title']} "
    f"({rel_[best]['min']:.3f}); next: {rel_[second]['title']} ({rel_[second]['min']:.3f}).\n\n"
    + source(
      results,
      "two_moons_appendix_b_released/results.json",
      "two_moons_appendix_b/results.json",
      extra="Both columns rotate the data clockwise, as the released code does (the "
      "earlier H200 run of `long`, replaced by this one, rotated counter-clockwise).",
    )
  )


@facts("two_moons")
def two_moons_facts(results):
  r, l = _moons(results, "two_moons_appendix_b_released"), _moons(results, "two_moons_appendix_b")
  return {
    "adam3e3": f"{r['b_adam_3e-3']['min']:.3f}",
    "sd": f"{r['b_sd']['min']:.3f}",
    "wd": f"{r['b_wd']['min']:.3f} / {l['b_wd']['min']:.3f}",
  }


# ---- theory --------------------------------------------------------------------------------


@block("theory.theorem2")
def theory_theorem2(results):
  from analysis import theorem2_report

  res = read(results, "theorem2/results.json")
  return fence(theorem2_report.tables(res)) + "\n\n" + source(results, "theorem2/results.json")


@block("theory.input_sweep")
def theory_input_sweep(results):
  from analysis import theorem2_report

  res = read(results, "theorem2_input_sweep/results.json")
  return (
    fence(theorem2_report.tables(res))
    + "\n\n"
    + source(results, "theorem2_input_sweep/results.json")
  )


@block("theory.figure5")
def theory_figure5(results):
  from analysis import theorem2_report

  res = read(results, "theorem2/primal_dual/results.json")
  return (
    fence(theorem2_report.figure5_table(res))
    + "\n\n"
    + source(results, "theorem2/primal_dual/results.json")
  )


# ---- Colored MNIST -------------------------------------------------------------------------


@block("cmnist.table2")
def cmnist_table2(results):
  from analysis import cmnist_table

  runs = cmnist_table.load_runs(str(results / "colored_mnist_h200"))
  md = cmnist_table.markdown_table(cmnist_table.table_rows(runs))
  files = [f"colored_mnist_h200/{n}/results.json" for n in runs]
  return (
    md + "\n\nMean ± sample std (ddof = 1) over 10 restarts; the paper's ± is the "
    "released code's `np.std` (ddof = 0). The oracle row is the grayscale model with "
    "ERM's settings, not the `oracle` preset.\n\n" + source(results, *files)
  )


@block("cmnist.oracle_cpu")
def cmnist_oracle_cpu(results):
  from analysis import cmnist_table

  runs = cmnist_table.load_runs(str(results / "colored_mnist_cpu"))
  md = cmnist_table.markdown_table(cmnist_table.table_rows(runs))
  files = [f"colored_mnist_cpu/{n}/results.json" for n in runs]
  return (
    md + "\n\nThe `oracle` preset (the IRM paper's grayscale model and released settings), "
    "full data, restarts on a 2-core CPU; mean ± sample std (ddof = 1).\n\n"
    + source(results, *files)
  )


@block("cmnist.figure3")
def cmnist_figure3(results):
  from analysis import cmnist_table

  runs = cmnist_table.load_runs(str(results / "colored_mnist_h200"))
  return (
    cmnist_table.figure3_markdown(runs)
    + "\n\n"
    + source(results, *[f"colored_mnist_h200/{n}/results.json" for n in runs])
  )


@facts("colored_mnist")
def colored_mnist_facts(results):
  from analysis import cmnist_table

  rows = {
    r["method"]: r
    for r in cmnist_table.table_rows(cmnist_table.load_runs(str(results / "colored_mnist_h200")))
  }
  four = [rows[m] for m in ("ERM", "SD", "IRM", "V-REx")]
  rex = rows["V-REx"]
  return {
    "max_test_sd": f"{max(abs(r['test_diff_sd']) for r in four):.1f}",
    "rex_train": f"{rex['train_mean'] - rex['paper_train_mean']:.1f}",
  }


# ---- CIFAR ---------------------------------------------------------------------------------


@block("cifar.cpu")
def cifar_cpu(results):
  table = (results / "cifar2_cpu/cifar2_cpu_table1.md").read_text().strip()
  fit = (results / "cifar2_cpu/cifar2_cpu_fit_table.md").read_text().strip()
  return (
    table
    + "\n\nFitting regime (2,000 images, no augmentation):\n\n"
    + fit
    + "\n\n"
    + source(
      results,
      "cifar2_cpu/cifar2_cpu_table1.md",
      "cifar2_cpu/cifar2_cpu_fit_table.md",
      extra="These are aggregate tables: the runs behind them are not committed.",
    )
  )


@block("cifar.paper_h200")
def cifar_paper_h200(results):
  from analysis import cifar_table

  dirs = [
    str(results / "cifar2_paper_h200" / d) for d in ("cifar2_paper_erm_s0", "cifar2_paper_sd_s0")
  ]
  rows = cifar_table.make_table(cifar_table.load_groups(dirs))
  return (
    cifar_table.to_markdown(rows).strip()
    + "\n\n"
    + source(
      results,
      "cifar2_paper_h200/cifar2_paper_erm_s0/results.json",
      "cifar2_paper_h200/cifar2_paper_sd_s0/results.json",
    )
  )


@facts("cifar")
def cifar_facts(results):
  acc = {}
  for m in ("erm", "sd"):
    mg = read(results, f"cifar2_paper_h200/cifar2_paper_{m}_s0/results.json")["margins"]
    v = np.array([np.inf if x is None else x for x in mg["values"]])
    acc[m] = 100 * np.mean(v > 1.25 / 255)  # correct and not flipped below ε (0 = wrong)
  return {"vgg_acc_125": f"{acc['erm']:.1f}% (ERM) and {acc['sd']:.1f}% (SD)"}


RELEASED_CELLS = (
  ("train", ("train",)),
  ("test IID (full / lossless)", ("test IID", "test IID (lossless)")),
  (
    "OOD ε=0.05 [−1,1]: released / strong",
    ("OOD ε=0.05 [−1,1] (released)", "OOD ε=0.05 [−1,1] (strong)"),
  ),
  ("OOD 5/255 px: released / strong", ("OOD ε=5/255 px (released)", "OOD ε=5/255 px (strong)")),
  ("margin q50: released / strong", ("margin q50 (released)", "margin q50 (strong)")),
  ("q75: released / strong", ("margin q75 (released)", "margin q75 (strong)")),
  ("q90: released / strong", ("margin q90 (released)", "margin q90 (strong)")),
)


def _released_rows(results: Path, folder: str):
  from analysis import cifar_table

  dirs = [str(p.parent) for p in sorted((results / folder).glob("*/results.json"))]
  runs = {d: cifar_table.read_run(d) for d in dirs}
  dirs = [d for d in dirs if "diverged_at_epoch" not in runs[d]["metrics"]]
  groups = cifar_table.load_groups(dirs, by="classes", strength="sd_coef")
  return cifar_table.make_released_table(groups), groups, dirs


def _cell(v, name):
  if isinstance(v, str):  # "beyond the bracket in k/n seeds"
    k = v.split()[-2]
    return f"> 1.0 ({k})"
  digits = 3 if name.startswith("margin") else 1
  return f"{v[0]:.{digits}f} ± {v[1]:.{digits}f}"


def released_markdown(rows) -> str:
  head = (
    ["classes", "method (sd_coef)", "seeds", "n (released / strong)"]
    + [h for h, _ in RELEASED_CELLS]
    + ["paper (train / IID / OOD)"]
  )
  out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [
      r["classes"],
      f"{'ERM' if r['sd_coef'] == 0 else 'SD'} ({r['sd_coef']:g})",
      r["seeds"],
      f"{r['n released']} / {r['n strong'] or '–'}",
    ]
    for _, keys in RELEASED_CELLS:
      cells.append(" / ".join(_cell(r[k], k) if k in r else "–" for k in keys))
    cells.append(r["paper (train / IID / OOD)"])
    out.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(out)


def _with_n(rows, groups):
  for r, runs in zip(rows, groups.values()):
    r["n released"] = runs[0]["metrics"]["margins_pm1"].get("released", {}).get("n", "–")
  return rows


@block("cifar_released.table")
def cifar_released_table(results):
  rows, groups, dirs = _released_rows(results, "cifar2_released")
  return (
    released_markdown(_with_n(rows, groups)) + "\n\nAccuracies in %, margins in [−1,1] "
    "units, mean ± sample std over seeds; \"> 1.0 (k/n)\" = beyond the bisection bracket "
    "in k of n seeds. n: test images behind each attack's margins and OOD accuracies "
    "(IID accuracy uses all 2,000).\n\n"
    + source(results, *[rel(results, Path(d) / "results.json") for d in dirs])
  )


@block("cifar_released.rerun")
def cifar_released_rerun(results):
  rows, groups, dirs = _released_rows(results, "cifar2_released_rerun")
  res = [read(results, rel(results, Path(d) / "results.json")) for d in dirs]
  full = [r for r in res if r["config"]["eval"]["strong_n"] > 0]  # the 3-seed protocol
  train = [r["metrics"]["train_time_this_call_s"] for r in full]
  evals = [r["metrics"]["eval_time_s"] for r in full]
  commits = sorted({r["provenance"]["git_commit"][:7] for r in res})
  return (
    released_markdown(_with_n(rows, groups)) + f"\n\nRuns with both attacks: training time "
    f"per run {span(train, 's')} (`train_time_this_call_s`), evaluation time "
    f"{span(evals, 's')} (`eval_time_s`); two runs side by side, one per core. Commits: "
    f"{', '.join(commits)}."
    "\n\n" + source(results, *[rel(results, Path(d) / "results.json") for d in dirs])
  )


@block("cifar_released.sweep")
def cifar_released_sweep(results):
  """The SD-strength sweep's extra points (make cifar2_released_extra), rerun on one commit."""
  rows, groups, dirs = _released_rows(results, "cifar2_released_sweep")
  res = [read(results, rel(results, Path(d) / "results.json")) for d in dirs]
  commits = sorted({r["provenance"]["git_commit"][:7] for r in res})
  return (
    released_markdown(_with_n(rows, groups))
    + f"\n\nCommit: {', '.join(commits)}.\n\n"
    + source(results, *[rel(results, Path(d) / "results.json") for d in dirs])
  )


@block("cifar_released.eval_rules")
def cifar_released_eval_rules(results):
  """benchmarks/cifar_eval_rules.py: evaluation against training time and the two rules."""
  files = sorted(
    (results / "cifar_eval_rules").glob("*.json"),
    key=lambda f: json.loads(f.read_text())["sd_coef"],
  )
  out = [
    "| run | training | evaluation, first-iterate rule | eval / train | evaluation, "
    "last-iterate rule | eval / train | OOD ε=0.05 [−1,1], released / strong: first rule | "
    "last rule | OOD accuracies equal (3 ε × 2 attacks) | margin q50 [−1,1], released / "
    "strong: first rule | last rule | margin quantiles equal (q25–q90 × 2 attacks) | margins "
    "that differ (released; strong) | largest difference / bisection step |",
    "|" + "---|" * 14,
  ]
  for f in files:
    d = json.loads(f.read_text())
    c, t, e = d["comparison"], d["train_time_s"], d["eval_time_s"]
    ood = c["ood_acc"]
    m = c["margins"]
    name = "ERM" if d["sd_coef"] == 0 else f"SD {d['sd_coef']:g}"
    both = lambda get, rule: " / ".join(get(a, rule) for a in ("released", "strong"))
    acc = lambda a, rule: f"{100 * ood[a]['eps_0.05_pm1'][rule]:.1f}"
    q50 = lambda a, rule: f"{m[a]['quantiles_pm1']['q50'][rule]:.4f}"
    big = max(m[a]["max_abs_diff_pixel"] / m[a]["bisection_resolution_pixel"] for a in m)
    same_ood = [v["first"] == v["last"] for a in ood for v in ood[a].values()]
    same_q = [v["first"] == v["last"] for a in m for v in m[a]["quantiles_pm1"].values()]
    out.append(
      f"| {name}, seed {d['seed']} | {t:.0f} s | {e['first']:.0f} s | {e['first'] / t:.2f} | "
      f"{e['last']:.0f} s | {e['last'] / t:.2f} | {both(acc, 'first')} | {both(acc, 'last')} | "
      f"{sum(same_ood)} of {len(same_ood)} | {both(q50, 'first')} | {both(q50, 'last')} | "
      f"{sum(same_q)} of {len(same_q)} | "
      f"{m['released']['differ']} of {m['released']['n']}; {m['strong']['differ']} of "
      f"{m['strong']['n']} | {big:.0f} |"
    )
  return (
    "\n".join(out) + "\n\nOne process per step, pinned to one core, the two runs side by side; "
    "accuracies in %; the last column in bisection steps.\n\n"
    + source(results, *[rel(results, f) for f in files])
  )


@block("cifar_released.catdog")
def cifar_released_catdog(results):
  rows, groups, dirs = _released_rows(results, "cifar2_released_catdog")
  return (
    released_markdown(_with_n(rows, groups))
    + "\n\n"
    + source(results, *[rel(results, Path(d) / "results.json") for d in dirs])
  )


@block("cifar_released.cifar10")
def cifar_released_cifar10(results):
  rows, groups, dirs = _released_rows(results, "cifar10_released")
  epochs = ", ".join(f"{'ERM' if g[3] == 0 else 'SD'} {g[4]}" for g in groups)
  return (
    released_markdown(_with_n(rows, groups)) + f"\n\nEpochs: {epochs}; IID accuracy on "
    "all 10,000 test images.\n\n"
    + source(results, *[rel(results, Path(d) / "results.json") for d in dirs])
  )


@facts("cifar_released")
def cifar_released_facts(results):
  rows, groups, _ = _released_rows(results, "cifar2_released")
  by = {r["sd_coef"]: r for r in rows}
  runs = {k[3]: v for k, v in groups.items()}
  f = lambda v, d=1: f"{v[0]:.{d}f} ± {v[1]:.{d}f}"
  iid, rel_, strong = "test IID", "OOD ε=0.05 [−1,1] (released)", "OOD ε=0.05 [−1,1] (strong)"
  q = lambda c, n, a: by[c][f"margin q{n} ({a})"][0]
  pooled_inf = {
    c: 100
    * np.mean(
      np.concatenate([~np.isfinite(cifar_table.released_margins(r, "released")) for r in runs[c]])
    )
    for c in (0.0, 0.1)
  }
  rr, _, _ = _released_rows(results, "cifar2_released_rerun")
  rb = {r["sd_coef"]: r for r in rr}
  log = [
    json.loads(line)
    for line in (results / "cifar10_released/sdc0_s0_diverged/metrics.jsonl")
    .read_text()
    .splitlines()
  ]
  finite = [r for r in log if np.isfinite(float(r["loss"]))]
  return {
    "iid": f"ERM {f(by[0.0][iid])}, SD 0.1 {f(by[0.1][iid])}, SD 0.01 {f(by[0.01][iid])}",
    "ood_released": f"ERM {f(by[0.0][rel_])} vs SD 0.1 {f(by[0.1][rel_])}",
    "ood_strong": f"ERM {f(by[0.0][strong])} vs SD 0.1 {f(by[0.1][strong])}",
    "q50_ratio": f"×{q(0.1, 50, 'strong') / q(0.0, 50, 'strong'):.1f} (released-style "
    f"×{q(0.1, 50, 'released') / q(0.0, 50, 'released'):.1f})",
    "q90_strong": f"{q(0.0, 90, 'strong'):.3f} vs {q(0.1, 90, 'strong'):.3f} "
    f"(×{q(0.1, 90, 'strong') / q(0.0, 90, 'strong'):.1f})",
    "unflipped": f"{pooled_inf[0.0]:.0f}% (ERM) and {pooled_inf[0.1]:.0f}% (SD 0.1)",
    "strong_gaps": f"{rb[0.1][strong][0] - rb[0.0][strong][0]:+.1f} points in the rerun "
    f"against {by[0.1][strong][0] - by[0.0][strong][0]:+.1f} in the table above",
    "min_epoch": str(min(finite, key=lambda r: r["loss"])["epoch"]),
    "nan_epoch": str(next(r["epoch"] for r in log if not np.isfinite(float(r["loss"])))),
  }


# ---- NTK features --------------------------------------------------------------------------


@block("cifar_features.cpu")
def cifar_features_cpu(results):
  from analysis import cifar_features_figures as cf

  return (
    cf.table(cf.load(results / "cifar_features_cpu"))
    + "\n\n"
    + source(results, "cifar_features_cpu/results.json")
  )


@block("cifar_features.full")
def cifar_features_full(results):
  from analysis import cifar_features_figures as cf

  return (
    cf.table(cf.load(results / "cifar_features_full"))
    + "\n\n"
    + source(results, "cifar_features_full/results.json")
  )


@facts("cifar_features")
def cifar_features_facts(results):
  res = read(results, "cifar_features_full/results.json")
  lam = res["eq17_lambda"]
  lo, hi = 1e-12, 0.5  # eq 18 with equal margins: log((1 − a)/a) = a/λ, a in (0, ½)
  for _ in range(200):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if np.log((1 - mid) / mid) > mid / lam else (lo, mid)
  seeds = sorted((v for v in res["per_seed"].values()), key=lambda v: (v["arm"], v["seed"]))
  sd = [v for v in seeds if v["arm"] == "sd"]
  erm = [v for v in seeds if v["arm"] == "erm"]
  return {
    "a_over_lambda": f"{lo / lam:.3f}",
    "sd_margins": ", ".join(f"{v['margin_mean']:.3f}" for v in sd),
    "sd_logit_rms": f"{min(v['logit_sum_rms'] for v in sd):.3f}–"
    f"{max(v['logit_sum_rms'] for v in sd):.3f}",
    "erm_margins": span([v["margin_mean"] for v in erm], "").strip(),
  }


@block("cifar_features.coupled_cpu")
def cifar_features_coupled_cpu(results):
  from analysis import cifar_features_figures as cf

  parts, files = [], []
  for kind in ("ridge", "wd"):
    f = f"cifar_features_coupled_cpu/{kind}/results.json"
    if (results / f).exists():
      parts.append(
        cf.coupled_table(read(results, f), cf.load(results / Path(f).parent)["features"])
      )
      files.append(f)
  return "\n\n".join(parts) + "\n\n" + source(results, *files)


@facts("cifar_features_coupled")
def cifar_features_coupled_facts(results):
  res = read(results, "cifar_features_coupled_cpu/ridge/results.json")
  err = {}
  for v in res["per_seed"].values():
    err.setdefault(v["eq5_lambda"], []).append(v["rel_err_dual"]["j2plus"])
  lams = sorted(err)
  return {
    "ridge_j2_weakest": pm(mean_std(err[lams[0]]), 2),
    "ridge_j2_strongest": pm(mean_std(err[lams[-1]]), 2),
    "lambda_weakest": f"{lams[0]:g}",
    "lambda_strongest": f"{lams[-1]:g}",
  }


# ---- cifar_features, coupled, full size (10,000 images) -------------------------------------

# `make cifar_features_coupled` / `_wd`: each regulariser's arms ran as two processes.
_COUPLED_FULL = {"ridge": ("ridge_weak", "ridge_strong"), "wd": ("wd_weak", "wd_strong")}


def _coupled_full(results: Path, kind: str):
  """The merged run of one regulariser's processes and their results files (None, [] when
  not run)."""
  from analysis import cifar_features_figures as cf

  dirs = [
    f"cifar_features_coupled/{d}"
    for d in _COUPLED_FULL[kind]
    if (results / "cifar_features_coupled" / d / "results.json").exists()
  ]
  if not dirs:
    return None, []
  # the θ0 features are committed once, in ridge_weak (the same for every process)
  data = cf.load_merged([results / d for d in dirs], results / "cifar_features_coupled/ridge_weak")
  return data, [f"{d}/results.json" for d in dirs]


def _stack(results: Path, files) -> str:
  jax_versions = sorted({read(results, f)["provenance"]["packages"]["jax"] for f in files})
  return "jax " + ", ".join(jax_versions)


@block("cifar_features.coupled")
def cifar_features_coupled(results):
  from analysis import cifar_features_figures as cf

  parts, files = [], []
  for kind in _COUPLED_FULL:
    data, fs = _coupled_full(results, kind)
    if data is not None:
      parts.append(cf.coupled_table(data["res"], data["features"]))
      files += fs
  extra = (
    f"Run on {_stack(results, files)}, one process per file (one core each), "
    f"{span(minutes(results, files))} per process."
  )
  return "\n\n".join(parts) + "\n\n" + source(results, *files, extra=extra)


@facts("cifar_features_coupled_full")
def cifar_features_coupled_full_facts(results):
  """Per arm (ridge10 … wd10000): train accuracy, relative error over features 2–20, cos(z, z*)
  and the control cos(z, Uᵀ1), ‖z‖/‖z*‖."""
  from analysis import cifar_features_figures as cf

  out = {}
  for kind in _COUPLED_FULL:
    data, _ = _coupled_full(results, kind)
    if data is None:
      continue
    for arm, st in cf.coupled_stats(data["res"], data["features"]).items():
      out[f"{arm}_acc"] = f"{100 * st['acc']['mean']:.1f} ± {100 * st['acc']['std']:.1f}%"
      out[f"{arm}_j2"] = pm(st["err_j2"], 2)
      out[f"{arm}_cos"] = pm(st["cos"], 2)
      out[f"{arm}_control"] = pm(st["control"], 2)
      out[f"{arm}_ratio"] = f"{st['ratio']['mean']:.2g}"
  return out


# ---- dominoes ------------------------------------------------------------------------------


def _dominoes_dirs(results: Path) -> list[str]:
  return sorted(
    p.parent.relative_to(results).as_posix()
    for p in (results / "dominoes_cpu").glob("a*/results.json")
  )


@block("dominoes.sweep")
def dominoes_sweep(results):
  f = "dominoes_sd_sweep/results.json"
  res = read(results, f)
  m = res["metrics"]
  lines = [
    "| sd_lambda | held-out acc., MNIST half randomised | held-out acc., intact | final "
    "training loss |",
    "|---|---|---|---|",
  ]
  for arm, v in sorted(
    ((k, v) for k, v in m.items() if k != "sd_choice"), key=lambda kv: kv[1]["sd_lambda"]
  ):
    loss = res["per_seed"][f"{arm}_s0"]["final_loss"]
    lines.append(
      f"| {v['sd_lambda']:g} | {100 * v['mnist_random']['mean']:.1f}% | "
      f"{100 * v['intact']['mean']:.1f}% | {loss:.3f} |"
    )
  lines += ["", f"Chosen: sd_lambda = {m['sd_choice']['sd_lambda']:g} ({m['sd_choice']['rule']})."]
  return "\n".join(lines) + "\n\n" + source(results, f)


@block("dominoes.table")
def dominoes_table(results):
  from analysis import dominoes_figures as dom

  dirs = _dominoes_dirs(results)
  summary = dom.collect([results / d for d in dirs])
  return dom.table(summary) + "\n\n" + source(results, *[f"{d}/results.json" for d in dirs])


@facts("dominoes")
def dominoes_facts(results):
  from analysis import dominoes_figures as dom

  s = dom.collect([results / d for d in _dominoes_dirs(results)])
  out = {}
  for m in ("erm", "l2", "sd"):
    for a in (0.0, 1.0):
      v = s.get(m, {}).get("test_mnist_random", {}).get(a)
      if v is not None:
        out[f"{m}_a{a:g}"] = f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}%"
  return out


def _ntk_bench(results, name):
  d = read(results, f"ntk_features_bench/{name}")
  return (
    d["table"].strip() + f"\n\nLoad average at the start: "
    f"{d['load_average'][0]:.1f} on {d['cpu_count']} cores.\n\n"
    + source(results, f"ntk_features_bench/{name}")
  )


@block("cifar_features.bench_quiet")
def cifar_features_bench_quiet(results):
  return _ntk_bench(results, "ntk_features_quiet.json")


@block("cifar_features.bench_loaded")
def cifar_features_bench_loaded(results):
  return _ntk_bench(results, "ntk_features.json")


# ---- CelebA --------------------------------------------------------------------------------


@block("celeba.table3")
def celeba_table3(results):
  from analysis import celeba_table

  runs = celeba_table.load_runs(str(results / "celeba_cpu"))
  return (
    celeba_table.selections_markdown(runs)
    + "\n\n"
    + source(results, *run_files(results, "celeba_cpu"))
  )


@facts("celeba")
def celeba_facts(results):
  from analysis import celeba_table

  runs = celeba_table.load_runs(str(results / "celeba_cpu"))
  bm = lambda m, sel: celeba_table.pooled_groups(runs[m], sel)[3]
  cell = lambda g: f"{100 * g['acc']:.1f} ({100 * g['ci95'][0]:.1f}–{100 * g['ci95'][1]:.1f})"
  avg = lambda m: np.mean(
    [100 * r["metrics"]["best_val_average"]["test"]["average"] for r in runs[m]]
  )
  e, sd = bm("erm", "best_val_average"), bm("sd", "best_val_average")
  return {
    "erm_bm": f"{100 * e['acc']:.1f}% ({e['correct']}/{e['n']})",
    "sd_bm": f"{100 * sd['acc']:.1f}% ({sd['correct']}/{sd['n']}, {100 * sd['ci95'][0]:.1f}–"
    f"{100 * sd['ci95'][1]:.1f})",
    "sd_cost": f"{avg('erm') - avg('sd'):.1f}",
    "wg_rule": f"SD {cell(bm('sd', 'best_val_worst_group'))}, Group DRO "
    f"{cell(bm('group_dro', 'best_val_worst_group'))}",
  }


@block("paper_scale.stream")
def paper_scale_stream(results):
  d = read(results, "celeba_stream/results.json")
  m, c = d["metrics"], d["config"]
  rows = [
    "| threads | images | images/s | peak RSS above start | prefetch buffer |",
    "|---|---|---|---|---|",
  ]
  for r in m["runs"]:
    rows.append(
      f"| {r['threads']} | {r['images']:,} | {r['images_per_s']:,.0f} | "
      f"{r['pipeline_peak_rss_above_start_bytes'] / 2**20:,.0f} MiB | "
      f"{r['prefetch_buffer_bytes'] / 2**20:,.0f} MiB |"
    )
  return "\n".join(rows) + (
    f"\n\n{c['size']} px, batch {c['batch_size']}, {c['prefetch']} batches prefetched, "
    f"source {m['source']} ({m['source_image_size']}); {m['cpu_count']} cores at load "
    f"{m['load_average_1_5_15_min'][0]:.1f}. The in-memory path would hold "
    f"{m['in_memory_official_train_bytes'] / 2**30:.1f} GiB for the official training "
    "set.\n\n" + source(results, "celeba_stream/results.json")
  )


# ---- speed ---------------------------------------------------------------------------------


@block("speed.stacks")
def speed_stacks(results):
  from analysis import speed_table

  folder = results / "speed_stacks"
  lines = [
    "| benchmark | stack | gs-jax | baseline (same run) | ratio | matmul floor | load | file |",
    "|---|---|---|---|---|---|---|---|",
    *speed_table.rows(folder),
  ]
  return (
    "\n".join(lines)
    + "\n\n"
    + source(results, *[f"speed_stacks/{p.name}" for p in sorted(folder.glob("*.json"))])
  )


@block("speed.two_moons")
def speed_two_moons(results):
  d = read(results, "two_moons_speed/cpu_2core.json")
  rows = [
    "| benchmark | gs-jax: median (range) | PyTorch eager: median (range) | ratio of "
    "medians | ratio per repeat |",
    "|---|---|---|---|---|",
  ]
  for key, what in (
    (
      "training",
      f"Figure-1 training, {d['seeds']} seeds × 3 configs × "
      f"{d['epochs']:,} epochs, compile included",
    ),
    ("end_to_end", "Figure-1 job end to end, fresh processes"),
  ):
    a, b = np.array(d[key]["gs_jax_s"]), np.array(d[key]["torch_s"])
    r = b / a
    rows.append(
      f"| {what} | {np.median(a):.2f} s ({a.min():.2f}–{a.max():.2f}) | "
      f"{np.median(b):.1f} s ({b.min():.1f}–{b.max():.1f}) | "
      f"**{d[key]['speed_up_of_medians']:.1f}×** | {r.min():.1f}–{r.max():.1f}× |"
    )
  return (
    "\n".join(rows)
    + f"\n\n{d['repeats']} repeats on {d['machine']}"
    + (
      f"; load average at the end {d['load_average'][0]:.1f} (the machine was shared: a loaded "
      "measurement)"
      if "load_average" in d
      else ""
    )
    + ".\n\n"
    + source(results, "two_moons_speed/cpu_2core.json")
  )


@block("speed.dual")
def speed_dual(results):
  d = read(results, "dual_speed/dual_speed.json")
  rows = [
    "| n | Newton to 1e-12: wall (iterations / Cholesky) | residual | Newton to 1e-6 "
    "| gradient ascent on eq 8: wall, steps | its residual | speed-up to 1e-6 |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in d["rows"]:
    nt, n6, ga = r["newton"], r["newton_1e-6"], r["gradient_ascent"]
    extra = r["speedup_to_1e-6_extrapolated"]
    rows.append(
      f"| {r['n']:,} | {nt['seconds']:.2f} s ({nt['iterations']} / {nt['factorizations']}) "
      f"| {nt['residual']:.1e} | {n6['seconds']:.2f} s | {ga['seconds']:.0f} s, "
      f"{ga['steps']:,} | {ga['residual']:.1e} | {r['speedup_to_1e-6']}"
      + (f"; extrapolated ~{extra:,.0f}×" if extra else "")
      + " |"
    )
  return (
    "\n".join(rows)
    + f"\n\n`dual.fixed_point` (compile excluded) against gradient ascent on the dual (eq 8, step "
    f"1/L, capped); {d['device']}, load average at the end {d['load_average'][0]:.1f} (a loaded "
    "measurement).\n\n" + source(results, "dual_speed/dual_speed.json")
  )


@block("speed.stack_reference")
def speed_stack_reference(results):
  from analysis import stack_reference

  a, b = (read(results, f"stack_reference/{s}.json") for s in ("oldest", "newest"))
  text, _ = stack_reference.compare(a, b)
  return (
    text + "\n\n" + source(results, "stack_reference/oldest.json", "stack_reference/newest.json")
  )


# ---- README: the reproduce table -----------------------------------------------------------


def _headlines(results: Path) -> list[tuple]:
  from analysis import celeba_table, cmnist_table
  from gs_jax.base import paper

  out = []
  b = _moons(results, "two_moons_appendix_b_released")
  t = minutes(results, ["two_moons_appendix_b_released/results.json"])
  out.append(
    (
      "Two-moons, Fig 1 a–c",
      "`make two_moons`",
      "not recorded (paper preset not committed)",
      f"margin ERM {b['b_none']['min']:.3f} → SD {b['b_sd']['min']:.3f} "
      "(paper: SD curves the boundary, larger margin)",
      "two_moons.md",
    )
  )
  best = max(b, key=lambda k: b[k]["min"])
  out.append(
    (
      "Two-moons, App. B grid",
      "`make two_moons_grid`",
      f"{span(t)} (10 seeds)",
      f"largest margin: {b[best]['title']} ({b[best]['min']:.3f}) of {len(b)} panels",
      "two_moons.md#appendix-b-grid",
    )
  )
  out.append(
    (
      "Feature responses, Fig 1 d",
      "`make two_moons_dynamics`",
      "not recorded",
      "results file not committed (to rerun)",
      "two_moons.md#feature-dynamics-figure-1d",
    )
  )
  th = read(results, "theorem2/results.json")
  net = th["metrics"]["network"]
  wide = max(net, key=int)
  out.append(
    (
      "Theorem 2 on trained models",
      "`make theorem2`",
      span(minutes(results, ["theorem2/results.json"])),
      f"linear model = dual to {th['metrics']['linear']['ridge']['max_rel_error']:.1e}; "
      f"width {wide}: rel. error {net[wide]['rel_error']['mean']:.1e}",
      "theory.md",
    )
  )
  pd = read(results, "theorem2/primal_dual/results.json")
  out.append(
    (
      "Primal vs dual, Fig 5",
      "`make primal_dual`",
      span(minutes(results, ["theorem2/primal_dual/results.json"])),
      f"max primal–dual gap {pd['metrics']['max_primal_dual_rel_gap']:.1e}",
      "theory.md#primal-vs-dual-figure-5",
    )
  )
  runs = cmnist_table.load_runs(str(results / "colored_mnist_h200"))
  rows = {r["method"]: r for r in cmnist_table.table_rows(runs)}
  sd, erm = rows["SD"], rows["ERM"]
  out.append(
    (
      "Colored MNIST, Table 2",
      "`make cmnist`",
      "not recorded (H200)",
      f"test: ERM {erm['test_mean']:.1f} (paper {erm['paper_test_mean']}), SD "
      f"{sd['test_mean']:.1f} (paper {sd['paper_test_mean']}); no provenance",
      "colored_mnist.md",
    )
  )
  rel_rows, groups, dirs = _released_rows(results, "cifar2_released")
  by = {r["sd_coef"]: r for r in rel_rows if r["classes"] == "airplane,horse"}
  p_erm, p_sd = paper.TABLE1[("cifar2", "erm")]["ood"], paper.TABLE1[("cifar2", "sd")]["ood"]
  key = "OOD ε=0.05 [−1,1] (released)"
  out.append(
    (
      "CIFAR-2 released protocol, Table 1 / Fig 2",
      "`make cifar2_released`",
      span(minutes(results, [rel(results, Path(d) / "results.json") for d in dirs])) + " per run",
      f"OOD ε=0.05: ERM {by[0.0][key][0]:.1f} → SD 0.1 {by[0.1][key][0]:.1f} (paper "
      f"{p_erm[0]} → {p_sd[0]})",
      "cifar_released.md",
    )
  )
  import csv

  with open(results / "cifar2_cpu/cifar2_cpu_table1.csv") as fh:
    c = {r["method"]: r for r in csv.DictReader(fh)}
  ood = "OOD ε=5/255 mean"
  out.append(
    (
      "CIFAR-2 cpu CNN / paper VGG",
      "`make cifar2_cpu`",
      "not recorded",
      f"no SD effect: OOD 5/255 ERM {float(c['ERM'][ood]):.1f} vs SD "
      f"{float(c['SD'][ood]):.1f} (paper OOD {p_erm[0]} → {p_sd[0]})",
      "cifar.md",
    )
  )
  from analysis import cifar_features_figures as cff

  cf = read(results, "cifar_features_full/results.json")
  zs, runs_sd = cff._final(cf, "sd")
  pred = np.array([r["z_eq18"] for r in runs_sd])
  gap = np.linalg.norm(zs[:, 1:] - pred[:, 1:]) / np.linalg.norm(pred[:, 1:])
  out.append(
    (
      "NTK features of the CIFAR-2 CNN",
      "`make cifar_features`",
      span(minutes(results, ["cifar_features_full/results.json"])),
      f"SD's responses = eq 18's fixed point to {100 * gap:.0f}% (features 2–20; nothing fitted)",
      "cifar_features.md",
    )
  )
  ridge = "cifar_features_coupled_cpu/ridge/results.json"
  cp = read(results, ridge)
  err = {}
  for v in cp["per_seed"].values():
    err.setdefault(v["eq5_lambda"], []).append(v["rel_err_dual"]["j2plus"])
  lo, hi = min(err), max(err)
  out.append(
    (
      "Theorem 2 on the CIFAR-2 CNN, eq 5 coupled (1,000 images)",
      "`make cifar_features_coupled_cpu`",
      span(minutes(results, [ridge])) + " (ridge arms)",
      f"trained vs dual.fixed_point, features 2–20: rel. error {pm(mean_std(err[lo]), 1)} at "
      f"λ = {lo:g}, {pm(mean_std(err[hi]), 1)} at λ = {hi:g} (3 seeds)",
      "cifar_features.md#coupled-regime-eq-5-on-1000-images",
    )
  )
  from analysis import dominoes_figures as dom

  dd = _dominoes_dirs(results)
  ds = dom.collect([results / d for d in dd])
  cell = {
    (m, a): f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}%"
    for m in ds
    for a, v in ds[m]["test_mnist_random"].items()
  }
  out.append(
    (
      "MNIST–CIFAR dominoes (contrast dial)",
      "`make dominoes_cpu`",
      span(minutes(results, [f"{d}/results.json" for d in dd])) + " per contrast",
      f"CIFAR-only acc. at a = 1: ERM {cell.get(('erm', 1.0), '–')}, SD "
      f"{cell.get(('sd', 1.0), '–')}; at a = 0: ERM {cell.get(('erm', 0.0), '–')} (3 seeds)",
      "dominoes.md",
    )
  )
  cel = celeba_table.load_runs(str(results / "celeba_cpu"))
  crow = {r["method"]: r for r in celeba_table.table_rows(cel)}
  out.append(
    (
      "CelebA, Table 3 (cpu preset)",
      "`make celeba_cpu`",
      span(minutes(results, run_files(results, "celeba_cpu"))) + " per run",
      f"worst group, released selection: ERM {crow['ERM']['worst_group']}, SD "
      f"{crow['SD']['worst_group']} (paper {crow['ERM']['paper_worst_group']} / "
      f"{crow['SD']['paper_worst_group']})",
      "celeba.md",
    )
  )
  data, files = _coupled_full(results, "ridge")
  if data is not None:
    from analysis import cifar_features_figures as cf

    st = cf.coupled_stats(data["res"], data["features"])
    lo, hi = st[min(st, key=lambda a: st[a]["lambda"])], st[max(st, key=lambda a: st[a]["lambda"])]
    out.append(
      (
        "Theorem 2 on the CIFAR-2 CNN, eq 5 coupled (10,000 images)",
        "`make cifar_features_coupled`",
        span(minutes(results, files)) + " per process (2 processes)",
        f"trained vs dual.fixed_point, features 2–20: rel. error {pm(lo['err_j2'], 1)} at "
        f"λ = {lo['lambda']:g}, {pm(hi['err_j2'], 1)} at λ = {hi['lambda']:g}; cos(z, z*) "
        f"{hi['cos']['mean']:.2f} vs control {hi['control']['mean']:.2f} there (3 seeds)",
        "cifar_features.md#coupled-regime-eq-5-on-10000-images",
      )
    )
  return out


@block("readme.reproduce")
def readme_reproduce(results):
  rows = [
    "| experiment | command | time: 2-core CPU / one GPU | headline (ours vs paper) | page |",
    "|---|---|---|---|---|",
  ]
  for name, cmd, time, head, page in _headlines(results):
    link = page if page.startswith("../") else f"docs/experiments/{page}"
    link = link.replace("../protocols.md", "docs/protocols.md")
    rows.append(f"| {name} | {cmd} | {time} / not measured | {head} | [page]({link}) |")
  return "\n".join(rows) + (
    "\n\nCPU times are provenance start → end of the committed runs on the shared 2-core "
    "machine (not recorded: no committed run, or a run on a GPU without times). Most "
    "committed runs are listed in `docs/results/LEGACY.json` (untrusted provenance, to be "
    "rerun); each page's tables say which."
  )


# ---- the writer ----------------------------------------------------------------------------


def doc_files(root: Path = ROOT) -> list[Path]:
  return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(text: str, results: Path, cache: dict | None = None) -> str:
  """``text`` with every generated block rewritten from ``results``."""
  cache = {} if cache is None else cache

  def value(name):
    if name in cache:
      return cache[name]
    page, _, key = name.partition(".fact.")
    if key:
      if page not in FACTS:
        raise KeyError(f"unknown facts page {page!r} in block {name!r}")
      if ("facts", page) not in cache:
        cache[("facts", page)] = FACTS[page](results)
      if key not in cache[("facts", page)]:
        raise KeyError(f"unknown fact {name!r}")
      cache[name] = str(cache[("facts", page)][key])
    elif name in BLOCKS:
      cache[name] = BLOCKS[name](results).strip()
    else:
      raise KeyError(f"unknown generated block {name!r}")
    return cache[name]

  def sub(m):
    text = value(m.group("name"))
    if "\n" not in m.group("body"):  # an inline number in a sentence
      return f"{m.group(1)}{text}{m.group(4)}"
    return f"{m.group(1)}\n{text}\n{m.group(4)}"

  return MARKER.sub(sub, text)


def build(root: Path = ROOT, results: Path | None = None) -> dict[Path, tuple[str, str]]:
  """``{file: (committed text, regenerated text)}`` for every markdown file with a block."""
  results = results or root / "docs" / "results"
  out, cache = {}, {}
  for f in doc_files(root):
    if "docs/results" in f.as_posix():
      continue
    text = f.read_text()
    if MARKER.search(text):
      out[f] = (text, render(text, results, cache))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m analysis.docs",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--check", action="store_true", help="only report stale blocks; exit 1 if any")
  args = p.parse_args(argv)
  audit = provenance.audit()
  if audit["bad"]:
    print(
      "run files with untrusted provenance, not in docs/results/LEGACY.json:\n"
      + "\n".join(f"  {k}: {'; '.join(v)}" for k, v in audit["bad"].items())
    )
    return 1
  stale = []
  for f, (old, new) in build().items():
    if old != new:
      stale.append(f.relative_to(ROOT).as_posix())
      if not args.check:
        f.write_text(new)
  verb = "stale" if args.check else "rewrote"
  print(f"{verb}: {', '.join(stale) or 'nothing'}")
  return 1 if args.check and stale else 0


if __name__ == "__main__":
  sys.exit(main())

"""The same numbers on both stacks: a small reference set, run on the stack of this venv, and a
comparison of two such runs (issue 18; README, "Choosing a stack").

    .venv-oldest/bin/python -m analysis.stack_reference --out=runs/stack_reference/oldest.json
    .venv/bin/python -m analysis.stack_reference --out=runs/stack_reference/newest.json
    python -m analysis.stack_reference --compare runs/stack_reference/oldest.json \\
        runs/stack_reference/newest.json                      # exit 1 if outside a tolerance
    # committed: docs/results/stack_reference/{oldest,newest}.json and compare.md (--table_out)

The set (each run as its own CLI process, so global settings start fresh):

- ``dual``: ``gs_jax.dual.fixed_point`` on a fixed random problem (n = 200, λ ∈ {0.1, 1, 10}):
  float64 Newton to the round-off floor, so both stacks must agree to rtol 1e-9.
- ``theorem2``: ``experiments.theorem2 --preset=quick`` (trained linear models vs the dual's
  prediction, float64): rtol 1e-6, atol 1e-12 (some numbers are round-off residuals of order
  1e-14, whose relative difference means nothing; the first comparison used atol 0 and failed
  on those alone, at 1.8e-15 absolute).
- ``two_moons``: Figure 1 (a–c), ``experiments.two_moons`` (10 seeds × 1,000 float32 SGD
  steps): different XLA versions sum in different orders, so atol 5e-3 on margins, losses and
  accuracies (the claim is margin (b) ≈ 0.10 vs (c) ≈ 0.21).
- ``colored_mnist``: ``experiments.colored_mnist --preset=sd --seeds=2 --n_train=10000
  --n_test=2000`` (two restarts, 2,001 full-batch float32 Adam steps on a reduced set): atol
  0.01 on accuracies (one point) and losses.
- ``cifar_released``: ``experiments.cifar --preset=released --epochs=2`` with margins on 100
  test images. 20,000 batch-1 float32 SGD steps are chaotic: the two stacks' rounding sends the
  weights apart (as two runs pinned to different core counts did, README), so only the
  statistics can agree, and a single seed's attack numbers on 100 images carry a binomial
  standard error of up to 5 points: atol 0.1 (two such errors). The first comparison used
  0.02 and failed (OOD accuracy at ε = 0.05 pixel: 28% vs 35%; test IID 93.2% vs 92.9%).

Every number under each run's ``metrics`` is compared (times excluded); the output lists the
largest absolute and relative difference per run and the run's tolerance.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# name: (command args, (rtol, atol)) — the tolerances of the module docstring.
RUNS = {
  "dual": (None, (1e-9, 0.0)),
  "theorem2": (["experiments.theorem2", "--preset=quick"], (1e-6, 1e-12)),
  "two_moons": (["experiments.two_moons"], (0.0, 5e-3)),
  "colored_mnist": (
    ["experiments.colored_mnist", "--preset=sd", "--seeds=2", "--n_train=10000", "--n_test=2000"],
    (0.0, 0.01),
  ),
  "cifar_released": (
    ["experiments.cifar", "--preset=released", "--epochs=2", "--margin_n=100", "--strong_n=0"],
    (0.0, 0.1),
  ),
}
_SKIP_WORDS = ("time", "seconds", "wall", "_s", "rate", "per_s", "compile")


def flatten(tree, prefix="") -> dict:
  """Numeric leaves of a JSON tree as ``{"a.b.0": value}``, times and rates left out."""
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      if any(w in str(k) for w in _SKIP_WORDS):
        continue
      out.update(flatten(v, f"{prefix}{k}."))
  elif isinstance(tree, list):
    for i, v in enumerate(tree):
      out.update(flatten(v, f"{prefix}{i}."))
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    out[prefix[:-1]] = float(tree)
  return out


def _dual_reference() -> dict:
  import numpy as np

  from gs_jax.theory import dual

  rng = np.random.default_rng(0)
  n = 200
  U, _ = np.linalg.qr(rng.standard_normal((n, n)))
  S = np.sort(rng.uniform(0.05, 5.0, n))[::-1]
  return {
    "metrics": {
      f"lam{lam:g}": {
        "alpha_head": dual.fixed_point(U, S, lam)[:20].tolist(),
        "alpha_sum": float(dual.fixed_point(U, S, lam).sum()),
      }
      for lam in (0.1, 1.0, 10.0)
    }
  }


def run_set(names, work: Path) -> dict:
  import jax

  out = {"jax": jax.__version__, "python": sys.version.split()[0], "runs": {}}
  for name in names:
    args, _ = RUNS[name]
    t0 = time.perf_counter()
    if args is None:
      res = _dual_reference()
    else:
      run_dir = work / name
      cmd = [sys.executable, "-m", *args, f"--out_dir={run_dir}", "--overwrite", "--no_progress"]
      print("+", " ".join(cmd[1:]), file=sys.stderr, flush=True)
      subprocess.run(cmd, check=True)
      with open(run_dir / "results.json") as fh:
        res = json.load(fh)
    out["runs"][name] = {"metrics": res["metrics"], "seconds": time.perf_counter() - t0}
  return out


def compare(a: dict, b: dict) -> tuple[str, bool]:
  """A markdown table of the largest differences per run; ``ok`` if all are in tolerance."""
  lines = [
    "| run | numbers | max abs diff | max rel diff | tolerance (rtol, atol) | within |",
    "|---|---|---|---|---|---|",
  ]
  ok = True
  for name in RUNS:
    if name not in a["runs"] or name not in b["runs"]:
      continue
    rtol, atol = RUNS[name][1]
    fa, fb = flatten(a["runs"][name]["metrics"]), flatten(b["runs"][name]["metrics"])
    keys = sorted(set(fa) & set(fb))
    worst_abs = worst_rel = 0.0
    within = set(fa) == set(fb)
    for k in keys:
      x, y = fa[k], fb[k]
      if math.isinf(x) or math.isinf(y) or math.isnan(x) or math.isnan(y):
        within &= (x == y) or (math.isnan(x) and math.isnan(y))
        continue
      d = abs(x - y)
      worst_abs = max(worst_abs, d)
      worst_rel = max(worst_rel, d / max(abs(x), abs(y), 1e-300))
      within &= d <= atol + rtol * max(abs(x), abs(y))
    ok &= within
    lines.append(
      f"| {name} | {len(keys)} | {worst_abs:.2e} | {worst_rel:.2e} | ({rtol:g}, "
      f"{atol:g}) | {'yes' if within else '**no**'} |"
    )
  head = f"jax {a['jax']} vs jax {b['jax']}"
  return head + "\n\n" + "\n".join(lines), ok


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.stack_reference",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--out",
    default="",
    help="write this stack's reference numbers to this JSON file (runs the set)",
  )
  p.add_argument("--only", default=",".join(RUNS), help=f"comma-separated subset of {list(RUNS)}")
  p.add_argument("--work_dir", default="", help="run directories (default: a temporary one)")
  p.add_argument(
    "--compare",
    nargs=2,
    metavar=("A", "B"),
    default=None,
    help="compare two reference files instead; exit 1 if outside a tolerance",
  )
  p.add_argument("--table_out", default="", help="with --compare: also write the table here")
  args = p.parse_args(argv)
  if args.compare:
    a, b = (json.loads(Path(f).read_text()) for f in args.compare)
    text, ok = compare(a, b)
    print(text)
    if args.table_out:
      Path(args.table_out).write_text(text + "\n")
    if not ok:
      raise SystemExit(1)
    return text
  names = [n for n in args.only.split(",") if n]
  bad = [n for n in names if n not in RUNS]
  if bad or not args.out:
    p.error(f"unknown runs {bad}" if bad else "give --out (run the set) or --compare A B")
  from gs_jax.experiment import results

  prov = {**results.provenance(), "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  with tempfile.TemporaryDirectory() as tmp:
    ref = run_set(names, Path(args.work_dir or tmp))
  ref["provenance"] = {**prov, "end_time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  results.atomic_write_json(args.out, ref)
  print(json.dumps({k: v["seconds"] for k, v in ref["runs"].items()}))
  return ref


if __name__ == "__main__":
  main()

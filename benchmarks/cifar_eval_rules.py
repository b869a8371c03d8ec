r"""Released CIFAR-2: evaluation time against training time, and the two attack rules side by side.

    python -m benchmarks.cifar_eval_rules --sd_coef=0 --cpu_cores=0 --json=runs/eval_rules/erm.json

Trains one run of ``experiments.cifar --preset=released`` (or, if ``--run_dir`` already holds
a finished one, only re-evaluates it), which evaluates with the preset's rule: both attacks stop
an image at its first misclassified iterate (``return_early``, Foolbox 2's rule;
docs/protocols.md §3.3). Then it copies the run directory and re-evaluates the same
checkpoint with the last-iterate rule (``--return_early=false``, our evaluation before issue
18: XLA convolutions on batches of 500). Each step is its own process, pinned to
``--cpu_cores`` like the experiment. Prints and writes (``--json``, with provenance): the
training time, both evaluation times, evaluation / training, and how the results differ (IID
and OOD accuracies, margin quantiles, the images whose margins differ and by how much).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

RULES = ("first", "last")  # return_early true / false


def _experiment(run_dir: Path, args, return_early: bool) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "experiments.cifar",
    "--preset=released",
    f"--sd_coef={args.sd_coef}",
    f"--seed={args.seed}",
    f"--cpu_cores={args.cpu_cores}",
    f"--return_early={str(return_early).lower()}",
    f"--out_dir={run_dir}",
    "--no_progress",
    *([f"--data_dir={args.data_dir}"] if args.data_dir else []),
  ]
  print("$", " ".join(cmd[1:]), flush=True)
  subprocess.run(cmd, check=True)
  return json.loads((run_dir / "results.json").read_text())


def _margins(res: dict, attack: str) -> np.ndarray:
  v = res["margins"][attack]["values_pixel"]
  return np.array([np.inf if m is None else m for m in v], dtype=np.float64)


def compare(first: dict, last: dict) -> dict:
  """How the last-iterate evaluation ``last`` differs from ``first`` (same checkpoint)."""
  mf, ml = first["metrics"], last["metrics"]
  out = {
    "test_iid_acc_equal": mf["test_iid_acc"] == ml["test_iid_acc"],
    "ood_acc": {},
    "margins": {},
  }
  for attack in mf["test_ood_acc"]:
    out["ood_acc"][attack] = {
      eps: {"first": v["full"], "last": ml["test_ood_acc"][attack][eps]["full"]}
      for eps, v in mf["test_ood_acc"][attack].items()
    }
    a, b = _margins(first, attack), _margins(last, attack)
    differ = a != b
    finite = differ & np.isfinite(a) & np.isfinite(b)
    res = (
      first["margins"][attack]["eps_max_pixel"] / 2 ** first["margins"][attack]["bisection_steps"]
    )
    out["margins"][attack] = {
      "n": int(a.size),
      "differ": int(differ.sum()),
      "first_below_last": int((a < b).sum()),
      "max_abs_diff_pixel": float(np.max(np.abs(a[finite] - b[finite]))) if finite.any() else 0.0,
      "bisection_resolution_pixel": res,
      "quantiles_pm1": {
        q: {"first": mf["margins_pm1"][attack][q], "last": ml["margins_pm1"][attack][q]}
        for q in ("q25", "q50", "q75", "q90")
      },
    }
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.cifar_eval_rules", description=__doc__.split("\n\n")[0]
  )
  p.add_argument("--sd_coef", type=float, default=0.0, help="released-form SD (0: ERM)")
  p.add_argument("--seed", type=int, default=0, help="the run's seed")
  p.add_argument("--cpu_cores", default="0", help="pin every step to these cores")
  p.add_argument("--data_dir", default="", help="CIFAR-10 folder (default: $GS_DATA_DIR/cifar10)")
  p.add_argument(
    "--run_dir",
    default="",
    help="the run directory (default: runs/eval_rules/sdc{sd_coef}_s{seed}); the last-iterate "
    "copy gets the suffix _last",
  )
  p.add_argument("--json", default="", help="also write the numbers (with provenance) here")
  args = p.parse_args(argv)
  from gs_jax.experiment import results

  started = results.provenance_at_start()  # the code that runs, before anything is written
  run_dir = Path(args.run_dir or f"runs/eval_rules/sdc{args.sd_coef:g}_s{args.seed}")
  first = _experiment(run_dir, args, True)
  copy = run_dir.with_name(run_dir.name + "_last")
  shutil.rmtree(copy, ignore_errors=True)
  shutil.copytree(run_dir, copy)
  last = _experiment(copy, args, False)
  train_s = first["metrics"]["train_time_this_call_s"]
  out = {
    "sd_coef": args.sd_coef,
    "seed": args.seed,
    "cpu_cores": args.cpu_cores,
    "train_time_s": train_s,
    "eval_time_s": {
      "first": first["metrics"]["eval_time_s"],
      "last": last["metrics"]["eval_time_s"],
    },
    "comparison": compare(first, last),
    "runs": {"first": first["provenance"], "last": last["provenance"]},
  }
  e = out["eval_time_s"]
  print(
    f"training {train_s:.0f} s | evaluation, first-iterate rule {e['first']:.0f} s "
    f"({e['first'] / train_s:.2f}× training) | last-iterate rule {e['last']:.0f} s "
    f"({e['last'] / train_s:.2f}×)"
  )
  for attack, m in out["comparison"]["margins"].items():
    print(
      f"{attack}: {m['differ']} of {m['n']} margins differ (max {m['max_abs_diff_pixel']:.5f} "
      f"pixels; bisection step {m['bisection_resolution_pixel']:.5f})"
    )
  if args.json:
    results.write_measurement(args.json, out, started)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

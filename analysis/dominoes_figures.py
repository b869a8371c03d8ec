r"""Table and figure of the dominoes sweep (docs/protocols.md §3.8) from the run directories of
``experiments.dominoes`` (one per contrast a):

    python -m analysis.dominoes_figures 'runs/dominoes/cpu/a*' --out_dir=runs/dominoes/cpu

- ``dominoes.png`` / ``.pdf``: left, test accuracy with the MNIST half randomised (what was
  learned from the CIFAR half) against a, one line per method, mean over seeds with a ±1
  sample-std band and every seed as a dot; middle, the same with the CIFAR half randomised (the MNIST half); right,
  the summed final responses of the CIFAR-half features against a (MNIST-half ones dashed);
- ``dominoes.json``: the numbers behind them, per method and a (mean, sample std, n);
- ``table.md``: the same as a table.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.experiment import results as results_lib

METHODS = ("erm", "l2", "sd")
LABELS = {"erm": "ERM", "l2": "ERM + L2", "sd": "SD"}
QUANTITIES = (
  "test_mnist_random",
  "test_cifar_random",
  "test_intact",
  "train_acc",
  "z_cifar",
  "z_mnist",
  "n_mnist",
)


def collect(run_dirs) -> dict:
  """``{method: {quantity: {a: mean_std}}}`` over every run directory's per-seed records."""
  rows = {}
  for d in run_dirs:
    res = results_lib.read_json(Path(d) / "results.json")
    if res is None or res.get("experiment") != "dominoes":
      continue
    a = float(res["config"]["a"])
    for rec in res["per_seed"].values():
      if "test_acc" not in rec:  # an sd_lambda sweep run
        continue
      vals = {
        "train_acc": rec["train_acc"],
        "z_cifar": rec["z_cifar"],
        "z_mnist": rec["z_mnist"],
        "n_mnist": rec["n_mnist"],
        **{f"test_{k}": v for k, v in rec["test_acc"].items()},
      }
      for q, v in vals.items():
        rows.setdefault(rec["method"], {}).setdefault(q, {}).setdefault(a, []).append(v)
  if not rows:
    raise FileNotFoundError(f"no dominoes results.json in {list(run_dirs)}")
  return {
    m: {
      q: {a: {**results_lib.mean_std(v), "values": v} for a, v in sorted(by_a.items())}
      for q, by_a in qs.items()
    }
    for m, qs in rows.items()
  }


def table(summary) -> str:
  lines = [
    "Accuracies in % and summed final responses, mean ± sample std over seeds:",
    "",
    "| method | a | seeds | CIFAR-only acc. (MNIST randomised) | MNIST-only acc. (CIFAR "
    "randomised) | intact | train | Σ z, CIFAR-half features | Σ z, MNIST-half features "
    "| MNIST-half features of the top k |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for m in [m for m in METHODS if m in summary] + [m for m in summary if m not in METHODS]:
    s = summary[m]
    for a in s["test_mnist_random"]:

      def pct(q):
        v = s[q][a]
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"

      def num(q):
        v = s[q][a]
        return f"{v['mean']:.3g} ± {v['std']:.2g}"

      lines.append(
        f"| {LABELS.get(m, m)} | {a:g} | {s['test_mnist_random'][a]['n']} | "
        f"{pct('test_mnist_random')} | {pct('test_cifar_random')} | "
        f"{pct('test_intact')} | {pct('train_acc')} | {num('z_cifar')} | "
        f"{num('z_mnist')} | {s['n_mnist'][a]['mean']:.3g} |"
      )
  return "\n".join(lines)


def draw(summary, out_dir) -> list[Path]:
  plt = results_lib.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  panels = (
    ("test_mnist_random", "CIFAR-only test acc. (MNIST randomised)", 100),
    ("test_cifar_random", "MNIST-only test acc. (CIFAR randomised)", 100),
    ("z_cifar", "Σ final responses, CIFAR-half features", 1),
  )
  for ax, (q, title, scale) in zip(axes, panels):
    for i, m in enumerate(m for m in METHODS if m in summary):
      by_a = summary[m][q]
      a = np.array(list(by_a))
      mean = scale * np.array([v["mean"] for v in by_a.values()])
      std = scale * np.array([v["std"] for v in by_a.values()])
      ax.plot(a, mean, "o-", color=f"C{i}", label=LABELS[m])
      ax.fill_between(a, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
      # every seed too: an outcome can split between seeds (one learns the other half)
      for ai, v in by_a.items():
        ax.plot([ai] * len(v["values"]), scale * np.asarray(v["values"]), ".", ms=3, color=f"C{i}")
      if q == "z_cifar":
        zm = summary[m]["z_mnist"]
        ax.plot(
          a,
          [v["mean"] for v in zm.values()],
          "s--",
          ms=3,
          color=f"C{i}",
          alpha=0.7,
          label=f"{LABELS[m]}, MNIST-half" if i == 0 else None,
        )
    if scale == 100:
      ax.axhline(50, ls=":", color="gray", lw=0.8)  # chance
    # the transition sits at small a: a symmetric-log axis spreads 0 … 0.1
    ax.set_xscale("symlog", linthresh=0.03, linscale=0.5)
    ticks = sorted({a for m in summary for a in summary[m][q]})
    ax.set_xticks(ticks, [f"{a:g}" for a in ticks], fontsize=7)
    ax.set_xlim(-0.005, 1.1)
    ax.set(xlabel="MNIST-half contrast a (symmetric log axis)", title=title)
    ax.title.set_fontsize(9)
  axes[0].set_ylabel("accuracy (%)")
  axes[0].legend(fontsize=7)
  axes[2].legend(fontsize=6)
  fig.tight_layout()
  paths = results_lib.save_figure(fig, Path(out_dir) / "dominoes")
  plt.close(fig)
  return paths


def report(run_glob, out_dir) -> str:
  """Writes dominoes.{png,pdf,json} and table.md into ``out_dir``; returns the table."""
  dirs = sorted(glob.glob(run_glob)) if isinstance(run_glob, str) else list(run_glob)
  summary = collect(dirs)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  results_lib.atomic_write_json(
    out_dir / "dominoes.json",
    {
      "runs": [str(d) for d in dirs],
      "std_convention": results_lib.STD_CONVENTION,
      "summary": {
        m: {q: {f"{a:g}": v for a, v in by_a.items()} for q, by_a in qs.items()}
        for m, qs in summary.items()
      },
    },
  )
  text = table(summary)
  (out_dir / "table.md").write_text(text + "\n")
  print(text)
  print("wrote", *[p for p in draw(summary, out_dir) if p.suffix == ".png"])
  return text


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.dominoes_figures",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("runs", help="glob of experiments.dominoes run directories (quote it)")
  p.add_argument("--out_dir", default="runs/dominoes_figures")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  provenance.gate_files(sorted(glob.glob(args.runs)), args.allow_dirty, "dominoes table")
  report(args.runs, args.out_dir)


if __name__ == "__main__":
  main()

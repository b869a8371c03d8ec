"""Side-by-side speed table of the two stacks from benchmark result files (issue 18).

    python -m analysis.speed_table docs/results/speed_stacks       # writes table.md there

Reads every ``*.json`` written by ``benchmarks.cifar_speed --json`` and
``benchmarks.cmnist_speed --json`` in the folder (``make bench-stacks`` writes one per stack)
and prints a markdown table: one row per benchmark and stack, with the baseline measured in the
same run and the ratio. Numbers are never typed: the table is this script's output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis import provenance


_REGION = "xla_cpu_copy_insertion_use_region_analysis=true"


def rows(folder: Path) -> list[str]:
  out = []
  for path in sorted(folder.glob("*.json")):
    r = json.loads(path.read_text())
    prov = r.get("provenance", {})
    where = (
      f"jax {r.get('jax')} (commit {str(prov.get('git_commit'))[:7]}"
      + (", dirty" if prov.get("git_dirty") else "")
      + ")"
    )
    load = r.get("load_average", [float("nan")])[0]
    if "protocol" in r:
      ips = r["images_per_s"]["gs-jax"]
      out.append(
        f"| CIFAR {r['protocol']} protocol, batch {r['batch_size']}, {r['steps']:,} steps × "
        f"{r['repeats']} | {where}, runtime {r['xla_cpu_runtime']}"
        + (", region copy insertion" if _REGION in r.get("xla_flags", "") else "")
        + (f", dots {r['cpu_dots']}" if "cpu_dots" in r else "")
        + " | "
        f"{r['median']['gs-jax']:,.0f} img/s ({min(ips):,.0f}–{max(ips):,.0f}) | "
        f"PyTorch eager ({r['torch_threads']} thread): {r['median']['pytorch-eager']:,.0f} "
        f"img/s | **{r['ratio']:.2f}×** ({min(r['ratio_per_repeat']):.2f}–"
        f"{max(r['ratio_per_repeat']):.2f}×) | – | {load:.1f} | `{path.name}` |"
      )
    else:
      for m, v in r["methods"].items():
        out.append(
          f"| Colored MNIST full-batch step ({m}, n = {r['n']:,}, h = {v['hidden']}) | "
          f"{where}"
          + (f", dots {r['cpu_dots']}" if "cpu_dots" in r else "")
          + f" | {v['scan_ms']:,.0f} ms/step | PyTorch eager ({v['torch']}): "
          f"{v['torch_ms']:,.0f} ms | **{v['speedup']:.2f}×** | {v['floor_ms']:,.0f} ms "
          f"({v['floor_gflops']:.0f} GFLOP/s; step/floor {v['scan_over_floor']:.2f}×) | "
          f"{load:.1f} | `{path.name}` |"
        )
  return out


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.speed_table",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("folder", help="folder of benchmark JSON files")
  provenance.add_flag(p)
  args = p.parse_args(argv)
  folder = Path(args.folder)
  provenance.gate_files(sorted(folder.glob("*.json")), args.allow_dirty, "speed table")
  text = "\n".join(
    [
      "| benchmark | stack | gs-jax | baseline (same run) | ratio | matmul floor | load | file |",
      "|---|---|---|---|---|---|---|---|",
      *rows(folder),
    ]
  )
  (folder / "table.md").write_text(text + "\n")
  print(text)
  return text


if __name__ == "__main__":
  main()

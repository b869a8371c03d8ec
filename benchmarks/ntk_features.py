"""Top-20 NTK features of the CIFAR-2 training set for the released network (NarLeNet, m =
249,442 parameters, scalar logit f_1 − f_0): time and peak memory of the two routes of
``gs_jax.ntk.top_features`` and of the full Gram matrix in one call (ours; neural-tangents' too
where the optional ``nt`` extra is installed, i.e. on JAX < 0.6).

    python -m benchmarks.ntk_features                       # n = 10,000 matrix-free; dense and NT at 500, 1000
    python -m benchmarks.ntk_features --n=2000 --dense_n=500,1000,2000

Every measurement runs in its own subprocess (fresh JAX, so compilation is included and the
peak resident memory ``ru_maxrss`` is that route's alone); ``base`` is the RSS after loading
the data and initialising the network, before the route starts. Routes:

- ``matrix_free``: block Krylov on ``YΦ0`` with per-chunk Jacobian products
  (``features_matrix_free``; block l, at most ``--max_passes`` passes over the data, Ritz-value
  tolerance ``--tol``);
- ``dense``: our empirical NTK (``gs_jax.ntk.empirical_ntk``, Jacobian contraction) in
  256×256 blocks, then the float64 top-k ``eigh`` of ``Y K Y``;
- ``full``: the baseline, our empirical NTK on all n images in one call (Gram matrix only, no
  eigendecomposition);
- ``nt_full``: the same with ``neural_tangents.empirical_ntk_fn`` (only where neural-tangents
  imports; otherwise the row says it was not run).

The dense routes cost O(n²·m): they are measured at the ``--dense_n`` sizes and, where
10,000 is not among them, their time at 10,000 is extrapolated as ``t(n_max)·(10,000/n_max)²``
(stated as such). At the largest common n the matrix-free singular values are compared with
the dense ones. Results: ``<out_dir>/ntk_features.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(
  route: str,
  n: int,
  k: int,
  block: int,
  max_passes: int,
  tol: float,
  batch: int,
  data_dir: str | None,
) -> dict:
  """One route in this process: ``{"seconds", "peak_rss", "base_rss", "S", ...}``."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from gs_jax.nn import models
  from gs_jax.theory import ntk
  from gs_jax.data import cifar

  data = cifar.head(cifar.load("cifar2", data_dir, "airplane,horse"), n)
  x = cifar.to_float(jnp.asarray(data.x_train))
  y = np.asarray(data.y_train)
  model = models.NarLeNet(2)
  params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
  f = ntk.logit_difference(lambda p, xx: model.apply({"params": p}, xx))
  base = _rss()
  t0 = time.perf_counter()
  out = {}
  if route == "matrix_free":
    U, S, info = ntk.features_matrix_free(
      f,
      params,
      x,
      y,
      k,
      block=block,
      max_passes=max_passes,
      tol=tol,
      batch_size=batch,
      return_info=True,
    )
    out.update(S=S.tolist(), **info)
  elif route == "dense":
    U, S = ntk.top_features(f, params, x, y, k, method="dense", block_size=256)
    out.update(S=S.tolist())
  elif route in ("full", "nt_full"):
    K = ntk.empirical_ntk(
      f, params, x, block_size=n, backend="neural_tangents" if route == "nt_full" else "jax"
    )
    out.update(K_shape=list(K.shape))
  else:
    raise ValueError(f"unknown route {route!r}")
  out.update(
    route=route,
    n=n,
    k=k,
    m=int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
    seconds=time.perf_counter() - t0,
    peak_rss=_rss(),
    base_rss=base,
  )
  return out


def run_child(args, route: str, n: int) -> dict:
  cmd = [
    sys.executable,
    "-m",
    "benchmarks.ntk_features",
    f"--child={route}",
    f"--n={n}",
    f"--k={args.k}",
    f"--block={args.block}",
    f"--max_passes={args.max_passes}",
    f"--tol={args.tol}",
    f"--batch={args.batch}",
  ]
  if args.data_dir:
    cmd.append(f"--data_dir={args.data_dir}")
  t0 = time.perf_counter()
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
  if p.returncode != 0:
    return {
      "route": route,
      "n": n,
      "error": p.stderr.strip().splitlines()[-1:],
      "wall_s": time.perf_counter() - t0,
    }
  r = json.loads(p.stdout.strip().splitlines()[-1])
  r["wall_s"] = time.perf_counter() - t0
  print(json.dumps({k: v for k, v in r.items() if k != "S"}), file=sys.stderr, flush=True)
  return r


def table(rows, n_target: int) -> str:
  lines = [
    "| route | n | time (s, compile incl.) | peak RSS (GB) | route's own (GB) | notes |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['route']} | {r['n']} | – | – | – | failed: {r['error']} |")
      continue
    note = ""
    if r["route"] == "matrix_free":
      note = (
        f"{r['passes']} passes, Krylov dim {r['krylov_dim']}, last Ritz change "
        f"{r['ritz_change']:.1e}"
      )
    lines.append(
      f"| {r['route']} | {r['n']:,} | {r['seconds']:.0f} | {r['peak_rss'] / 1e9:.2f}"
      f" | {(r['peak_rss'] - r['base_rss']) / 1e9:.2f} | {note} |"
    )
  for route in ("dense", "full", "nt_full"):
    done = [r for r in rows if r["route"] == route and "error" not in r]
    if done and max(r["n"] for r in done) < n_target:
      big = max(done, key=lambda r: r["n"])
      est = big["seconds"] * (n_target / big["n"]) ** 2
      lines.append(
        f"| {route} | {n_target:,} | ≈{est:.0f} (extrapolated n²) | – | – | "
        f"from n = {big['n']:,}; not measured |"
      )
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.ntk_features",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--n", type=int, default=10000, help="training images for the matrix-free route")
  p.add_argument("--dense_n", default="500,1000", help="sizes for dense, full and nt_full")
  p.add_argument("--k", type=int, default=20)
  p.add_argument("--block", type=int, default=40)
  p.add_argument("--max_passes", type=int, default=6)
  p.add_argument("--tol", type=float, default=1e-4)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--data_dir", default="")
  p.add_argument("--timeout", type=float, default=3600)
  p.add_argument("--out_dir", default="runs/benchmarks/ntk_features")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  from gs_jax.experiment import results

  started = results.provenance_at_start()  # the code that runs, before anything is written
  if args.child:
    r = measure(
      args.child,
      args.n,
      args.k,
      args.block,
      args.max_passes,
      args.tol,
      args.batch,
      args.data_dir or None,
    )
    print(json.dumps(r))
    return r
  sizes = [int(s) for s in args.dense_n.split(",") if s]
  rows = [run_child(args, "matrix_free", args.n)]
  for n in sizes:
    rows += [run_child(args, "dense", n), run_child(args, "full", n)]
    if importlib.util.find_spec("neural_tangents") is not None:
      rows.append(run_child(args, "nt_full", n))
    if n != args.n:
      rows.append(run_child(args, "matrix_free", n))
  import numpy as np

  agree = {}
  for n in sizes:
    d = [r for r in rows if r["route"] == "dense" and r["n"] == n and "S" in r]
    mf = [r for r in rows if r["route"] == "matrix_free" and r["n"] == n and "S" in r]
    if d and mf:
      agree[n] = float(np.max(np.abs(np.array(mf[0]["S"]) / np.array(d[0]["S"]) - 1)))
  text = table(rows, args.n)
  if agree:
    text += (
      "\n\nmax relative difference of the top-k singular values, matrix-free vs dense: "
      + ", ".join(f"n = {n}: {v:.1e}" for n, v in agree.items())
    )
  print(text)
  out = Path(args.out_dir)
  out.mkdir(parents=True, exist_ok=True)
  from gs_jax.experiment import results

  results.write_measurement(
    out / "ntk_features.json",
    {"rows": rows, "agreement": agree, "table": text, "cpu_count": os.cpu_count()},
    started,
  )
  return rows


if __name__ == "__main__":
  main()

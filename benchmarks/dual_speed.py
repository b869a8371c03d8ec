"""Speed of ``dual.fixed_point`` (Newton, float64) against plain gradient ascent on eq 8.

    python -m benchmarks.dual_speed [--sizes 500 2000] [--lam 0.01] [--ga_max_steps 200000]

For each n: a random problem (U from the QR of a Gaussian n×n matrix, strengths
``s_j ~ Uniform(0.1, 3)``, λ = 0.01), the exact dual eq 8 / eq 9. Times exclude compilation
(every timed call is preceded by an identical warm-up call) and are best of ``--repeats``.

Newton: ``dual.fixed_point(..., dynamics="exact")`` to the relative residual 1e-6 and to its
default tolerance (≤ 1e-12). Baseline: the released toy code's method, plain gradient ascent
``α ← clip(α + η ∇ψ(α), ε, 1−ε)`` from α = 0.5, with the constant step ``η = 1/L``,
``L = λ_max(Q)/λ + 1/(a(1−a))`` and ``a = min_i α*_i`` (the curvature bound near the optimum:
a step size an oracle would pick, so the baseline is if anything flattered). It runs in
``lax.scan`` chunks of 500 steps (``gs_jax.train.field_ascent``) until the same relative
residual reaches 1e-6 or ``--ga_max_steps`` / ``--ga_max_seconds`` run out; the report then
says how far it got. The baseline's field is eq 9 with ``Q = U S² U^T`` formed once (one n×n
matvec per step, as the released code does); ``dual.vector_field`` computes ``U(S²(U^T α))``,
two matvecs, which would make the baseline 2× slower per step (measured, n = 2000).
"""

from __future__ import annotations

import argparse
import functools
import os
import time


import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.theory import dual
from gs_jax.experiment import results
from gs_jax import training as train


def _problem(n, lam, seed):
  rng = np.random.default_rng(seed)
  q, r = np.linalg.qr(rng.normal(size=(n, n)))
  U = q * np.sign(np.diag(r))
  S = rng.uniform(0.1, 3.0, n)
  return jnp.asarray(U), jnp.asarray(S), lam


def _field(Q, lam, alpha):
  """F(α) of eq 9 with a precomputed Q (see the module docstring)."""
  return jnp.log1p(-alpha) - jnp.log(alpha) - Q @ alpha / lam


def _rel_residual(Q, lam, alpha):
  """``dual.SolverInfo.residual`` at α: each |F_i| relative to the size of its terms."""
  F = _field(Q, lam, alpha)
  h = F + Q @ alpha / lam  # log((1−α)/α)
  return jnp.max(jnp.abs(F) / (1.0 + jnp.abs(h) + jnp.abs(Q) @ alpha / lam))


@functools.partial(jax.jit, static_argnames=("steps",))
def _ga_chunk(Q, lam, eta, alpha, steps):
  alpha = train.field_ascent(
    lambda a: _field(Q, lam, a), alpha, eta, steps, project=lambda a: jnp.clip(a, 1e-12, 1 - 1e-12)
  )
  return alpha, _rel_residual(Q, lam, alpha)


def _timed(fn, repeats):
  """Best wall-clock time of ``repeats`` calls after a warm-up call, and its CPU time."""
  out = fn()
  jax.block_until_ready(out)
  best, cpu = np.inf, np.inf
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    jax.block_until_ready(out)
    if time.perf_counter() - t < best:
      best, cpu = time.perf_counter() - t, time.process_time() - c
  return out, best, cpu


def run(n, lam, seed, repeats, ga_max_steps, ga_max_seconds, chunk=500):
  U, S, lam = _problem(n, lam, seed)
  row = {"n": n, "lam": lam}
  for name, tol, orth_tol in (
    ("newton_1e-6", 1e-6, dual.ORTHO_TOL),
    ("newton", 1e-14, dual.ORTHO_TOL),
    ("newton_unchecked", 1e-14, None),
  ):
    (alpha, info), t, cpu = _timed(
      lambda tol=tol, o=orth_tol: dual.fixed_point(
        U, S, lam, dynamics="exact", tol=tol, orth_tol=o, return_info=True
      ),
      repeats,
    )
    row[name] = {
      "seconds": t,
      "cpu_seconds": cpu,
      "iterations": int(info.num_steps),
      "factorizations": int(info.num_factorizations),
      "residual": float(info.residual),
      "abs_residual": float(info.abs_residual),
    }
  alpha_star = alpha

  Q = (U * S**2) @ U.T
  a = float(jnp.min(alpha_star))
  L = float(jnp.max(S) ** 2 / lam + 1.0 / (a * (1 - a)))
  eta = 1.0 / L
  alpha = jnp.full(n, 0.5)
  jax.block_until_ready(_ga_chunk(Q, lam, eta, alpha, chunk))  # compile
  steps, res, t0, c0 = 0, np.inf, time.perf_counter(), time.process_time()
  history = []
  while steps < ga_max_steps and time.perf_counter() - t0 < ga_max_seconds:
    alpha, res = _ga_chunk(Q, lam, eta, alpha, chunk)
    res = float(res)
    steps += chunk
    history.append((steps, res))
    if res <= 1e-6:
      break
  # Linear-rate extrapolation from the last half of the run (GA converges linearly at best).
  est = None
  if res > 1e-6 and len(history) >= 4:
    (s0, r0), (s1, r1) = history[len(history) // 2], history[-1]
    if r1 < r0:
      est = int(s1 + (s1 - s0) * np.log(r1 / 1e-6) / np.log(r0 / r1))
  t_ga = time.perf_counter() - t0
  row["gradient_ascent"] = {
    "seconds": t_ga,
    "cpu_seconds": time.process_time() - c0,
    "steps": steps,
    "residual": res,
    "reached_1e-6": res <= 1e-6,
    "eta": eta,
    "extrapolated_steps_to_1e-6": est,
    "extrapolated_seconds_to_1e-6": None if est is None else t_ga * est / steps,
    "max_rel_error_vs_newton": float(jnp.max(jnp.abs(alpha - alpha_star) / alpha_star)),
  }
  t6 = row["newton_1e-6"]["seconds"]
  ratio = t_ga / t6
  row["speedup_to_1e-6"] = ratio if res <= 1e-6 else f">= {ratio:.0f} (gradient ascent capped)"
  ext = row["gradient_ascent"]["extrapolated_seconds_to_1e-6"]
  row["speedup_to_1e-6_extrapolated"] = None if ext is None else ext / t6
  row["cpu_speedup_so_far"] = (
    row["gradient_ascent"]["cpu_seconds"] / row["newton_1e-6"]["cpu_seconds"]
  )
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="problem sizes n")
  p.add_argument("--lam", type=float, default=0.01, help="ridge λ of eq 5 (sum loss)")
  p.add_argument("--seed", type=int, default=0, help="seed of the random problems")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
  p.add_argument("--ga_max_steps", type=int, default=2_000_000, help="gradient-ascent step cap")
  p.add_argument(
    "--ga_max_seconds", type=float, default=300.0, help="gradient-ascent wall-clock cap (seconds)"
  )
  p.add_argument("--out", default="runs/benchmarks/dual_speed.json", help="results JSON path")
  args = p.parse_args()
  started = results.provenance_at_start()  # the code that runs, before anything is written

  rows = []
  for n in args.sizes:
    row = run(n, args.lam, args.seed, args.repeats, args.ga_max_steps, args.ga_max_seconds)
    rows.append(row)
    ga = row["gradient_ascent"]
    for name, label in (
      ("newton", "Newton to 1e-12"),
      ("newton_unchecked", "  (no U check)"),
      ("newton_1e-6", "Newton to 1e-6"),
    ):
      r = row[name]
      print(
        f"n={n:5d}  {label:16s} {r['seconds']:7.3f} s wall ({r['cpu_seconds']:.3f} s CPU), "
        f"{r['iterations']} iterations / {r['factorizations']} Cholesky, residual "
        f"{r['residual']:.1e} (abs {r['abs_residual']:.1e})"
      )
    print(
      f"n={n:5d}  gradient ascent  {ga['seconds']:7.3f} s wall ({ga['cpu_seconds']:.3f} s CPU),"
      f" {ga['steps']} steps, residual {ga['residual']:.1e} "
      f"({'reached' if ga['reached_1e-6'] else 'did NOT reach'} 1e-6)"
    )
    if ga["extrapolated_steps_to_1e-6"]:
      print(
        f"         (at its last-half rate it would need ~{ga['extrapolated_steps_to_1e-6']:.2e}"
        f" steps, ~{ga['extrapolated_seconds_to_1e-6']:.0f} s, to reach 1e-6)"
      )
    print(f"         speed-up to 1e-6 (gradient ascent / Newton), wall: {row['speedup_to_1e-6']}")
    if row["speedup_to_1e-6_extrapolated"]:
      print(f"         extrapolated speed-up to 1e-6: ~{row['speedup_to_1e-6_extrapolated']:.0f}x")
  results.write_measurement(
    args.out, {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "rows": rows}, started
  )
  print(f"load average {os.getloadavg()} on {os.cpu_count()} CPUs; wrote", args.out)


if __name__ == "__main__":
  jax.config.update("jax_enable_x64", True)  # a script run: float64 throughout
  main()

"""Figure 5: primal vs dual paths of the responses, and spectral decoupling. Presets, commands
and expected results: ``configs/primal_dual.py``; protocol: docs/protocols.md §3.2.

For every s1, on ``YΦ0 = U(δ) diag(s1, s2) V^T`` (``gs_jax.data.toy.coupled_features``), the
responses ``z = (z1, z2)`` are followed along (i) gradient ascent on the dual eq 8 from
α = 1/2 (Euler steps of eq 9, ``gs_jax.starvation.dual_ascent``), (ii) gradient descent on
the primal eq 5 and (iii) on the SD primal eq 17, both from θ = 0
(``gs_jax.starvation.train_linear``), all in float64, and compared with
``dual.fixed_point`` (eq 9 for (i)–(ii), eq 18 for (iii)).

Outputs in ``out_dir``: ``results.json`` (per s1: end points, fixed points, relative errors;
the checks), ``paths.npz`` (the paths every ``every`` steps), ``figure5.{png,pdf}`` drawn by
``analysis.theorem2_report``. Started again with the same command, a finished run is not
recomputed (only redrawn); ``--overwrite`` recomputes.
"""

from __future__ import annotations

import numpy as np
from gs_jax.base._compat import enable_x64

from analysis import theorem2_report
from configs import primal_dual as configs
from gs_jax.base import jsonio
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.theory import dual, ntk
from gs_jax.tasks import starvation
from gs_jax.data import toy


def compute(cfg) -> tuple[dict, dict]:
  """The paths and end points; returns ``(per_s1, paths)``."""
  prob = toy.coupled_features(cfg.s1, cfg.s2, delta=cfg.delta, m=cfg.m, seed=cfg.seed)
  U, y = prob["U"], prob["y"]
  paths, ends = {}, {}
  for name, penalty in (("primal", "ridge"), ("primal_sd", "sd")):
    logits, _, history = starvation.train_linear(
      prob["phi"],
      y,
      lam=cfg.lam,
      penalty=penalty,
      lr=cfg.primal_lr,
      steps=cfg.steps,
      record_logits=True,
      progress=cfg.run.progress,
      desc=name,
    )
    ends[name] = np.asarray(ntk.responses(U, y, logits))
    # history["logits"][:, t] is ŷ(θ_t), before step t: the path is θ_every, θ_2·every, …, end.
    path = np.asarray(ntk.responses(U, y, history["logits"][:, cfg.every :: cfg.every]))
    paths[name] = np.concatenate([path, ends[name][:, None]], axis=1)
  dual_runs = [
    starvation.dual_ascent(U, S, cfg.lam, lr=cfg.dual_lr, steps=cfg.steps, every=cfg.every)
    for S in prob["S"]
  ]
  paths["dual"] = np.stack([p for p, _ in dual_runs])
  ends["dual"] = np.stack([e for _, e in dual_runs])
  per_s1 = []
  for i, S in enumerate(prob["S"]):
    fp = {d: starvation.dual_responses(U, S, cfg.lam, d) for d in dual.DYNAMICS}
    run = {"s1": float(S[0]), "fixed_point_z": fp}
    for name, ref in (("dual", "exact"), ("primal", "exact"), ("primal_sd", "sd")):
      run[name] = {
        "z_end": ends[name][i],
        "rel_error_vs_fixed_point": float(
          np.max(np.abs(ends[name][i] - fp[ref]) / np.abs(fp[ref]))
        ),
      }
    run["primal_vs_dual_rel_gap"] = float(
      np.max(np.abs(ends["primal"][i] - ends["dual"][i]) / np.abs(fp["exact"]))
    )
    per_s1.append(jsonio.to_builtin(run))
  return per_s1, {"s1": prob["S"][:, 0], **paths}


def checks(per_s1) -> dict:
  z2 = [r["fixed_point_z"]["exact"][1] for r in per_s1]
  sd_ends = np.array([r["primal_sd"]["z_end"] for r in per_s1])
  return {
    "final_z2_decreases_with_s1": bool(np.all(np.diff(z2) < 0)),
    "final_z2": z2,
    "final_z2_sd": sd_ends[:, 1].tolist(),
    "sd_end_point_mean": sd_ends.mean(axis=0).tolist(),
    "sd_end_points_spread": float(np.ptp(sd_ends, axis=0).max()),
    "max_primal_dual_rel_gap": max(r["primal_vs_dual_rel_gap"] for r in per_s1),
    "max_rel_error_vs_fixed_point": {
      name: max(r[name]["rel_error_vs_fixed_point"] for r in per_s1)
      for name in ("dual", "primal", "primal_sd")
    },
  }


def run(cfg) -> dict:
  writer = Run(cfg, "primal_dual", artifacts=("paths.npz",))
  paths_file = writer.out_dir / "paths.npz"
  if writer.previous is not None and paths_file.exists():  # same settings (else refused)
    print(f"found in {writer.results_path}, not recomputed (--overwrite to redo)")
  else:
    with enable_x64():  # the theory runs in float64 (docs/protocols.md §4)
      per_s1, paths = compute(cfg)
    np.savez(paths_file, **paths)
    writer.write(checks(per_s1), {}, per_s1=per_s1)
  return theorem2_report.report(writer.out_dir)


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.primal_dual")


if __name__ == "__main__":
  main()

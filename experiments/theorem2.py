"""Theorem 2 checked on trained models. Presets, commands and expected results:
``configs/theorem2.py``; protocol: docs/protocols.md §1.

(a) ``linear``: the model ``ŷ = Φ0 θ`` with ``YΦ0 = U(δ) diag(s1, s2) V^T`` (eq 3, eq 15),
trained by full-batch GD on eq 5 and on eq 17 until the gradient is at float64 round-off,
against ``dual.fixed_point(…, "exact")`` / ``"sd"`` over a sweep of s1.
(b) ``network``: NTK-parametrised two-layer ReLU nets of every width, centred, ridge on θ−θ0,
on two label-+1 clusters, feature 1 strengthened at fixed U (or by scaling inputs), against
the dual prediction from their NTK at initialisation. Library: ``gs_jax.starvation``.

Outputs in ``out_dir``: ``results.json`` (per width: metrics over seeds, per-seed values),
``metrics.jsonl``, ``theorem2_linear.{png,pdf}``, ``theorem2_network.{png,pdf}``; the tables
are printed from results.json by ``analysis.theorem2_report``. Started again with the same
command, a run skips what it finished (the linear check, finished widths) and continues an
unfinished width from its checkpoint (``ckpt/``); ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import time

import numpy as np
from gs_jax.base._compat import enable_x64

from analysis import theorem2_report
from configs import theorem2 as configs
from gs_jax.base import jsonio
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.tasks import starvation


def run(cfg) -> dict:
  # Parts: the linear check, and one per network width. Each part's numbers depend on its
  # section of the config and the chunking (not on the other part, nor on the list of widths).
  writer = Run(cfg, "theorem2", whole=False)
  prev = writer.previous or {}
  lin_set = {**jsonio.to_builtin(cfg.linear), "chunk": cfg.chunk}
  net_set = {
    **{k: v for k, v in jsonio.to_builtin(cfg.network).items() if k != "widths"},
    "chunk": cfg.chunk,
  }
  metrics, per_seed = {}, {"network": {}}
  # Keep what out_dir holds for the same settings (a part run earlier, finished widths).
  if writer.finished("linear", lin_set):
    metrics["linear"] = prev["metrics"]["linear"]
  for w, m in prev.get("metrics", {}).get("network", {}).items():
    if writer.finished(f"width_{w}", net_set):
      metrics.setdefault("network", {})[w] = m
      per_seed["network"][w] = prev["per_seed"]["network"][w]

  def record():
    parts = [p for p in configs.PARTS if p in metrics]
    widths = sorted(int(w) for w in metrics.get("network", {}))
    writer.config.update(
      parts=parts,
      network={**writer.config["network"], "widths": widths or list(cfg.network.widths)},
    )
    writer.write(metrics, per_seed)

  with enable_x64():  # the theory and these checks run in float64 (docs/protocols.md §4)
    if "linear" in cfg.parts:
      if "linear" in metrics:
        print(f"linear: found in {writer.results_path}, not rerun (--overwrite to redo)")
      else:
        ckpts = {
          p: writer.checkpointer(f"linear_{p}", lin_set, every_seconds=cfg.run.checkpoint_seconds)
          for p in starvation.PENALTIES
        }
        t0 = time.perf_counter()
        metrics["linear"] = starvation.linear_check(
          cfg.linear, chunk=cfg.chunk, progress=cfg.run.progress, checkpoints=ckpts
        )
        metrics["linear"]["seconds"] = time.perf_counter() - t0
        writer.mark_finished("linear", lin_set)
        record()
        for p, c in ckpts.items():
          c.close()
          writer.remove_checkpoint(f"linear_{p}", lin_set)
    if "network" in cfg.parts:
      metrics.setdefault("network", {})
      for width in cfg.network.widths:
        key = str(width)
        if key in metrics["network"]:
          print(f"width {width}: found in {writer.results_path}, not retrained")
          continue
        ckpt = writer.checkpointer(
          f"width_{width}", net_set, every_seconds=cfg.run.checkpoint_seconds
        )
        if ckpt.latest_step():
          print(f"width {width}: resuming from the checkpoint at step {ckpt.latest_step()}")
        t0 = time.perf_counter()
        net, problems = starvation.network_problems(cfg.network, width)
        logits, grad_norm, history = starvation.train_network(
          net,
          problems,
          lam=cfg.network.lam,
          steps=cfg.network.steps,
          momentum=cfg.network.momentum,
          chunk=cfg.chunk,
          progress=cfg.run.progress,
          desc=f"width {width}",
          checkpoint=ckpt,
        )
        m, s = starvation.evaluate_network(cfg.network, problems, logits, grad_norm)
        m["seconds"] = time.perf_counter() - t0  # this process's share if it resumed
        writer.log_history(
          {k: np.mean(v, axis=0) for k, v in history.items()},
          every=max(1, cfg.network.steps // 100),
          part="network",
          width=width,
        )
        metrics["network"][key], per_seed["network"][key] = m, s
        writer.mark_finished(f"width_{width}", net_set)
        record()
        ckpt.close()
        writer.remove_checkpoint(f"width_{width}", net_set)
        print(f"width {width}: rel. error {m['rel_error']['mean']:.2e} ({m['seconds']:.0f} s)")
  return theorem2_report.report(writer.out_dir)


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.theorem2")


if __name__ == "__main__":
  main()

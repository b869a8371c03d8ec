"""Two-moons: Figure 1 (a–c) and the Appendix-B grid. Presets, commands and expected results:
``configs/two_moons.py``; protocol: docs/protocols.md §3.1.

Every panel trains all its seeds in one compiled, vmapped program (``gs_jax.moons``). Outputs
in ``out_dir``: ``results.json`` (per panel: train accuracy, final loss, input-space margins;
per-seed values), ``maps/<panel>.npz`` (seed-averaged logit map), ``<figure>.{png,pdf}``.
Started again with the same command, a run skips finished panels and continues an unfinished
one from its checkpoint (``ckpt/<panel>``); ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import time

import numpy as np

from analysis import two_moons_figures
from configs import two_moons as configs
from gs_jax.base import distributed, errors, jsonio
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.tasks import moons


def scaled_panel(cfg, name):
  panel = cli.overrides(cfg.panels[name])
  panel.steps = max(1, int(round(panel.steps * cfg.steps_scale)))
  return panel


def run(cfg) -> dict:
  writer = Run(cfg, "two_moons", artifacts=("maps",), whole=False)
  prev = writer.previous or {}
  names = [n for n in cfg.only if n] or list(cfg.panels)
  metrics, per_seed = dict(prev.get("metrics", {})), dict(prev.get("per_seed", {}))
  panels_done = dict(prev.get("config", {}).get("panels", {}))
  seeds = list(range(cfg.seeds))
  trainers = {}
  for name in names:
    panel = scaled_panel(cfg, name)
    map_path = writer.out_dir / "maps" / f"{name}.npz"
    # What a panel's numbers depend on: a changed panel is retrained, in its own checkpoint.
    settings = {"panel": jsonio.to_builtin(panel), "seeds": cfg.seeds}
    same = writer.finished(name, settings) and map_path.exists()
    if cfg.run.plot_only or same:
      if not same:
        raise errors.UserError(
          f"--plot_only: panel {name} has no results in {writer.out_dir}; run it"
        )
      print(f"{name}: found in {writer.results_path}, not retrained (--overwrite to redo)")
      continue
    t0 = time.perf_counter()
    ckpt = writer.checkpointer(name, settings)
    states, history, data = moons.train_panel(
      panel, seeds, trainers=trainers, desc=name, progress=cfg.run.progress, checkpoint=ckpt
    )
    train_s = time.perf_counter() - t0
    writer.log_history(
      {k: np.mean(v, axis=0) for k, v in history.items()},
      every=max(1, panel.steps // 100),
      panel=name,
    )
    m, s, grid = moons.evaluate_panel(
      panel,
      states,
      history,
      data,
      map_resolution=cfg.map_resolution,
      margin_resolution=cfg.margin_resolution,
    )
    if distributed.is_main():  # every process has every seed (all-gathered); one writes
      map_path.parent.mkdir(parents=True, exist_ok=True)
      np.savez(map_path, xs=grid[0], ys=grid[1], z=grid[2])
    metrics[name] = {**m, "seeds": cfg.seeds, "train_time_s": train_s}
    per_seed[name] = s
    panels_done[name] = jsonio.to_builtin(panel)
    writer.config["panels"] = {**writer.config["panels"], **panels_done}
    writer.mark_finished(name, settings)
    writer.write(metrics, per_seed)
    print(
      f"{name:12s} acc {m['train_accuracy']:.4f}  loss {m['final_loss']:.4f}  "
      f"margin min {m['margin_min']:+.4f} median {m['margin_median']:.4f}  "
      f"per-seed min {m['per_seed_margin_min_mean']:+.4f}  ({train_s:.1f}s train)"
    )
  if distributed.is_main():
    print("wrote", *two_moons_figures.draw(writer.out_dir, names), writer.results_path)
  return writer.read()


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.two_moons")


if __name__ == "__main__":
  main()

"""Two-moons: Figure 1 (a–c) and the Appendix-B grid. Presets, commands and expected results:
``configs/two_moons.py``; protocol: docs/protocols.md §3.1.

Every panel trains all its seeds in one compiled, vmapped program (``gs_jax.moons``). Outputs
in ``out_dir``: ``results.json`` (per panel: train accuracy, final loss, input-space margins;
per-seed values), ``maps/<panel>.npz`` (seed-averaged logit map), ``<figure>.{png,pdf}``.
Started again with the same command, a run skips finished panels and continues an unfinished
one from its checkpoint (``ckpt/<panel>``); ``--overwrite`` starts afresh.
"""
from __future__ import annotations

import shutil
import sys
import time

import jax
import numpy as np

from analysis import two_moons_figures
from configs import two_moons as configs
from gs_jax.experiment import checkpoint, cli, results
from gs_jax.base import distributed
from gs_jax.tasks import moons


def scaled_panel(cfg, name):
  panel = cli.overrides(cfg.panels[name])
  panel.steps = max(1, int(round(panel.steps * cfg.steps_scale)))
  return panel


def run(cfg) -> dict:
  writer = results.RunWriter(cfg.out_dir, "two_moons", cfg)
  prev = writer.previous() or {}
  if cfg.overwrite:
    if distributed.is_main():
      shutil.rmtree(writer.out_dir / "ckpt", ignore_errors=True)
    prev = {}
  distributed.barrier("two_moons: out_dir ready")   # after process 0 removed old checkpoints
  names = [n for n in cfg.only if n] or list(cfg.panels)
  metrics, per_seed = dict(prev.get("metrics", {})), dict(prev.get("per_seed", {}))
  panels_done = dict(prev.get("config", {}).get("panels", {}))
  seeds = list(range(cfg.seeds))
  trainers = {}
  for name in names:
    panel = scaled_panel(cfg, name)
    map_path = writer.out_dir / "maps" / f"{name}.npz"
    same = (panels_done.get(name) == results.to_builtin(panel)
            and metrics.get(name, {}).get("seeds") == cfg.seeds and map_path.exists())
    if cfg.plot_only or same:
      if not same:
        raise SystemExit(f"--plot_only: panel {name} has no results in {cfg.out_dir}; run it")
      print(f"{name}: found in {writer.results_path}, not retrained (--overwrite to redo)")
      continue
    t0 = time.perf_counter()
    # One folder per panel settings: a changed panel never resumes a stale checkpoint.
    settings = {"panel": results.to_builtin(panel), "seeds": cfg.seeds}
    ckpt = checkpoint.Checkpointer(
        writer.out_dir / "ckpt" / f"{name}-{checkpoint.digest(settings)}", fingerprint=settings)
    states, history, data = moons.train_panel(panel, seeds, trainers=trainers, desc=name,
                                              progress=cfg.progress, checkpoint=ckpt)
    train_s = time.perf_counter() - t0
    writer.log_history({k: np.mean(v, axis=0) for k, v in history.items()},
                       every=max(1, panel.steps // 100), panel=name)
    m, s, grid = moons.evaluate_panel(panel, states, history, data,
                                      map_resolution=cfg.map_resolution,
                                      margin_resolution=cfg.margin_resolution)
    if distributed.is_main():   # every process has every seed (all-gathered); one writes
      map_path.parent.mkdir(parents=True, exist_ok=True)
      np.savez(map_path, xs=grid[0], ys=grid[1], z=grid[2])
    metrics[name] = {**m, "seeds": cfg.seeds, "train_time_s": train_s}
    per_seed[name] = s
    panels_done[name] = results.to_builtin(panel)
    writer.config["panels"] = {**writer.config["panels"], **panels_done}
    writer.write(metrics, per_seed)
    print(f"{name:12s} acc {m['train_accuracy']:.4f}  loss {m['final_loss']:.4f}  "
          f"margin min {m['margin_min']:+.4f} median {m['margin_median']:.4f}  "
          f"per-seed min {m['per_seed_margin_min_mean']:+.4f}  ({train_s:.1f}s train)")
  if distributed.is_main():
    print("wrote", *two_moons_figures.draw(cfg.out_dir, names), writer.results_path)
  distributed.barrier("two_moons: results written")
  return results.read_json(writer.results_path)


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.two_moons")


if __name__ == "__main__":
  main()

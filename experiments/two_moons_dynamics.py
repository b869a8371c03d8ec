"""Figure 1(d): responses to the horizontal and vertical features during two-moons training,
beside the released code's view. Presets, commands and expected results:
``configs/two_moons_dynamics.py``; protocol: docs/protocols.md §3.2; library:
``gs_jax.moons_dynamics``.

Outputs in ``out_dir``: ``results.json`` (per setting: final responses z1, z2 and the released
view's |r_c|, mean ± sample std, per-seed values, feature diagnostics), ``metrics.jsonl``
(seed-mean loss and responses every ``record_every`` steps), ``trajectories/<setting>.npz``
(every seed's responses at every step, feature functions of seed 0), ``<figure>.{png,pdf}``.
Started again with the same command, a run skips finished settings and continues an
unfinished one from its checkpoint (``ckpt/<setting>``); ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import time

import numpy as np

from analysis import two_moons_dynamics_figure
from configs import two_moons_dynamics as configs
from gs_jax.base import jsonio, stats
from gs_jax.experiment import cli
from gs_jax.experiment import run as run_lib
from gs_jax.tasks import moons_dynamics


def setting_fields(cfg, name) -> dict:
  """Everything a setting's numbers depend on: the setting and the shared hyper-parameters
  (not the other settings)."""
  shared = {k: v for k, v in run_lib.hyperparameters(cfg).items() if k != "settings"}
  return {**jsonio.to_builtin(cfg.settings[name]), **shared}


def summarize(traj, feats) -> tuple[dict, dict]:
  """Metrics (mean ± sample std over seeds) and per-seed values of one trained setting."""
  z, r = traj["z"], traj["released"]
  per_seed = {
    "z1_final": z[:, -1, 0],
    "z2_final": z[:, -1, 1],
    "released_final": r[:, -1],
    "released_init": r[:, 0],
    "train_accuracy": traj["train_accuracy"],
    "captured": [f["captured"] for f in feats],
    "corr": [f["corr"] for f in feats],
    "corr_released": [f["corr_released"] for f in feats],
    "strengths": [f["strengths"] for f in feats],
  }
  metrics = {
    "z1_final": stats.mean_std(z[:, -1, 0]),
    "z2_final": stats.mean_std(z[:, -1, 1]),
    "z2_over_z1_final": float(z[:, -1, 1].mean() / z[:, -1, 0].mean()),
    "z2_max_mean_path": float(z[:, :, 1].mean(0).max()),
    "z_at_init_max_abs": float(np.abs(z[:, 0]).max()),
    "released_final": [stats.mean_std(r[:, -1, j]) for j in range(r.shape[-1])],
    "released_init": [stats.mean_std(r[:, 0, j]) for j in range(r.shape[-1])],
    "released_max_mean_path": r.mean(0).max(0).tolist(),
    "train_accuracy": stats.mean_std(traj["train_accuracy"]),
    "captured_mean": np.mean(per_seed["captured"], axis=0).tolist(),
    "corr_mean": np.mean(per_seed["corr"], axis=0).tolist(),
    "corr_released_mean": np.mean(per_seed["corr_released"], axis=0).tolist(),
  }
  return metrics, per_seed


def run(cfg, *, on_chunk=None) -> dict:
  """Trains the settings not yet in ``out_dir`` and draws the figure. ``on_chunk(name, done,
  history)`` is called after every compiled chunk (tests use it to kill a run)."""
  writer = run_lib.Run(cfg, "two_moons_dynamics", artifacts=("trajectories",), whole=False)
  out = writer.out_dir
  prev = writer.previous or {}
  metrics, per_seed = dict(prev.get("metrics", {})), dict(prev.get("per_seed", {}))
  seeds = list(range(cfg.seeds))
  model, init, trainer = moons_dynamics.make_trainer(
    width=cfg.width,
    lr=cfg.lr,
    momentum=cfg.momentum,
    weight_decay=cfg.weight_decay,
    chunk=cfg.chunk,
  )
  grid_points = moons_dynamics.grid(cfg.grid_resolution)
  per_delta = {}  # data, θ0 and features depend on Δ only, not on SD
  for name, s in cfg.settings.items():
    fields, traj_path = setting_fields(cfg, name), out / "trajectories" / f"{name}.npz"
    if writer.finished(name, fields) and traj_path.exists():
      print(f"{name}: found in {writer.results_path}, not retrained (--overwrite to redo)")
      continue
    if s.delta not in per_delta:
      per_delta[s.delta] = moons_dynamics.setup(
        model,
        init,
        seeds,
        s.delta,
        num_candidates=cfg.num_candidates,
        columns=cfg.released_columns,
        grid_points=grid_points,
      )
    batches, states0, feats = per_delta[s.delta]
    t0 = time.perf_counter()
    _, history, traj = moons_dynamics.train_setting(
      model,
      trainer,
      states0,
      batches,
      s.sd_lambda,
      cfg.steps,
      desc=s.title,
      progress=cfg.run.progress,
      checkpoint=writer.checkpointer(name, fields, every_seconds=cfg.run.checkpoint_every_s),
      on_chunk=None if on_chunk is None else lambda d, h: on_chunk(name, d, h),
    )
    train_s = time.perf_counter() - t0
    traj_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
      traj_path,
      z=traj["z"],
      released=traj["released"],
      grid=grid_points,
      g=feats[0]["g"],
      g_released=feats[0]["g_released"],
    )
    writer.log_history(
      {k: np.mean(history[k], axis=0) for k in ("loss", "z", "released")},
      every=cfg.record_every,
      setting=name,
    )
    metrics[name], per_seed[name] = summarize(traj, feats)
    metrics[name]["train_time_s"] = train_s
    writer.mark_finished(name, fields)
    writer.write(metrics, per_seed)
    m = metrics[name]
    print(
      f"{s.title:12s} z1 {m['z1_final']['mean']:7.2f} ± {m['z1_final']['std']:5.2f}  "
      f"z2 {m['z2_final']['mean']:6.2f} ± {m['z2_final']['std']:5.2f}  released |r| "
      + "  ".join(f"{r['mean']:.2f} ± {r['std']:.2f}" for r in m["released_final"])
      + f"  acc {m['train_accuracy']['mean']:.3f}  ({train_s:.1f}s)"
    )
  print("wrote", *two_moons_dynamics_figure.draw(out), writer.results_path)
  res = writer.read()
  print("\n".join(two_moons_dynamics_figure.table(res)))
  return res


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.two_moons_dynamics")


if __name__ == "__main__":
  main()

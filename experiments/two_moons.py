r"""Two-moons: Figure 1 (a–c) and the Appendix-B grid (docs/protocols.md §3.1).

    python -m experiments.two_moons                       # Figure 1 a–c, 10 seeds, ~1 min CPU
    python -m experiments.two_moons --what=appendix_b     # ten-panel grid, 10,000 epochs each
    python -m experiments.two_moons --what=all --seeds=3 --epochs_scale=0.1   # quick look

Every configuration trains all its seeds in one compiled, vmapped program
(:func:`gs_jax.train.make_seed_trainer`). Outputs in ``--out_dir`` (default runs/two_moons):
``figure1.{png,pdf}``, ``appendix_b.{png,pdf}``, ``results.json`` (per configuration: train
accuracy, final loss, input-space margins) and ``maps/<config>.npz`` (the seed-averaged logit
map, so figures can be redrawn). A configuration already in results.json with its map is not
retrained unless ``--overwrite`` is given, so an interrupted run resumes where it stopped.

Expected (measured on this repo's CPU machine, 10 seeds; see README): train accuracy 100% for
(b) and (c); median margin of SD (c) several times ERM's (b).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from gs_jax import boundary, models, train
from gs_jax.data import toy


@dataclasses.dataclass(frozen=True)
class MoonsConfig:
  """One training configuration; defaults are the released code's Figure-1 settings."""
  name: str
  title: str
  delta: float = 0.1
  sd_lambda: float = 0.0
  weight_decay: float = 0.0
  optimizer: str = "sgd"
  lr: float = 1e-2
  epochs: int = 1000
  rotation_deg: float = 0.0
  hidden: tuple[int, ...] = (500,)
  dropout_rate: float = 0.0
  batch_norm: bool = False

  def model(self) -> models.MLP:
    return models.MLP(hidden=self.hidden, kernel_init="torch",
                      dropout_rate=self.dropout_rate, batch_norm=self.batch_norm)

  def as_dict(self) -> dict:
    """JSON-compatible form (tuples as lists), as stored in results.json."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  def trainer_key(self):
    """Configurations with equal keys share one compiled trainer."""
    return (self.hidden, self.dropout_rate, self.batch_norm, self.optimizer, self.lr,
            self.weight_decay)


FIGURE1 = (
    MoonsConfig("fig1a", "(a) Δ=−0.1, ERM", delta=-0.1),
    MoonsConfig("fig1b", "(b) Δ=+0.1, ERM", delta=0.1),
    MoonsConfig("fig1c", "(c) Δ=+0.1, SD λ=0.003", delta=0.1, sd_lambda=0.003),
)

_B = dict(delta=0.1, epochs=10_000)
APPENDIX_B = (
    MoonsConfig("b_none", "no regularisation", **_B),
    MoonsConfig("b_wd", "weight decay 0.01", weight_decay=0.01, **_B),
    MoonsConfig("b_long", "10× longer", **{**_B, "epochs": 100_000}),
    MoonsConfig("b_adam_1e-4", "Adam lr 1e-4", optimizer="adam", lr=1e-4, **_B),
    MoonsConfig("b_adam_3e-3", "Adam lr 3e-3", optimizer="adam", lr=3e-3, **_B),
    MoonsConfig("b_rot45", "data rotated 45°", rotation_deg=45.0, **_B),
    MoonsConfig("b_dropout", "dropout p=0.7", dropout_rate=0.7, **_B),
    MoonsConfig("b_bn", "batch norm", batch_norm=True, **_B),
    MoonsConfig("b_5layer", "five layers", hidden=(500,) * 4, **_B),
    MoonsConfig("b_sd", "SD λ=0.003", sd_lambda=0.003, **_B),
)
CONFIGS = {c.name: c for c in FIGURE1 + APPENDIX_B}
GROUPS = {"fig1": FIGURE1, "appendix_b": APPENDIX_B, "all": FIGURE1 + APPENDIX_B}


def train_config(cfg: MoonsConfig, seeds, *, trainer=None, progress=True):
  """Trains ``cfg`` for every seed at once; returns (states, history, data, trainer)."""
  # NumPy arrays: the trainer places each seed's data straight on its device.
  data = toy.two_moons_seeds(seeds, cfg.delta, rotation_deg=cfg.rotation_deg)
  if trainer is None:
    tx = train.make_optimizer(cfg.optimizer, cfg.lr, momentum=0.9,
                              weight_decay=cfg.weight_decay)
    trainer = train.make_seed_trainer(cfg.model(), tx, train.binary_objective)
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  states, history = trainer(keys, data, {"sd_lambda": jnp.float32(cfg.sd_lambda)},
                            cfg.epochs, desc=cfg.name, progress=progress)
  return states, history, data, trainer


@functools.lru_cache(maxsize=None)
def decision_functions(model):
  """``(averaged, single, every)``: ``averaged(states, x) = mean_s f(x; θ_s)`` — the decision
  function whose zero set Figure 1 draws —, ``single(state, x) = f(x; θ)`` and
  ``every(states, x)``, all f(x; θ_s) stacked (S, m). States are arguments and the functions
  are cached per model, so one compilation serves every seed and configuration."""
  def single(state, x):
    return train.apply_model(model, state, x)[0]

  def every(states, x):
    return jax.vmap(single, in_axes=(0, None))(states, x)

  def averaged(states, x):
    return jnp.mean(every(states, x), axis=0)

  return averaged, single, every


@functools.lru_cache(maxsize=None)
def _own_data_logits(model):
  """Jitted ``(states, x) ↦ f(x_s; θ_s)`` per seed, (S, n); cached per model."""
  return jax.jit(jax.vmap(decision_functions(model)[1]))


def evaluate_config(cfg, states, history, data, *, map_resolution=100,
                    margin_resolution=400):
  """Metrics of one trained configuration and its seed-averaged decision map."""
  averaged, single, every = decision_functions(cfg.model())
  pts = np.asarray(data["x"]).reshape(-1, 2)
  ys = np.asarray(data["y"]).reshape(-1)
  # Every seed's logits on the margin grid in one pass; their mean is the averaged map's.
  _, _, z_seeds = boundary.grid_values(every, resolution=margin_resolution, params=states)
  margins = boundary.input_space_margins(averaged, pts, ys, resolution=margin_resolution,
                                         params=states, values=z_seeds.mean(axis=0))
  # NumPy copies: slicing a seed or a step of these compiles nothing.
  host_states, history = jax.device_get((states, history))
  per_seed_min = [
      boundary.input_space_margins(
          single, np.asarray(data["x"][s]), np.asarray(data["y"][s]),
          resolution=margin_resolution, values=z_seeds[s],
          params=jax.tree_util.tree_map(lambda a: a[s], host_states)).min()
      for s in range(len(data["x"]))]
  xs, ys_grid, zmap = boundary.grid_values(averaged, resolution=map_resolution, params=states)
  eval_logits = _own_data_logits(cfg.model())(states, data["x"])
  eval_acc = np.mean((np.asarray(eval_logits) > 0) == (data["y"] > 0), axis=1)
  result = {
      "config": cfg.as_dict(),
      "seeds": len(data["x"]),
      "train_accuracy": float(eval_acc.mean()),
      "train_accuracy_per_seed": eval_acc,
      "final_loss": float(np.mean(history["loss"][:, -1])),
      "final_nll": float(np.mean(history["nll"][:, -1])),
      "margin": {
          "min": float(margins.min()),
          "median": float(np.median(margins)),
          "note": ("signed L2 distance of every seed's training points to the zero set of the "
                   "seed-averaged logits (positive = correct side)"),
          "per_seed_min_mean": float(np.mean(per_seed_min)),
          "per_seed_min": per_seed_min,
      },
  }
  return result, (xs, ys_grid, zmap)


def plot_panels(ax_list, entries, maps, data_by_cfg):
  """Decision maps (seed-averaged logits) with the zero level set and seed 0's data."""
  for ax, (name, res) in zip(ax_list, entries):
    xs, ys, z = maps[name]
    lim = max(np.percentile(np.abs(z), 95), 1e-3)
    ax.contourf(xs, ys, np.clip(z, -lim, lim), levels=21, cmap="RdBu_r", alpha=0.75)
    ax.contour(xs, ys, z, levels=[0.0], colors="k", linewidths=1.5)
    x, y = data_by_cfg[name]
    ax.scatter(x[y > 0, 0], x[y > 0, 1], s=6, c="tab:red", edgecolors="k", linewidths=0.2)
    ax.scatter(x[y < 0, 0], x[y < 0, 1], s=6, c="tab:blue", edgecolors="k", linewidths=0.2)
    m = res["margin"]
    ax.set_title(f"{res['config']['title']} ({res['seeds']} seeds)\nmargin min "
                 f"{m['min']:.3f} · median {m['median']:.3f}", fontsize=8)
    ax.set_xlim(-2, 2)
    ax.set_ylim(-2, 2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def make_figure(plt, configs, results, maps, out_stem, ncols):
  nrows = -(-len(configs) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 3.05 * nrows), squeeze=False)
  data = {c.name: toy.two_moons(0, c.delta, rotation_deg=c.rotation_deg) for c in configs}
  plot_panels(axes.ravel(), [(c.name, results[c.name]) for c in configs], maps, data)
  for ax in axes.ravel()[len(configs):]:
    ax.axis("off")
  fig.tight_layout()
  paths = common.save_figure(fig, out_stem)
  plt.close(fig)
  return paths


def parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m experiments.two_moons",
      description="Two-moons reproduction of Figure 1 (a-c) and the Appendix-B grid.")
  p.add_argument("--what", choices=sorted(GROUPS), default="fig1",
                 help="fig1: Figure 1 a-c (1,000 epochs); appendix_b: the ten-panel grid "
                      "(10,000 epochs, 100,000 for '10x longer'); all: both.")
  p.add_argument("--configs", default="",
                 help=f"comma-separated subset of configurations to run, of: "
                      f"{','.join(CONFIGS)} (default: all of --what).")
  p.add_argument("--seeds", type=int, default=10,
                 help="number of seeds (0..seeds-1), trained together with vmap.")
  p.add_argument("--epochs", type=int, default=None,
                 help="override every configuration's number of full-batch epochs.")
  p.add_argument("--epochs_scale", type=float, default=1.0,
                 help="multiply every configuration's epochs (e.g. 0.1 for a quick look).")
  p.add_argument("--out_dir", default="runs/two_moons", help="output directory.")
  p.add_argument("--map_resolution", type=int, default=100,
                 help="grid size of the plotted decision map over [-2,2]^2 (paper: 100).")
  p.add_argument("--margin_resolution", type=int, default=400,
                 help="grid size used to trace the zero level set before Newton refinement.")
  p.add_argument("--overwrite", action="store_true",
                 help="retrain configurations already present in --out_dir.")
  p.add_argument("--plot_only", action="store_true",
                 help="redraw the figures from results.json and maps/ in --out_dir, without "
                      "training (whatever seeds each configuration was run with).")
  p.add_argument("--no_progress", action="store_true", help="hide progress bars.")
  p.add_argument("--cpu_devices", type=int, default=0,
                 help="CPU devices the seeds are split over (default 0: one per core, so "
                      "seeds train in parallel; 1: JAX's default single device); ignored "
                      "when training runs on a GPU.")
  args = p.parse_args(argv)
  if args.seeds < 1:
    p.error("--seeds must be >= 1")
  if args.cpu_devices < 0:
    p.error("--cpu_devices must be >= 0")
  if args.epochs is not None and args.epochs < 1:
    p.error("--epochs must be >= 1")
  if args.epochs_scale <= 0:
    p.error("--epochs_scale must be > 0")
  return args


def select_configs(args) -> list[MoonsConfig]:
  if args.configs:
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
      raise SystemExit(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    cfgs = [CONFIGS[n] for n in names]
  else:
    cfgs = list(GROUPS[args.what])
  out = []
  for c in cfgs:
    epochs = args.epochs if args.epochs is not None else c.epochs
    out.append(dataclasses.replace(c, epochs=max(1, int(round(epochs * args.epochs_scale)))))
  return out


def run(args) -> dict:
  out_dir = Path(args.out_dir)
  maps_dir = out_dir / "maps"
  results_path = out_dir / "results.json"
  results = common.read_json(results_path, default={})
  configs = select_configs(args)
  seeds = list(range(args.seeds))
  trainers, maps = {}, {}
  for cfg in configs:
    map_path = maps_dir / f"{cfg.name}.npz"
    prev = results.get(cfg.name)
    if args.plot_only and not (prev and map_path.exists()):
      raise SystemExit(f"--plot_only: {cfg.name} has no results in {out_dir}; run it first")
    if args.plot_only or (not args.overwrite and prev and map_path.exists()
                          and prev["config"] == cfg.as_dict() and prev["seeds"] == len(seeds)):
      print(f"{cfg.name}: found in {results_path}, not retrained (--overwrite to redo)")
      with np.load(map_path) as m:
        maps[cfg.name] = (m["xs"], m["ys"], m["z"])
      continue
    t0 = time.perf_counter()
    states, history, data, trainers[cfg.trainer_key()] = train_config(
        cfg, seeds, trainer=trainers.get(cfg.trainer_key()), progress=not args.no_progress)
    jax.block_until_ready(states)
    train_s = time.perf_counter() - t0
    res, grid = evaluate_config(cfg, states, history, data, map_resolution=args.map_resolution,
                                margin_resolution=args.margin_resolution)
    res["train_time_s"] = train_s
    maps[cfg.name] = grid
    maps_dir.mkdir(parents=True, exist_ok=True)
    np.savez(map_path, xs=grid[0], ys=grid[1], z=grid[2])
    results[cfg.name] = res
    common.atomic_write_json(results_path, results)
    m = res["margin"]
    print(f"{cfg.name:12s} acc {res['train_accuracy']:.4f}  loss {res['final_loss']:.4f}  "
          f"margin min {m['min']:+.4f} median {m['median']:.4f}  "
          f"per-seed min {m['per_seed_min_mean']:+.4f}  ({train_s:.1f}s train)")

  plt = common.matplotlib_pyplot()
  names = {c.name for c in configs}
  for stem, group, ncols in (("figure1", FIGURE1, 3), ("appendix_b", APPENDIX_B, 5)):
    chosen = [c for c in configs if c.name in {g.name for g in group}]
    if chosen and names:
      paths = make_figure(plt, chosen, results, maps, out_dir / stem, ncols)
      print("wrote", *paths)
  print("wrote", results_path)
  return results


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  common.use_cpu_devices(args.cpu_devices)
  run(args)


if __name__ == "__main__":
  main()

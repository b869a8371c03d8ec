"""CelebA, Blond_Hair vs the spurious Male: ERM, SD with per-class targets, Group DRO and LfF
(Table 3). Presets, commands and expected results: ``configs/celeba.py``; protocol:
docs/protocols.md §3.5.

Data: :func:`gs_jax.data.celeba.load` (group counts printed per split). Training:
:func:`gs_jax.train.fit_minibatch` with the method's compiled step
(:func:`gs_jax.spurious.make_step`), an orbax checkpoint after every epoch, a progress bar with
the loss and the batch accuracy of every group. After every epoch the evaluated network's
per-group validation and test accuracies are recorded (inside the checkpointed history, so a
resumed run keeps them). Reported: the last epoch, the epoch of best validation *average*
accuracy (the released selection, the headline) and the epoch of best validation worst-group
accuracy; each with per-group accuracies, group sizes and Wilson 95% intervals.

With several devices (``--cpu_devices``, GPUs) or processes (``--coordinator_address``,
``--num_processes``, ``--process_id``; README, "Multi-process runs") the minibatches are split
over every device of every process, each process feeding its own rows; process 0 writes.

Outputs in ``out_dir``: ``results.json`` (:class:`gs_jax.results.RunWriter`), ``metrics.jsonl``
(per epoch) and ``ckpt/``. Started again with the same command, a run continues from its last
finished epoch; ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import celeba as configs
from gs_jax.base import distributed
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.nn import models
from gs_jax.tasks import spurious
from gs_jax import training as train
from gs_jax.data import celeba, cifar, paths

SELECTIONS = {"last": None, "best_val_average": "average", "best_val_worst_group": "worst_group"}


def default_out_dir(cfg) -> str:
  return f"runs/celeba/{cfg.get('preset', 'cpu')}_{cfg.method}_s{cfg.seed}"


def validate(cfg) -> None:
  """Checks that need the library (the config module imports ml_collections only)."""
  if cfg.model not in models.RESNETS:
    raise ValueError(f"--model must be one of {tuple(models.RESNETS)}; got {cfg.model!r}")


def optimizer(cfg):
  name = cfg.optimizer
  if name == "released":  # GS Table_2/table_2.sh: --adam only on the SD commands
    name = "sgd" if cfg.method == "erm" else "adam"
  return name, train.make_optimizer(
    name, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
  )


def select(history, key):
  """The epoch record reported under a selection: the last, or the first epoch with the
  highest validation ``key`` ("average" or "worst_group")."""
  if key is None:
    return history[-1]
  return max(history, key=lambda r: r["val"][key])  # max keeps the first of ties


def run(cfg) -> dict:
  """Trains (or resumes) and evaluates one run; writes and returns ``results.json``."""
  writer = Run(cfg, "celeba", out_dir=cfg.run.out_dir or default_out_dir(cfg))
  t0 = time.perf_counter()
  data = celeba.load(
    cfg.run.data_dir or None,
    size=cfg.image_size,
    limit=cfg.limit,
    stream=cfg.run.stream,
    threads=cfg.run.stream_threads,
    prefetch=cfg.run.stream_prefetch,
  )
  load_s = time.perf_counter() - t0
  tr = data.splits["train"]
  n = len(tr.y)
  if n < cfg.batch_size:
    raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {n} training images")
  opt_name, tx = optimizer(cfg)
  model = models.resnet(cfg.model)
  x0 = jnp.zeros((2, cfg.image_size, cfg.image_size, 3), jnp.float32)
  seed_key = jax.random.PRNGKey(cfg.seed)
  variables = None
  if cfg.pretrained:
    # jitted: an eager init of a ResNet-50 takes minutes on XLA:CPU (only the head is kept)
    fresh = jax.jit(lambda k: model.init(k, x0, train=False))(jax.random.fold_in(seed_key, 3))
    variables = models.load_pretrained(fresh, cfg.pretrained)
  state = spurious.init_state(
    cfg.method, model, tx, jax.random.fold_in(seed_key, 0), x0, n, variables, variables
  )
  data_key = jax.random.fold_in(seed_key, 1)
  counts = celeba.group_counts(tr)
  step = spurious.make_step(
    cfg.method,
    model,
    tx,
    y_train=tr.y,
    train_counts=counts,
    sd_lambdas=tuple(cfg.sd_lambdas),
    sd_gammas=tuple(cfg.sd_gammas),
    dro_step_size=cfg.dro_step_size,
    dro_adjustments=[cfg.dro_adjustment] * 4 if cfg.dro_adjustment > 0 else None,
    gce_q=cfg.gce_q,
    ema_alpha=cfg.ema_alpha,
  )
  evaluator = spurious.make_evaluator(model, celeba.to_float, cfg.eval_batch)
  # Minibatches split over every device of every process (one device: no mesh, as before).
  mesh = train.data_mesh() if jax.device_count() > 1 else None

  def evaluate(s):
    variables = s.net.variables()
    if mesh is not None:  # evaluated whole on one local device by every process: copies
      # replicated over the mesh would repeat the work, and other processes' are unreadable
      variables = jax.device_put(distributed.to_host(variables), jax.local_devices()[0])
    out = {}
    for name in ("val", "test"):
      split = data.splits[name]
      out[name] = spurious.summarize(evaluator(variables, split.x, split.g))
    return out

  def log_epoch(r):
    writer.log(r["step"], **{k: v for k, v in r.items() if k != "step"})
    v, t = r["val"], r["test"]
    print(
      f"epoch {r['epoch']}: val avg {v['average']:.4f} worst {v['worst_group']:.4f} | "
      f"test avg {t['average']:.4f} worst {t['worst_group']:.4f} "
      f"(group {t['worst_group_id']}, n={t['worst_group_n']})",
      file=sys.stderr,
    )

  ckpt = writer.checkpointer(every_seconds=0.0) if cfg.run.checkpoint else None
  start = (ckpt.latest_step() or 0) if ckpt is not None else 0
  if start:
    print(f"resumed from epoch {ckpt.latest_step()} in {writer.out_dir}", file=sys.stderr)
  rows = np.stack([tr.g, np.arange(n, dtype=np.int32)], 1)
  t0 = time.perf_counter()
  state, history = train.fit_minibatch(
    None,
    tx,
    None,
    state,
    {"x": tr.x, "y": rows},
    lambda epoch: cifar.epoch_permutation(data_key, epoch, n, cfg.batch_size),
    cfg.epochs,
    {},
    preprocess=lambda key, xb: celeba.to_float(xb),
    mesh=mesh,
    checkpoint=ckpt,
    train_step=step,
    loop=train.LoopOptions(
      chunk=cfg.chunk,
      progress=cfg.run.progress,
      show=tuple(f"acc_g{k}" for k in range(4)),
      desc=f"celeba {cfg.method} s{cfg.seed}",
    ),
    callbacks=train.Callbacks(
      on_epoch=log_epoch,
      evaluate=evaluate,
    ),
  )
  train_s = time.perf_counter() - t0
  images = (cfg.epochs - start) * (n // cfg.batch_size) * cfg.batch_size
  metrics = {
    name: {"epoch": r["epoch"], "val": r["val"], "test": r["test"]}
    for name, key in SELECTIONS.items()
    for r in [select(history, key)]
  }
  metrics.update(
    headline="best_val_average",
    final_train_loss=history[-1]["loss"],
    steps=history[-1]["step"],
    train_time_this_call_s=train_s,
    load_time_s=load_s,
    # includes compilation and the per-epoch evaluation of val and test
    train_images_per_s=images / train_s if images else None,
  )
  extras = {
    "method": cfg.method,
    "optimizer": opt_name,
    "init": f"pretrained from {cfg.pretrained}" if cfg.pretrained else "from scratch",
    "data": {
      "source": paths.portable(data.source),
      "division": data.division,
      "group_counts": {k: celeba.group_counts(s).tolist() for k, s in data.splits.items()},
      "image_size": cfg.image_size,
      "streamed": bool(cfg.run.stream),
    },
  }
  writer.write(metrics, {}, **extras)
  r = writer.read()
  h = r["metrics"]["best_val_average"]["test"]
  print(
    f"{writer.out_dir}: test (best val avg, epoch {r['metrics']['best_val_average']['epoch']}) "
    f"average {h['average']:.4f}, worst group {h['worst_group']:.4f} "
    f"(n={h['worst_group_n']}, 95% CI {h['worst_group_ci95'][0]:.3f}–"
    f"{h['worst_group_ci95'][1]:.3f})"
  )
  return r


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.celeba", validate=validate)


if __name__ == "__main__":
  main()

"""CIFAR-2/10/100 with ERM or spectral decoupling, PGD robustness and margins (Table 1, Figure 2).

    python -m experiments.cifar --dataset=cifar2 --sd_lambda=0.01 --config=cpu --seed=0 \
        --data_dir=../shared/data/cifar10/cifar10.npz --out_dir=runs/cifar/cifar2_sd_s0

docs/protocols.md §3.3. Objective: mean softmax cross-entropy + ``sd_lambda·mean(ŷ²)`` over batch and
classes (``gs_jax.losses.sd_penalty``; ``--sd_lambda=0`` is ERM), SGD with momentum 0.9,
PyTorch-style weight decay and a warm-up + cosine learning-rate schedule, random crop (pad 4) +
horizontal flip done in JAX inside the jitted step. Minibatches are sharded over all local
devices (1-D mesh). An orbax checkpoint is written after every epoch; ``--resume`` continues a
killed run from the last one and reaches the same result as an uninterrupted run (batches and
augmentations depend only on the seed, the epoch and the step).

Outputs in ``--out_dir``: ``results.json`` (train accuracy, test IID accuracy on the full test
set and on the exact ``test_is_lossless`` subset, test OOD accuracy under PGD L∞ at ε = 0.05
and ε = 5/255 with step ε/10 and 10 steps, per-example L∞ margins, per-epoch history) and
``ckpt/``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from gs_jax import attacks, losses, models, train
from gs_jax.data import cifar

OOD_EPS = {"eps_0.05": 0.05, "eps_5/255": 5.0 / 255.0}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m experiments.cifar", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="cifar2", choices=cifar.DATASETS)
  p.add_argument("--sd_lambda", type=float, default=0.01,
                 help="SD coefficient on mean(logits^2); 0 = ERM (paper: 0.01 CIFAR-2/10, "
                      "0.05 CIFAR-100)")
  p.add_argument("--config", default="cpu", choices=("cpu", "paper"),
                 help="cpu: small 3-stage CNN (16/32/64 ch); paper: the VGG of docs/protocols.md §3.3")
  p.add_argument("--seed", type=int, default=0, help="seeds init, batches, augmentation, PGD")
  p.add_argument("--epochs", type=int, default=None,
                 help="training epochs (default: 6 for cpu, 30 for paper)")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
  p.add_argument("--warmup_epochs", type=float, default=1.0, help="linear LR warm-up length")
  p.add_argument("--momentum", type=float, default=0.9)
  p.add_argument("--weight_decay", type=float, default=5e-4, help="coupled L2 (PyTorch style)")
  p.add_argument("--no_augment", action="store_true", help="disable crop + flip")
  p.add_argument("--data_dir", default=None,
                 help="npz file or folder (Keras-style keys, or an already-binary cifar2.npz); "
                      "default: tensorflow_datasets")
  p.add_argument("--out_dir", default=None, help="run directory (default runs/cifar/<name>)")
  p.add_argument("--resume", action="store_true",
                 help="continue from the last checkpoint in out_dir (a finished run is only "
                      "re-evaluated)")
  p.add_argument("--no_checkpoint", action="store_true",
                 help="skip orbax checkpoints (no --resume); for throwaway accelerator runs")
  p.add_argument("--eval_batch", type=int, default=500, help="batch size of evaluation/PGD")
  p.add_argument("--margin_n", type=int, default=500,
                 help="margins on the first N test images (-1: all)")
  p.add_argument("--margin_eps_max", type=float, default=0.05, help="upper end of bisection")
  p.add_argument("--margin_bisection", type=int, default=6,
                 help="bisection steps (resolution eps_max / 2**steps)")
  p.add_argument("--strong_n", type=int, default=0,
                 help="if > 0: PGD-50 with 5 restarts vs PGD-10 on the first N test images "
                      "(attack-strength check)")
  p.add_argument("--train_limit", type=int, default=0, help="use only the first N train images")
  p.add_argument("--test_limit", type=int, default=0, help="use only the first N test images")
  p.add_argument("--chunk", type=int, default=10, help="train steps per compiled call")
  p.add_argument("--no_progress", action="store_true", help="hide the tqdm bar")
  p.add_argument("--stop_after_steps", type=int, default=0, help=argparse.SUPPRESS)  # kill test
  args = p.parse_args(argv)
  if args.epochs is None:
    args.epochs = 6 if args.config == "cpu" else 30
  if args.sd_lambda < 0 or not math.isfinite(args.sd_lambda):
    p.error(f"--sd_lambda must be a finite number >= 0; got {args.sd_lambda}")
  if args.epochs < 1 or args.batch_size < 1:
    p.error("--epochs and --batch_size must be >= 1")
  if args.out_dir is None:
    method = "erm" if args.sd_lambda == 0 else f"sd{args.sd_lambda:g}"
    args.out_dir = os.path.join("runs", "cifar", f"{args.dataset}_{args.config}_{method}_"
                                f"s{args.seed}")
  return args


class _NoBar:
  def __init__(self, *a, **k):
    pass

  def update(self, *a):
    pass

  def set_postfix(self, **k):
    pass

  def close(self):
    pass


def objective(logits, batch, params, step, hparams):
  """Mean cross-entropy + ``sd_lambda·mean(ŷ²)`` (docs/protocols.md §3.3, §4; eq 17 in training form)."""
  del params, step
  nll = losses.softmax_cross_entropy(logits, batch["y"])
  loss = nll + losses.sd_penalty(logits, hparams["sd_lambda"])
  acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return loss, {"nll": nll, "accuracy": acc}


def _checkpoint_manager(out_dir: str):
  import orbax.checkpoint as ocp  # lazy: slow import
  return ocp, ocp.CheckpointManager(
      os.path.abspath(os.path.join(out_dir, "ckpt")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def evaluate(args, model, state, data: cifar.CifarData, mesh, key) -> dict:
  """Clean accuracies, PGD accuracies (both ε), margins and the optional strong-attack check.

  Evaluation batches of ``args.eval_batch`` images are sharded over ``mesh``; PGD runs on
  [0,1] pixels with the model in eval mode (stored batch-norm statistics).
  """
  pgd = attacks.PGD(lambda v, x: model.apply(v, x, train=False), norm="linf")
  variables = state.variables()
  shard = train.batch_sharded(mesh)
  lossless = data.test_is_lossless

  def run(fn, x, y, key):
    """fn(xb, yb, key) on sharded float batches of eval_batch rows (last one padded)."""
    def on_batch(xb, yb, k):
      xb = jax.device_put(cifar.to_float(jnp.asarray(xb)), shard)
      return fn(xb, jax.device_put(jnp.asarray(yb), shard), k)
    # Small inputs get a small batch (padding 50 images to 500 wastes 10× the work); the
    # batch stays a multiple of the device count so that it shards evenly.
    b = min(args.eval_batch, -(-len(x) // mesh.size) * mesh.size)
    return np.asarray(attacks.batched(on_batch, b)(x, y, key))

  def accs(pred):
    ok = pred == data.y_test
    return {"full": float(ok.mean()), "lossless": float(ok[lossless].mean())}

  clean = lambda xb, yb, k: pgd.predict(variables, xb)
  out = {"train_acc": float((run(clean, data.x_train, data.y_train, key) == data.y_train).mean()),
         "test_iid_acc": accs(run(clean, data.x_test, data.y_test, key)),
         "test_ood_acc": {}}
  for i, (name, eps) in enumerate(OOD_EPS.items()):
    pred = run(lambda xb, yb, k: pgd.robust_predictions(variables, xb, yb, k, eps, steps=10),
               data.x_test, data.y_test, jax.random.fold_in(key, i))
    out["test_ood_acc"][name] = accs(pred)
  m = len(data.x_test) if args.margin_n < 0 else min(args.margin_n, len(data.x_test))
  margins = run(lambda xb, yb, k: pgd.margin(variables, xb, yb, k, eps_max=args.margin_eps_max,
                                             bisection_steps=args.margin_bisection),
                data.x_test[:m], data.y_test[:m], jax.random.fold_in(key, 10))
  out["margins"] = {"norm": "linf", "eps_max": args.margin_eps_max,
                    "bisection_steps": args.margin_bisection, "pgd_steps": 10, "n": m,
                    "correct": [bool(c) for c in (run(clean, data.x_test[:m], data.y_test[:m],
                                                      key) == data.y_test[:m])],
                    "values": [None if not np.isfinite(v) else float(v) for v in margins],
                    "median": float(np.median(margins))}
  if args.strong_n > 0:
    k = min(args.strong_n, len(data.x_test))
    out["strong_attack"] = {"n": k, "weak": "PGD-10, step eps/10, 1 random start",
                            "strong": "PGD-50, step eps/20, 5 random restarts"}
    for i, (name, eps) in enumerate(OOD_EPS.items()):
      p10 = run(lambda xb, yb, kk: pgd.robust_predictions(variables, xb, yb, kk, eps, steps=10),
                data.x_test[:k], data.y_test[:k], jax.random.fold_in(key, 20 + i))
      p50 = run(lambda xb, yb, kk: pgd.robust_predictions(
          variables, xb, yb, kk, eps, steps=50, step_size=eps / 20.0, restarts=5),
                data.x_test[:k], data.y_test[:k], jax.random.fold_in(key, 30 + i))
      a10 = float((p10 == data.y_test[:k]).mean())
      a50 = float((p50 == data.y_test[:k]).mean())
      out["strong_attack"][name] = {"pgd10": a10, "pgd50x5": a50, "drop": a10 - a50}
  return out


def run_experiment(args: argparse.Namespace) -> dict:
  """Trains (or resumes) and evaluates one run; returns and writes ``results.json``."""
  t0 = time.time()
  data = cifar.load(args.dataset, args.data_dir)
  if args.train_limit or args.test_limit:
    import dataclasses
    tl = args.train_limit or len(data.x_train)
    sl = args.test_limit or len(data.x_test)
    data = dataclasses.replace(data, x_train=data.x_train[:tl], y_train=data.y_train[:tl],
                               x_test=data.x_test[:sl], y_test=data.y_test[:sl],
                               test_is_lossless=data.test_is_lossless[:sl])
  os.makedirs(args.out_dir, exist_ok=True)
  mesh = train.data_mesh()
  rep = train.replicated(mesh)
  model = models.cifar_model(args.config, data.num_classes)
  n = len(data.x_train)
  steps_per_epoch = n // args.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size {args.batch_size} exceeds the {n} training images")
  total = steps_per_epoch * args.epochs
  warmup = max(1, int(args.warmup_epochs * steps_per_epoch))
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, max(total, warmup + 1), 0.0)
  tx = train.make_optimizer("sgd", schedule, momentum=args.momentum,
                            weight_decay=args.weight_decay)
  seed_key = jax.random.PRNGKey(args.seed)
  state = train.init_state(model, tx, jax.random.fold_in(seed_key, 0),
                           jnp.zeros((2, 32, 32, 3), jnp.float32))
  state = jax.device_put(state, rep)

  def preprocess(key, xb):
    xb = xb if args.no_augment else cifar.augment(key, xb)
    return cifar.to_float(xb)

  run_steps = train.make_epoch_runner(train.make_train_step(model, tx, objective),
                                      preprocess=preprocess, mesh=mesh)
  hparams = {"sd_lambda": jnp.float32(args.sd_lambda)}
  x_all, y_all = jax.device_put(data.x_train, rep), jax.device_put(data.y_train, rep)
  data_key = jax.random.fold_in(seed_key, 1)

  ocp, mgr = _checkpoint_manager(args.out_dir) if not args.no_checkpoint else (None, None)
  history, start_epoch = [], 0
  latest = mgr.latest_step() if mgr is not None else None
  if latest is not None and not args.resume:
    raise ValueError(f"{args.out_dir} already holds checkpoints (epoch {latest}); pass --resume "
                     f"to continue that run or choose another --out_dir")
  if latest is not None:
    abstract = jax.device_get(state)
    restored = mgr.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    state = jax.device_put(restored["state"], rep)
    history, start_epoch = restored["meta"]["history"], latest
    print(f"resumed from epoch {latest} in {args.out_dir}", file=sys.stderr)

  try:
    from tqdm.auto import tqdm
  except ImportError:  # bare accelerator images: run without a bar
    args.no_progress = True
    tqdm = _NoBar
  bar = tqdm(total=total, initial=start_epoch * steps_per_epoch, disable=args.no_progress,
             desc=f"{args.dataset} {'ERM' if args.sd_lambda == 0 else 'SD'} s{args.seed}")
  t_train = time.time()
  for epoch in range(start_epoch, args.epochs):
    idx = cifar.epoch_permutation(data_key, epoch, n, args.batch_size)
    sums = {"loss": 0.0, "nll": 0.0, "accuracy": 0.0}
    for start in range(0, steps_per_epoch, args.chunk):
      state, metrics = run_steps(state, x_all, y_all, idx[start:start + args.chunk], hparams)
      k = min(args.chunk, steps_per_epoch - start)
      for name in sums:
        sums[name] += float(jnp.sum(metrics[name]))
      bar.update(k)
      bar.set_postfix(epoch=epoch + 1, loss=f"{float(metrics['loss'][-1]):.4f}",
                      acc=f"{float(jnp.mean(metrics['accuracy'])):.3f}")
      if args.stop_after_steps and int(state.step) >= args.stop_after_steps:
        os._exit(3)  # simulated kill (tests): no cleanup, no checkpoint of this epoch
    history.append({"epoch": epoch + 1, "lr_end": float(schedule(int(state.step))),
                    **{k: v / steps_per_epoch for k, v in sums.items()}})
    if mgr is None:
      continue
    mgr.save(epoch + 1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave({"history": history})))
    mgr.wait_until_finished()
  bar.close()
  train_seconds = time.time() - t_train

  t_eval = time.time()
  metrics = evaluate(args, model, state, data, mesh, jax.random.fold_in(seed_key, 2))
  results = {
      "config": {k: v for k, v in vars(args).items() if k != "stop_after_steps"},
      "data": {"source": data.source, "n_train": n, "n_test": len(data.x_test),
               "n_test_lossless": int(data.test_is_lossless.sum())},
      "method": "ERM" if args.sd_lambda == 0 else "SD",
      "devices": [str(d) for d in jax.local_devices()],
      "steps": int(state.step),
      "history": history,
      **metrics,
      "seconds": {"train_this_call": train_seconds, "eval": time.time() - t_eval,
                  "total_this_call": time.time() - t0},
  }
  common.atomic_write_json(os.path.join(args.out_dir, "results.json"), results)
  ood = results["test_ood_acc"]
  print(f"{args.out_dir}: train {results['train_acc']:.4f} | test IID "
        f"{results['test_iid_acc']['full']:.4f} (lossless {results['test_iid_acc']['lossless']:.4f})"
        f" | OOD eps=0.05 {ood['eps_0.05']['full']:.4f} eps=5/255 {ood['eps_5/255']['full']:.4f}"
        f" | median margin {results['margins']['median']:.4f}")
  return results


def main(argv=None):
  run_experiment(parse_args(argv))


if __name__ == "__main__":
  main()

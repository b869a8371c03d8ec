"""CIFAR-2/10/100 with ERM or SD: PGD robustness and margins (Table 1, Figure 2). Presets,
commands and expected results: ``configs/cifar.py``; protocol: docs/protocols.md §3.3.

Training (:func:`gs_jax.train.fit_minibatch`): mean cross-entropy + ``sd_lambda·mean(ŷ²)``
(:func:`gs_jax.train.softmax_objective`), SGD with momentum and coupled weight decay, linear
warm-up + cosine learning rate, crop + flip inside the jitted step, minibatches sharded over a
1-D device mesh, an orbax checkpoint after every epoch. Evaluation
(:func:`gs_jax.attacks.evaluate`, on [0,1] pixels, model in eval mode): train accuracy, test
IID accuracy (full test set and its byte-exact ``test_is_lossless`` subset), OOD accuracy under
PGD L∞ at ε = 0.05 and 5/255 (10 steps of ε/10), per-example L∞ margins, and optionally PGD-50
with 5 restarts as an attack-strength check.

Outputs in ``out_dir``: ``results.json`` (:class:`gs_jax.results.RunWriter`), ``metrics.jsonl``
(one line per epoch) and ``ckpt/``. Started again with the same command, a run continues from
its last finished epoch (a finished run is only re-evaluated); ``--overwrite`` starts afresh.
"""
from __future__ import annotations

import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import cifar as configs
from gs_jax import attacks, checkpoint, cli, models, results, train
from gs_jax.data import cifar

OOD_EPS = {"eps_0.05": 0.05, "eps_5/255": 5.0 / 255.0}
# What determines the trained network: a checkpoint written under other values is refused.
TRAINING_FIELDS = ("dataset", "model", "sd_lambda", "seed", "epochs", "batch_size", "lr",
                   "warmup_epochs", "momentum", "weight_decay", "augment", "train_limit")


def default_out_dir(cfg) -> str:
  method = "erm" if cfg.sd_lambda == 0 else f"sd{cfg.sd_lambda:g}"
  return f"runs/cifar/{cfg.dataset}_{cfg.model}_{method}_s{cfg.seed}"


def run(cfg) -> dict:
  """Trains (or resumes) and evaluates one run; writes and returns ``results.json``."""
  cfg = cli.overrides(cfg, out_dir=cfg.out_dir or default_out_dir(cfg))
  writer = results.RunWriter(cfg.out_dir, "cifar", cfg)
  if cfg.overwrite:
    shutil.rmtree(writer.out_dir / "ckpt", ignore_errors=True)
    writer.log_path.unlink(missing_ok=True)
  data = cifar.head(cifar.load(cfg.dataset, cfg.data_dir or None), cfg.train_limit,
                    cfg.test_limit)
  n = len(data.x_train)
  if n < cfg.batch_size:
    raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {n} training images")
  steps_per_epoch = n // cfg.batch_size
  total, warmup = steps_per_epoch * cfg.epochs, max(1, int(cfg.warmup_epochs * steps_per_epoch))
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1), 0.0)
  tx = train.make_optimizer("sgd", schedule, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay)
  model = models.cifar_model(cfg.model, data.num_classes)
  seed_key = jax.random.PRNGKey(cfg.seed)
  state = train.init_state(model, tx, jax.random.fold_in(seed_key, 0),
                           jnp.zeros((2, 32, 32, 3), jnp.float32))
  data_key = jax.random.fold_in(seed_key, 1)

  def preprocess(key, xb):
    return cifar.to_float(cifar.augment(key, xb) if cfg.augment else xb)

  def log_epoch(r):
    writer.log(r["step"], lr=float(schedule(r["step"])), **{k: v for k, v in r.items()
                                                            if k != "step"})

  ckpt = checkpoint.Checkpointer(writer.out_dir / "ckpt", every_seconds=0.0) \
      if cfg.checkpoint else None
  if ckpt is not None and ckpt.latest_step():
    print(f"resumed from epoch {ckpt.latest_step()} in {cfg.out_dir}", file=sys.stderr)
  mesh = train.data_mesh()
  t0 = time.perf_counter()
  state, history = train.fit_minibatch(
      model, tx, train.softmax_objective, state, {"x": data.x_train, "y": data.y_train},
      lambda epoch: cifar.epoch_permutation(data_key, epoch, n, cfg.batch_size), cfg.epochs,
      {"sd_lambda": jnp.float32(cfg.sd_lambda)}, preprocess=preprocess, mesh=mesh,
      checkpoint=ckpt, fingerprint={k: cfg[k] for k in TRAINING_FIELDS}, chunk=cfg.chunk,
      progress=cfg.progress, on_epoch=log_epoch,
      desc=f"{cfg.dataset} {'ERM' if cfg.sd_lambda == 0 else 'SD'} s{cfg.seed}")
  train_s, t0 = time.perf_counter() - t0, time.perf_counter()

  shard = train.batch_sharded(mesh)

  def prepare(xb, yb):
    return (jax.device_put(cifar.to_float(jnp.asarray(xb)), shard),
            jax.device_put(jnp.asarray(yb), shard))

  def logits_fn(variables, x):
    return model.apply(variables, x, train=False)

  kw = dict(batch_size=cfg.eval_batch, multiple=mesh.size, prepare=prepare)
  key = jax.random.fold_in(seed_key, 2)
  train_pred = attacks.evaluate(logits_fn, state.variables(), data.x_train, data.y_train, key,
                                **kw)["clean"]
  ev = attacks.evaluate(logits_fn, state.variables(), data.x_test, data.y_test, key, eps=OOD_EPS,
                        margin_n=cfg.margin_n, margin_eps_max=cfg.margin_eps_max,
                        margin_bisection=cfg.margin_bisection, strong_n=cfg.strong_n, **kw)
  metrics, per_seed, extras = summarise(cfg, data, train_pred, ev, history, train_s,
                                       time.perf_counter() - t0)
  writer.write(metrics, per_seed, **extras)
  r = results.read_json(writer.results_path)
  m = r["metrics"]
  print(f"{cfg.out_dir}: train {m['train_acc']:.4f} | test IID {m['test_iid_acc']['full']:.4f} "
        f"(lossless {m['test_iid_acc']['lossless']:.4f}) | OOD "
        + " ".join(f"{k} {v['full']:.4f}" for k, v in m["test_ood_acc"].items())
        + f" | median margin {m.get('margin_median', float('nan')):.4f}")
  return r


def summarise(cfg, data, train_pred, ev, history, train_s, eval_s):
  """``(metrics, per_seed, extras)`` of results.json from the predictions of
  :func:`gs_jax.attacks.evaluate` (accuracies on the full test set and its lossless subset)."""
  ok = ev["clean"] == data.y_test
  lossless = data.test_is_lossless

  def accs(pred):
    right = pred == data.y_test
    return {"full": float(right.mean()), "lossless": float(right[lossless].mean())}

  metrics = {"train_acc": float((train_pred == data.y_train).mean()),
             "test_iid_acc": accs(ev["clean"]),
             "test_ood_acc": {name: accs(p) for name, p in ev["pgd"].items()},
             "final_train_loss": history[-1]["loss"], "steps": history[-1]["step"],
             "train_time_this_call_s": train_s, "eval_time_s": eval_s}
  extras = {"method": "ERM" if cfg.sd_lambda == 0 else "SD",
            "data": {"source": data.source, "n_train": len(data.x_train),
                     "n_test": len(data.x_test), "n_test_lossless": int(lossless.sum())}}
  if "margins" in ev:
    v = ev["margins"]
    metrics["margin_median"] = float(np.median(v))
    extras["margins"] = {"norm": "linf", "eps_max": cfg.margin_eps_max,
                         "bisection_steps": cfg.margin_bisection, "pgd_steps": 10, "n": len(v),
                         "correct": ok[:len(v)].tolist(),
                         "values": [float(x) if np.isfinite(x) else None for x in v]}
  if "strong" in ev:
    k = min(cfg.strong_n, len(data.x_test))
    s = {"n": k, "weak": "PGD-10, step eps/10, 1 random start",
         "strong": "PGD-50, step eps/20, 5 random restarts"}
    for name, p in ev["strong"].items():
      a10, a50 = (float((p[w] == data.y_test[:k]).mean()) for w in ("weak", "strong"))
      s[name] = {"pgd10": a10, "pgd50x5": a50, "drop": a10 - a50}
    metrics["strong_attack"] = s
  return metrics, {}, extras


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.cifar")


if __name__ == "__main__":
  main()

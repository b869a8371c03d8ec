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

import sys
import time

import jax
import jax.numpy as jnp
import optax

from configs import cifar as configs
from gs_jax import training as train
from gs_jax.base import batching
from gs_jax.data import cifar, paths
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.nn import attacks, models
from gs_jax.tasks import cifar_eval


def method_name(cfg) -> str:
  if cfg.sd_coef:
    return f"sdc{cfg.sd_coef:g}"
  return "erm" if cfg.sd_lambda == 0 else f"sd{cfg.sd_lambda:g}"


def method_label(cfg) -> str:
  """ "ERM" or "SD": the ``method`` field of results.json."""
  return "ERM" if cfg.sd_lambda == 0 and cfg.sd_coef == 0 else "SD"


def default_out_dir(cfg) -> str:
  pair = (
    ""
    if cfg.classes == "cat,dog" or cfg.dataset != "cifar2"
    else "_" + cfg.classes.replace(",", "-")
  )
  return f"runs/cifar/{cfg.dataset}{pair}_{cfg.model}_{method_name(cfg)}_s{cfg.seed}"


def validate(cfg) -> None:
  """Checks that need the library (the config module imports ml_collections only)."""
  if cfg.dataset not in cifar.DATASETS:
    raise ValueError(f"--dataset must be one of {cifar.DATASETS}; got {cfg.dataset!r}")
  cifar.class_ids(cfg.classes)  # raises on unknown names


def run(cfg) -> dict:
  """Trains (or resumes) and evaluates one run; writes and returns ``results.json``."""
  r = Run(cfg, "cifar", out_dir=cfg.run.out_dir or default_out_dir(cfg))
  ev_cfg = cfg.eval
  data = cifar.head(
    cifar.load(cfg.dataset, cfg.run.data_dir or None, cfg.classes),
    cfg.train_limit,
    ev_cfg.test_limit,
  )
  n = len(data.x_train)
  if n < cfg.batch_size:
    raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {n} training images")
  steps_per_epoch = n // cfg.batch_size
  total, warmup = steps_per_epoch * cfg.epochs, max(1, int(cfg.warmup_epochs * steps_per_epoch))
  schedule = (
    optax.constant_schedule(cfg.lr)
    if cfg.schedule == "constant"
    else optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1), 0.0)
  )
  tx = train.make_optimizer("sgd", schedule, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
  model = models.cifar_model(cfg.model, data.num_classes)
  seed_key = jax.random.PRNGKey(cfg.seed)
  state = train.init_state(
    model, tx, jax.random.fold_in(seed_key, 0), jnp.zeros((2, 32, 32, 3), jnp.float32)
  )
  data_key = jax.random.fold_in(seed_key, 1)

  def preprocess(key, xb):
    return cifar.to_float(cifar.augment(key, xb) if cfg.augment else xb)

  def log_epoch(rec):
    r.log(
      rec["step"], lr=float(schedule(rec["step"])), **{k: v for k, v in rec.items() if k != "step"}
    )

  ckpt = r.checkpointer(every_seconds=0.0) if cfg.run.checkpoint else None
  if ckpt is not None and ckpt.latest_step():
    print(f"resumed from epoch {ckpt.latest_step()} in {r.out_dir}", file=sys.stderr)
  mesh = train.data_mesh()
  t0 = time.perf_counter()
  hparams = {"sd_lambda": jnp.float32(cfg.sd_lambda)}
  if cfg.sd_coef:
    hparams["sd_coef"] = jnp.float32(cfg.sd_coef)
  released = cfg.model == "released"
  try:
    state, history = train.fit_minibatch(
      model,
      tx,
      train.softmax_objective,
      state,
      {"x": data.x_train, "y": data.y_train},
      lambda epoch: cifar.epoch_permutation(data_key, epoch, n, cfg.batch_size),
      cfg.epochs,
      hparams,
      preprocess=preprocess,
      mesh=mesh,
      checkpoint=ckpt,
      loop=train.LoopOptions(
        chunk=cfg.chunk,
        progress=cfg.run.progress,
        scan=released,
        desc=f"{cfg.dataset} {method_name(cfg)} s{cfg.seed}",
      ),
      callbacks=train.Callbacks(
        on_epoch=log_epoch,
      ),
    )
  except train.Diverged as e:  # a result, not a crash: recorded, nothing evaluated
    log_epoch(e.history[-1])
    r.write(
      {"diverged_at_epoch": e.epoch},
      {},
      history=e.history,
      method=method_label(cfg),
      train_time_s=time.perf_counter() - t0,
    )
    print(f"{r.out_dir}: {e} — results.json records it; no evaluation", file=sys.stderr)
    return r.read()
  train_s, t0 = time.perf_counter() - t0, time.perf_counter()

  if jax.process_count() > 1:
    # Evaluation (cheap next to training) runs whole on every process's own devices; the
    # results are the same everywhere and process 0 writes them.
    from gs_jax.base import distributed

    state, mesh = distributed.to_host(state), train.data_mesh(jax.local_devices())
  shard = train.batch_sharded(mesh)

  def prepare(xb, yb):
    return (
      jax.device_put(cifar.to_float(jnp.asarray(xb)), shard),
      jax.device_put(jnp.asarray(yb), shard),
    )

  # The released network's attacks run one image per compiled loop (return_early), where its
  # patch convolutions are fast (its first convolution and pool as one space-to-depth product,
  # faster for input gradients); plain predictions take it in chunks whose patches stay in
  # cache. The last-iterate rule runs whole batches, where XLA's convolutions (same
  # parameters) are faster.
  early = released and ev_cfg.get("return_early", True)
  eval_model = model
  if released:
    eval_model = models.NarLeNet(data.num_classes, patches=early, s2d_first=early)

  def logits_fn(variables, x):
    def apply(xc):
      return eval_model.apply(variables, xc, train=False)

    return batching.map_chunks(apply, x, cifar_eval.PATCH_CHUNK) if early else apply(x)

  batch = dict(batch_size=ev_cfg.eval_batch, multiple=mesh.size, prepare=prepare)
  key = jax.random.fold_in(seed_key, 2)
  train_pred = attacks.evaluate(
    logits_fn, state.variables(), data.x_train, data.y_train, key, **batch
  )["clean"]
  base = {
    "train_acc": float((train_pred == data.y_train).mean()),
    "final_train_loss": history[-1]["loss"],
    "steps": history[-1]["step"],
    "train_time_this_call_s": train_s,
  }
  extras = {
    "method": method_label(cfg),
    "data": {
      "source": paths.portable(data.source),
      "n_train": n,
      "n_test": len(data.x_test),
      "n_test_lossless": int(data.test_is_lossless.sum()),
    },
  }
  if released:
    metrics, more = cifar_eval.released(
      logits_fn,
      state.variables(),
      data,
      key,
      margin_n=ev_cfg.margin_n,
      strong_n=ev_cfg.strong_n,
      margin_eps_max=ev_cfg.margin_eps_max,
      margin_bisection=ev_cfg.margin_bisection,
      batch=batch,
      return_early=early,
    )
    extras["data"]["classes"] = cfg.classes
    extras["sd_lambda_equivalent"] = cfg.sd_lambda + cfg.sd_coef * cfg.batch_size * data.num_classes
  else:
    ev = attacks.evaluate(
      logits_fn,
      state.variables(),
      data.x_test,
      data.y_test,
      key,
      eps=cifar_eval.OOD_EPS,
      margin_n=ev_cfg.margin_n,
      margin_eps_max=ev_cfg.margin_eps_max,
      margin_bisection=ev_cfg.margin_bisection,
      strong_n=ev_cfg.strong_n,
      **batch,
    )
    metrics, more = cifar_eval.summarise(
      data,
      train_pred,
      ev,
      history,
      margin_eps_max=ev_cfg.margin_eps_max,
      margin_bisection=ev_cfg.margin_bisection,
      strong_n=ev_cfg.strong_n,
    )
    metrics["eval_time_s"] = time.perf_counter() - t0
  r.write({**base, **metrics}, {}, **extras, **more)
  res = r.read()
  _print_summary(r.out_dir, res["metrics"])
  return res


def _print_summary(out_dir, m) -> None:
  line = f"{out_dir}: train {m['train_acc']:.4f} | test IID {m['test_iid_acc']['full']:.4f}"
  if "margins_pm1" in m:  # released protocol
    line += "".join(
      f" | {a}: OOD(0.05 pm1) {m['test_ood_acc'][a]['eps_0.05_pm1']['full']:.4f}"
      f" median margin (pm1) {m['margins_pm1'][a]['q50']:.4f}"
      for a in m["margins_pm1"]
    )
  else:
    line += (
      f" (lossless {m['test_iid_acc']['lossless']:.4f}) | OOD "
      + " ".join(f"{k} {v['full']:.4f}" for k, v in m["test_ood_acc"].items())
      + f" | median margin {m.get('margin_median', float('nan')):.4f}"
    )
  print(line)


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.cifar", validate=validate)


if __name__ == "__main__":
  main()

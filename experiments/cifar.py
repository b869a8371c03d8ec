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
from gs_jax.nn import attacks, models
from gs_jax.base import batching, distributed
from gs_jax.experiment import checkpoint, cli, results
from gs_jax import training as train
from gs_jax.data import cifar

OOD_EPS = {"eps_0.05": 0.05, "eps_5/255": 5.0 / 255.0}
# Released protocol (pixel units): ε = 0.05 in the released [−1,1] units is 0.025 pixels.
RELEASED_OOD_EPS = {"eps_0.05_pm1": 0.025, **OOD_EPS}
# The two attacks of the released protocol (gs_jax.attacks.pgd arguments).
RELEASED_ATTACKS = {
    "released": {"steps": 40, "step_frac": 1 / 30, "rand_init": False, "loss": "xent"},
    "strong": {"steps": 100, "step_frac": 1 / 20, "restarts": 4, "rand_init": True,
               "clean_start": True, "loss": "gap"}}
# What determines the trained network: a checkpoint written under other values is refused.
TRAINING_FIELDS = ("dataset", "model", "sd_lambda", "seed", "epochs", "batch_size", "lr",
                   "warmup_epochs", "momentum", "weight_decay", "augment", "train_limit")
# Also in the fingerprint, except where they keep the defaults earlier checkpoints were made with.
NEW_TRAINING_FIELDS = {"classes": "cat,dog", "sd_coef": 0.0, "schedule": "cosine"}


def method_name(cfg) -> str:
  if cfg.sd_coef:
    return f"sdc{cfg.sd_coef:g}"
  return "erm" if cfg.sd_lambda == 0 else f"sd{cfg.sd_lambda:g}"


def method_label(cfg) -> str:
  """"ERM" or "SD": the ``method`` field of results.json."""
  return "ERM" if cfg.sd_lambda == 0 and cfg.sd_coef == 0 else "SD"


def default_out_dir(cfg) -> str:
  pair = "" if cfg.classes == "cat,dog" or cfg.dataset != "cifar2" else \
      "_" + cfg.classes.replace(",", "-")
  return f"runs/cifar/{cfg.dataset}{pair}_{cfg.model}_{method_name(cfg)}_s{cfg.seed}"


def fingerprint(cfg) -> dict:
  fp = {k: cfg[k] for k in TRAINING_FIELDS}
  fp.update({k: cfg[k] for k, default in NEW_TRAINING_FIELDS.items() if cfg[k] != default})
  return fp


def run(cfg) -> dict:
  """Trains (or resumes) and evaluates one run; writes and returns ``results.json``."""
  cfg = cli.overrides(cfg, out_dir=cfg.out_dir or default_out_dir(cfg))
  writer = results.RunWriter(cfg.out_dir, "cifar", cfg)
  if cfg.overwrite and distributed.is_main():
    shutil.rmtree(writer.out_dir / "ckpt", ignore_errors=True)
    writer.log_path.unlink(missing_ok=True)
  distributed.barrier("cifar: out_dir ready")   # after process 0 removed old checkpoints
  data = cifar.head(cifar.load(cfg.dataset, cfg.data_dir or None, cfg.classes),
                    cfg.train_limit, cfg.test_limit)
  n = len(data.x_train)
  if n < cfg.batch_size:
    raise ValueError(f"--batch_size={cfg.batch_size} exceeds the {n} training images")
  steps_per_epoch = n // cfg.batch_size
  total, warmup = steps_per_epoch * cfg.epochs, max(1, int(cfg.warmup_epochs * steps_per_epoch))
  schedule = optax.constant_schedule(cfg.lr) if cfg.schedule == "constant" else \
      optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1), 0.0)
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
  hparams = {"sd_lambda": jnp.float32(cfg.sd_lambda)}
  if cfg.sd_coef:
    hparams["sd_coef"] = jnp.float32(cfg.sd_coef)
  released = cfg.model == "released"
  try:
    state, history = train.fit_minibatch(
        model, tx, train.softmax_objective, state, {"x": data.x_train, "y": data.y_train},
        lambda epoch: cifar.epoch_permutation(data_key, epoch, n, cfg.batch_size), cfg.epochs,
        hparams, preprocess=preprocess, mesh=mesh, checkpoint=ckpt,
        fingerprint=fingerprint(cfg), chunk=cfg.chunk, progress=cfg.progress,
        on_epoch=log_epoch, scan=released, desc=f"{cfg.dataset} {method_name(cfg)} s{cfg.seed}")
  except train.Diverged as e:   # a result, not a crash: recorded, nothing evaluated
    log_epoch(e.history[-1])
    writer.write({"diverged_at_epoch": e.epoch}, {}, history=e.history,
                 method=method_label(cfg),
                 train_time_s=time.perf_counter() - t0)
    print(f"{cfg.out_dir}: {e} — results.json records it; no evaluation", file=sys.stderr)
    return results.read_json(writer.results_path)
  train_s, t0 = time.perf_counter() - t0, time.perf_counter()

  if jax.process_count() > 1:
    # Evaluation (cheap next to training) runs whole on every process's own devices; the
    # results are the same everywhere and process 0 writes them.
    state, mesh = distributed.to_host(state), train.data_mesh(jax.local_devices())
  shard = train.batch_sharded(mesh)

  def prepare(xb, yb):
    return (jax.device_put(cifar.to_float(jnp.asarray(xb)), shard),
            jax.device_put(jnp.asarray(yb), shard))

  # The released network's patch convolutions exist for the scanned batch-1 training; the
  # same parameters evaluate ~2–3× faster through XLA convolutions on large batches.
  eval_model = models.NarLeNet(data.num_classes, patches=False) if released else model

  def logits_fn(variables, x):
    return eval_model.apply(variables, x, train=False)

  kw = dict(batch_size=cfg.eval_batch, multiple=mesh.size, prepare=prepare)
  key = jax.random.fold_in(seed_key, 2)
  train_pred = attacks.evaluate(logits_fn, state.variables(), data.x_train, data.y_train, key,
                                **kw)["clean"]
  if released:
    return finish_released(cfg, writer, data, logits_fn, state.variables(), key, kw, train_pred,
                           history, train_s, t0)
  ev = attacks.evaluate(logits_fn, state.variables(), data.x_test, data.y_test, key, eps=OOD_EPS,
                        margin_n=cfg.margin_n, margin_eps_max=cfg.margin_eps_max,
                        margin_bisection=cfg.margin_bisection, strong_n=cfg.strong_n, **kw)
  metrics, per_seed, extras = summarise(cfg, data, train_pred, ev, history, train_s,
                                       time.perf_counter() - t0)
  writer.write(metrics, per_seed, **extras)
  distributed.barrier("cifar: results written")
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
  extras = {"method": method_label(cfg),
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


def finish_released(cfg, writer, data, logits_fn, params, key, kw, train_pred, history, train_s,
                    t0):
  """Evaluation of the released protocol (docs/protocols.md §3.3): for each attack of
  :data:`RELEASED_ATTACKS`, per-example margins (bisection on ε ∈ [0, margin_eps_max] pixels)
  and accuracy under PGD at :data:`RELEASED_OOD_EPS`; the strong attack on the first
  ``strong_n`` test images. Writes and returns results.json."""
  lossless = data.test_is_lossless
  y = data.y_test

  def run(fn, n, k):
    return np.asarray(batching.batched(fn, kw["batch_size"], multiple=kw["multiple"],
                                       prepare=kw["prepare"])(data.x_test[:n], y[:n], k))

  clean = run(lambda xb, yb, k: attacks.predict(logits_fn, params, xb), len(y), key)

  def accs(pred):
    right = pred == y[:len(pred)]
    return {"full": float(right.mean()), "lossless": float(right[lossless[:len(pred)]].mean())}

  metrics = {"train_acc": float((train_pred == data.y_train).mean()),
             "test_iid_acc": accs(clean), "test_ood_acc": {}, "margins_pm1": {},
             "final_train_loss": history[-1]["loss"], "steps": history[-1]["step"],
             "train_time_this_call_s": train_s}
  extras = {"method": method_label(cfg),
            "sd_lambda_equivalent": cfg.sd_lambda + cfg.sd_coef * cfg.batch_size
            * data.num_classes,
            "data": {"source": data.source, "classes": cfg.classes, "n_train": len(data.x_train),
                     "n_test": len(y), "n_test_lossless": int(lossless.sum())},
            "attacks": RELEASED_ATTACKS, "margins": {}}
  for a, (name, attack) in enumerate(RELEASED_ATTACKS.items()):
    n = len(y) if name == "released" and cfg.margin_n < 0 else \
        (cfg.margin_n if name == "released" else cfg.strong_n)
    n = len(y) if n < 0 else min(n, len(y))
    if n == 0:
      continue
    metrics["test_ood_acc"][name] = {
        e_name: accs(run(lambda xb, yb, k, e=e: attacks.robust_predictions(
            logits_fn, params, xb, yb, k, e, **attack), n, jax.random.fold_in(key, 10 * a + i)))
        for i, (e_name, e) in enumerate(RELEASED_OOD_EPS.items())}
    m = run(lambda xb, yb, k: attacks.margin(
        logits_fn, params, xb, yb, k, eps_max=cfg.margin_eps_max,
        bisection_steps=cfg.margin_bisection, **attack), n, jax.random.fold_in(key, 10 * a + 9))
    pm1 = 2.0 * m   # [−1,1] units: twice pixel units
    ok = clean[:n] == y[:n]
    metrics["margins_pm1"][name] = {
        "n": n, **{f"q{q}": float(np.quantile(pm1, q / 100, method="inverted_cdf"))
                   for q in (25, 50, 75, 90)},   # inf margins: no interpolation (NaN)
        "median_correct": float(np.median(pm1[ok])) if ok.any() else None}
    extras["margins"][name] = {
        "norm": "linf", "eps_max_pixel": cfg.margin_eps_max,
        "bisection_steps": cfg.margin_bisection, "n": n, "correct": ok.tolist(),
        "values_pm1": [float(v) if np.isfinite(v) else None for v in pm1],
        "values_pixel": [float(v) if np.isfinite(v) else None for v in m]}
  metrics["eval_time_s"] = time.perf_counter() - t0
  writer.write(metrics, {}, **extras)
  r = results.read_json(writer.results_path)
  mm = r["metrics"]
  print(f"{cfg.out_dir}: train {mm['train_acc']:.4f} | test IID {mm['test_iid_acc']['full']:.4f}"
        + "".join(f" | {a}: OOD(0.05 pm1) {mm['test_ood_acc'][a]['eps_0.05_pm1']['full']:.4f} "
                  f"median margin (pm1) {mm['margins_pm1'][a]['q50']:.4f}"
                  for a in mm["margins_pm1"]))
  return r


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.cifar")


if __name__ == "__main__":
  main()

"""MNIST–CIFAR dominoes at one MNIST-half contrast ``a``: ERM, ERM + L2, SD. Presets, commands
and expected results: ``configs/dominoes.py``; protocol: docs/protocols.md §3.8.

For each seed: the dominoes of that seed (:func:`gs_jax.data.dominoes.build`), θ0 of
:class:`gs_jax.models.NarLeNet` (key as ``experiments.cifar``), the top ``k`` features of
``YΦ0`` at θ0 on the first ``feature_n`` training pairs (:func:`gs_jax.ntk.top_features`) and
the share of each feature's input attribution in the MNIST half
(:func:`gs_jax.ntk.feature_region_shares`; cached in ``features/s<seed>.npz``); then every
method trained from θ0 (:func:`gs_jax.train.fit_minibatch`) and evaluated: accuracy on the
test set intact, with the MNIST half randomised (CIFAR-only) and with the CIFAR half randomised
(MNIST-only), and the final responses ``z = U_kᵀ Y (ŷ_T − ŷ_0)`` of the k features, summed
over the MNIST-half features (share ≥ 1/2) and the CIFAR-half ones.

With ``--sd_sweep`` the run trains SD at each listed ``sd_lambda`` instead and reports the
held-out accuracies and the chosen value (``metrics.sd_choice``).

Outputs in ``out_dir``: ``results.json`` (provenance, per method and seed, summaries),
``metrics.jsonl`` (one line per epoch), ``features/``, ``ckpt/``. Started again with the same
command, a run reuses cached features and continues each method from its last epoch
checkpoint; ``--overwrite`` starts afresh.
"""
from __future__ import annotations

import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import dominoes as configs
from gs_jax.base import batching
from gs_jax.experiment import checkpoint, cli, results
from gs_jax.nn import models
from gs_jax.theory import ntk
from gs_jax import training as train
from gs_jax.data import cifar, dominoes

MNIST_HALF = np.arange(dominoes.HEIGHT)[:, None, None] < dominoes.SPLIT_ROW
TRAINING_FIELDS = ("a", "background", "classes", "digits", "epochs", "batch_size", "lr",
                   "momentum", "train_limit", "n_val")


def default_out_dir(cfg) -> str:
  name = "sd_sweep" if configs.sweeping(cfg) else cfg.preset
  return f"runs/dominoes/{name}/a{cfg.a:g}"


def arms(cfg) -> dict:
  """``{name: (weight_decay, sd_lambda)}`` of the methods this run trains."""
  if configs.sweeping(cfg):
    return {f"sd{v:g}": (0.0, float(v)) for v in cfg.sd_sweep}
  table = {"erm": (0.0, 0.0), "l2": (cfg.weight_decay, 0.0), "sd": (0.0, cfg.sd_lambda)}
  return {m: table[m] for m in cfg.methods}


def logits_of(fn, params, x_u8, batch: int) -> np.ndarray:
  """(n, 2) logits ``fn(params, xb)`` over chunks of ``batch`` rows (the last one padded, so
  every split runs one compiled shape)."""
  out = [np.asarray(fn(params, batching.pad_rows(x_u8[i:i + batch], batch)))[:len(
      x_u8[i:i + batch])] for i in range(0, len(x_u8), batch)]
  return np.concatenate(out)


def scalar_logits(f, params, x, batch: int) -> np.ndarray:
  """(n,) scalar logits ``f(params, x)`` (float inputs) over padded chunks of ``batch``."""
  return logits_of(jax.jit(f), params, x, batch)


def seed_features(cfg, f, params, x, y, path) -> dict:
  """Top-k features at θ0 on ``x`` (float inputs), ŷ_0, and each feature's MNIST-half share."""
  if path.exists():
    with np.load(path) as z:
      return dict(z)
  t0 = time.perf_counter()
  mf = cfg.feature_method == "matrix_free"
  U, S = ntk.top_features(f, params, x, y, cfg.k, method=cfg.feature_method,
                          batch_size=cfg.feature_batch,
                          **({"max_passes": cfg.feature_passes, "tol": cfg.feature_tol}
                             if mf else {}))[:2]
  V = ntk.feature_directions(f, params, x, y, U, S, batch_size=cfg.feature_batch)
  shares = ntk.feature_region_shares(f, params, x, U, V, MNIST_HALF,
                                     per_feature=cfg.attr_examples)
  logits0 = scalar_logits(f, params, x, cfg.feature_batch)
  out = {"U": U, "S": S, "logits0": logits0, "mnist_share": shares,
         "seconds": time.perf_counter() - t0}
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **out)
  return out


def init(model, tx, key):
  """:func:`gs_jax.train.init_state` on a 64×32 input as one program at XLA's lowest
  optimisation level (as :func:`gs_jax.train.make_seed_init`: the PRNG code of the
  PyTorch-default init otherwise compiles for ~10 s, op by op or whole)."""
  x = jnp.zeros((2, dominoes.HEIGHT, dominoes.WIDTH, 3), jnp.float32)
  fn = jax.jit(lambda k: train.init_state(model, tx, k, x),
               compiler_options={"xla_backend_optimization_level": 0})
  return fn(key)


def group_responses(z, shares) -> dict:
  """Sums of the responses over MNIST-half features (share ≥ 1/2) and CIFAR-half ones."""
  z, m = np.asarray(z), np.asarray(shares) >= 0.5
  return {"z_mnist": float(z[m].sum()), "z_cifar": float(z[~m].sum()),
          "n_mnist": int(m.sum()), "n_cifar": int((~m).sum())}


def run(cfg) -> dict:
  cfg = cli.overrides(cfg, out_dir=cfg.out_dir or default_out_dir(cfg))
  writer = results.RunWriter(cfg.out_dir, "dominoes", cfg)
  if cfg.overwrite:
    writer.discard_training()
    shutil.rmtree(writer.out_dir / "features", ignore_errors=True)
  # XLA convolutions: minibatch steps are called one by one (no scan), where they are faster
  # than NarLeNet's patch form and compile in a fraction of its time.
  model = eval_model = models.NarLeNet(2, patches=False)
  f = ntk.logit_difference(lambda p, xx: eval_model.apply({"params": p}, xx))
  eval_fn = jax.jit(lambda p, xb: eval_model.apply(
      {"params": p}, dominoes.to_float(xb, cfg.a, cfg.background)))
  sweep = configs.sweeping(cfg)
  mnist, cifar2, sources = dominoes.load_sources(cfg.data_dir or None, cfg.classes)
  per_run = {}
  for seed in range(cfg.seeds):
    splits = dominoes.build(seed, mnist, cifar2, digits=tuple(cfg.digits), n_val=cfg.n_val,
                            n_train=cfg.train_limit, n_test=cfg.test_limit)
    tr = splits["train"]
    n = len(tr)
    key = jax.random.PRNGKey(seed)
    tx0 = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum)
    state0 = init(model, tx0, jax.random.fold_in(key, 0))
    nf = min(cfg.feature_n, n)
    xf = dominoes.to_float(jnp.asarray(tr.x[:nf]), cfg.a, cfg.background)
    feats = None if sweep else seed_features(cfg, f, state0.params, xf, tr.y[:nf],
                                             writer.out_dir / "features" / f"s{seed}.npz")
    for arm, (wd, sd) in arms(cfg).items():
      tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum, weight_decay=wd)
      # copies: the compiled step donates its input state
      params0, key0 = jax.tree_util.tree_map(jnp.copy, (state0.params, state0.key))
      state = train.make_state({"params": params0}, tx, key0)
      fp = {**{k: cfg[k] for k in TRAINING_FIELDS}, "arm": arm, "seed": seed,
            "weight_decay": wd, "sd_lambda": sd}
      fp["digits"] = list(fp["digits"])
      ckpt = checkpoint.Checkpointer(writer.out_dir / "ckpt" / f"{arm}_s{seed}",
                                     every_seconds=0.0) if cfg.checkpoint else None
      t0 = time.perf_counter()
      state, history = train.fit_minibatch(
          model, tx, train.softmax_objective, state,
          {"x": jnp.asarray(tr.x), "y": jnp.asarray(tr.y)},
          lambda e, k=jax.random.fold_in(key, 1): cifar.epoch_permutation(k, e, n,
                                                                          cfg.batch_size),
          cfg.epochs, {"sd_lambda": jnp.float32(sd)},
          preprocess=lambda _, xb: dominoes.to_float(xb, cfg.a, cfg.background),
          checkpoint=ckpt, fingerprint=fp, chunk=cfg.chunk, progress=cfg.progress,
          desc=f"a={cfg.a:g} {arm} s{seed}",
          on_epoch=lambda r, arm=arm, seed=seed: writer.log(
              r["step"], kind="epoch", arm=arm, seed=seed,
              **{k: v for k, v in r.items() if k != "step"}))
      seconds = time.perf_counter() - t0

      def acc(split):
        d = splits[split]
        pred = logits_of(eval_fn, state.params, d.x, cfg.eval_batch).argmax(axis=1)
        return float(np.mean(pred == d.y))

      rec = {"method": arm, "seed": seed, "weight_decay": wd, "sd_lambda": sd,
             "final_loss": history[-1]["loss"], "steps": history[-1]["step"],
             "train_time_this_call_s": seconds}
      if sweep:
        rec.update(val_acc={"intact": acc("val"), "mnist_random": acc("val_mnist_random")})
      else:
        rec.update(train_acc=acc("train"),
                   test_acc={v: acc("test" if v == "intact" else f"test_{v}")
                             for v in dominoes.VARIANTS})
        d = scalar_logits(f, state.params, xf, cfg.feature_batch)
        z = np.asarray(ntk.responses(feats["U"], tr.y[:nf], d, feats["logits0"]))
        rec.update(z_final=z, mnist_share=feats["mnist_share"],
                   **group_responses(z, feats["mnist_share"]))
      per_run[f"{arm}_s{seed}"] = rec
      writer.write(summarise(per_run, sweep), per_run,
                   data={**sources, "n_train": n, "n_test": len(splits["test"]),
                         "n_val": cfg.n_val, "classes": cfg.classes,
                         "digits": list(cfg.digits)})
  return results.read_json(writer.results_path)


def summarise(per_run: dict, sweep: bool) -> dict:
  """Mean ± sample std over seeds, per method: accuracies and grouped responses (or, for the
  sweep, held-out accuracies and the chosen sd_lambda)."""
  out = {}
  for arm in dict.fromkeys(v["method"] for v in per_run.values()):
    runs = [v for v in per_run.values() if v["method"] == arm]
    if sweep:
      out[arm] = {k: results.mean_std([r["val_acc"][k] for r in runs])
                  for k in ("intact", "mnist_random")}
      out[arm]["sd_lambda"] = runs[0]["sd_lambda"]
      continue
    out[arm] = {"train_acc": results.mean_std([r["train_acc"] for r in runs]),
                **{f"test_{k}": results.mean_std([r["test_acc"][k] for r in runs])
                   for k in dominoes.VARIANTS},
                **{k: results.mean_std([r[k] for r in runs]) for k in ("z_mnist", "z_cifar")},
                "seeds": len(runs)}
  if sweep and out:
    best = max(out, key=lambda k: (out[k]["mnist_random"]["mean"], -out[k]["sd_lambda"]))
    out["sd_choice"] = {"sd_lambda": out[best]["sd_lambda"],
                        "rule": "largest held-out accuracy with the MNIST half randomised"}
  return out


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.dominoes")


if __name__ == "__main__":
  main()

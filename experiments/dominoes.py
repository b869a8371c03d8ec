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

import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import dominoes as configs
from gs_jax import training as train
from gs_jax.data import cifar, dominoes
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.nn import models
from gs_jax.tasks import dominoes as lib
from gs_jax.theory import ntk


def default_out_dir(cfg) -> str:
  name = "sd_sweep" if configs.sweeping(cfg) else cfg.preset
  return f"runs/dominoes/{name}/a{cfg.a:g}"


def validate(cfg) -> None:
  """Checks that need the library (the config module imports ml_collections only)."""
  cifar.class_ids(cfg.classes)


def arms(cfg) -> dict:
  """``{name: (weight_decay, sd_lambda)}`` of the methods this run trains."""
  if configs.sweeping(cfg):
    return {f"sd{v:g}": (0.0, float(v)) for v in cfg.sd_sweep}
  table = {"erm": (0.0, 0.0), "l2": (cfg.weight_decay, 0.0), "sd": (0.0, cfg.sd_lambda)}
  return {m: table[m] for m in cfg.methods}


def run(cfg) -> dict:
  writer = Run(
    cfg, "dominoes", out_dir=cfg.run.out_dir or default_out_dir(cfg), artifacts=("features",)
  )
  # XLA convolutions: minibatch steps are called one by one (no scan), where they are faster
  # than NarLeNet's patch form and compile in a fraction of its time.
  model = eval_model = models.NarLeNet(2, patches=False)
  f = ntk.logit_difference(lambda p, xx: eval_model.apply({"params": p}, xx))
  eval_fn = jax.jit(
    lambda p, xb: eval_model.apply({"params": p}, dominoes.to_float(xb, cfg.a, cfg.background))
  )
  sweep = configs.sweeping(cfg)
  mnist, cifar2, sources = dominoes.load_sources(cfg.run.data_dir or None, cfg.classes)
  per_run = {}
  for seed in range(cfg.seeds):
    splits = dominoes.build(
      seed,
      mnist,
      cifar2,
      digits=tuple(cfg.digits),
      n_val=cfg.n_val,
      n_train=cfg.train_limit,
      n_test=cfg.test_limit,
    )
    tr = splits["train"]
    n = len(tr)
    key = jax.random.PRNGKey(seed)
    tx0 = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum)
    state0 = lib.init(model, tx0, jax.random.fold_in(key, 0))
    nf = min(cfg.feature_n, n)
    xf = dominoes.to_float(jnp.asarray(tr.x[:nf]), cfg.a, cfg.background)
    feats = (
      None
      if sweep
      else lib.seed_features(
        f,
        state0.params,
        xf,
        tr.y[:nf],
        writer.out_dir / "features" / f"s{seed}.npz",
        k=cfg.k,
        method=cfg.feature_method,
        batch_size=cfg.feature_batch,
        passes=cfg.feature_passes,
        tol=cfg.feature_tol,
        attr_examples=cfg.attr_examples,
      )
    )
    for arm, (wd, sd) in arms(cfg).items():
      tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum, weight_decay=wd)
      # copies: the compiled step donates its input state
      params0, key0 = jax.tree_util.tree_map(jnp.copy, (state0.params, state0.key))
      state = train.make_state({"params": params0}, tx, key0)
      # An arm's training depends on the shared settings, the arm and the seed: one part.
      settings = {
        **{
          k: v
          for k, v in writer.hparams.items()
          if k not in ("methods", "seeds", "sd_sweep", "sd_lambda", "weight_decay")
        },
        "arm": arm,
        "seed": seed,
        "weight_decay": wd,
        "sd_lambda": sd,
      }
      ckpt = (
        writer.checkpointer(f"{arm}_s{seed}", settings, every_seconds=0.0)
        if cfg.run.checkpoint
        else None
      )
      t0 = time.perf_counter()
      state, history = train.fit_minibatch(
        model,
        tx,
        train.softmax_objective,
        state,
        {"x": jnp.asarray(tr.x), "y": jnp.asarray(tr.y)},
        lambda e, k=jax.random.fold_in(key, 1): cifar.epoch_permutation(k, e, n, cfg.batch_size),
        cfg.epochs,
        {"sd_lambda": jnp.float32(sd)},
        preprocess=lambda _, xb: dominoes.to_float(xb, cfg.a, cfg.background),
        checkpoint=ckpt,
        loop=train.LoopOptions(
          chunk=cfg.chunk, progress=cfg.run.progress, desc=f"a={cfg.a:g} {arm} s{seed}"
        ),
        callbacks=train.Callbacks(
          on_epoch=lambda r, arm=arm, seed=seed: writer.log(
            r["step"],
            kind="epoch",
            arm=arm,
            seed=seed,
            **{k: v for k, v in r.items() if k != "step"},
          ),
        ),
      )
      seconds = time.perf_counter() - t0

      def acc(split):
        d = splits[split]
        pred = lib.logits_of(eval_fn, state.params, d.x, cfg.eval_batch).argmax(axis=1)
        return float(np.mean(pred == d.y))

      rec = {
        "method": arm,
        "seed": seed,
        "weight_decay": wd,
        "sd_lambda": sd,
        "final_loss": history[-1]["loss"],
        "steps": history[-1]["step"],
        "train_time_this_call_s": seconds,
      }
      if sweep:
        rec.update(val_acc={"intact": acc("val"), "mnist_random": acc("val_mnist_random")})
      else:
        rec.update(
          train_acc=acc("train"),
          test_acc={v: acc("test" if v == "intact" else f"test_{v}") for v in dominoes.VARIANTS},
        )
        d = lib.scalar_logits(f, state.params, xf, cfg.feature_batch)
        z = np.asarray(ntk.responses(feats["U"], tr.y[:nf], d, feats["logits0"]))
        rec.update(
          z_final=z,
          mnist_share=feats["mnist_share"],
          **lib.group_responses(z, feats["mnist_share"]),
        )
      per_run[f"{arm}_s{seed}"] = rec
      writer.write(
        lib.summarise(per_run, sweep),
        per_run,
        data={
          **sources,
          "n_train": n,
          "n_test": len(splits["test"]),
          "n_val": cfg.n_val,
          "classes": cfg.classes,
          "digits": list(cfg.digits),
        },
      )
  return writer.read()


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.dominoes", validate=validate)


if __name__ == "__main__":
  main()

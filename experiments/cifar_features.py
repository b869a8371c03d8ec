"""NTK features of the released CIFAR-2 CNN and their responses under ERM and SD. Presets,
commands and expected results: ``configs/cifar_features.py``; protocol: docs/protocols.md §3.6.

For each seed: θ0 as in ``experiments/cifar.py`` (same key), the top ``k_spectrum`` features of
``YΦ0`` at θ0 (:func:`gs_jax.ntk.top_features`, cached in ``features/s<seed>.npz`` with the
input gradients of the top ``n_images`` features), then ERM and SD trained from θ0 with
:func:`gs_jax.train.fit_minibatch` (batch-1 scans) while :func:`gs_jax.train.with_probe` records
``z_k(t) = U_kᵀ Y (ŷ_t − ŷ_0)`` every ``response_every`` steps inside the compiled loop.

The arms (``--arms``): ERM, SD (§3.6), and the coupled regime of eq 5 (§3.7): ``ridge<λ>``
trains the cross-entropy plus ``(c/2)‖θ − θ0‖²`` with ``c = λ/n``
(:func:`gs_jax.train.softmax_ridge_objective`, :func:`gs_jax.losses.eq5_coefficient`) and
``wd<λ>`` plain coupled weight decay ``c`` toward 0; for both, results.json holds beside the
final responses the linearised model's prediction ``z* = S² Uᵀ α*/λ``,
``α* = dual.fixed_point(U_k, S_k, λ)`` (eq 8–11), and the relative error per feature group.

Outputs in ``out_dir``: ``metrics.jsonl`` (``kind="z"`` lines: arm, seed, step, the k
responses; ``kind="epoch"``: training means), ``results.json`` (per arm and seed: final
responses, train accuracy, the eq-18 prediction for SD), ``features/``, ``ckpt/``, and the
figures of :mod:`analysis.cifar_features_figures`. Started again with the same command, a run
reuses cached features and continues each arm from its last epoch checkpoint; ``--overwrite``
starts afresh.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cifar_features_figures
from configs import cifar_features as configs
from gs_jax import training as train
from gs_jax.data import cifar, paths
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.nn import losses, models
from gs_jax.tasks import cifar_features as lib
from gs_jax.theory import ntk

ARMS = ("erm", "sd")  # the default arms; cfg.arms may add ridge<λ> / wd<λ> (§3.7)


def default_out_dir(cfg) -> str:
  full = cfg.train_limit == 0 and cfg.epochs == 40
  name = "full" if full else f"n{cfg.train_limit or 'all'}_e{cfg.epochs}"
  if tuple(cfg.arms) != ARMS:
    name = "coupled" if full else name + "_coupled"
  return "runs/cifar_features/" + name


def validate(cfg) -> None:
  """Checks that need the library (the config module imports ml_collections only)."""
  cifar.class_ids(cfg.classes)


def run(cfg) -> dict:
  writer = Run(
    cfg, "cifar_features", out_dir=cfg.run.out_dir or default_out_dir(cfg), artifacts=("features",)
  )
  data = cifar.head(cifar.load("cifar2", cfg.run.data_dir or None, cfg.classes), cfg.train_limit)
  x_u8, y = jnp.asarray(data.x_train), np.asarray(data.y_train)
  x, n = cifar.to_float(x_u8), len(y)
  model = models.NarLeNet(2)
  # Probes and logits over the whole set: XLA convolutions, same parameters (3.4× faster than
  # the patch form on 10,000 images, also inside the training scan).
  eval_model = models.NarLeNet(2, patches=False)
  tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum)
  f = ntk.logit_difference(lambda p, xx: model.apply({"params": p}, xx))
  f_eval = ntk.logit_difference(lambda p, xx: eval_model.apply({"params": p}, xx))
  every = (
    train.probe_schedule(cfg.epochs * (n // cfg.batch_size), cfg.response_every, cfg.response_early)
    if cfg.response_early
    else cfg.response_every
  )
  lam = lib.eq17_lambda(cfg.sd_coef, cfg.batch_size)
  per_run, spectra = {}, {}
  for seed in range(cfg.seeds):
    key = jax.random.PRNGKey(seed)
    state0 = train.init_state(
      model,
      tx,
      jax.random.fold_in(key, 0),  # as experiments.cifar
      jnp.zeros((2, 32, 32, 3), jnp.float32),
    )
    feats = lib.seed_features(
      model,
      f,
      state0.params,
      x,
      y,
      writer.out_dir / "features" / f"s{seed}.npz",
      k_spectrum=cfg.k_spectrum,
      method=cfg.feature_method,
      batch_size=cfg.feature_batch,
      passes=cfg.feature_passes,
      tol=cfg.feature_tol,
      n_images=cfg.n_images,
    )
    spectra[f"s{seed}"] = {
      "S": feats["S"],
      "seconds": float(feats["seconds"]),
      "passes": int(feats["passes"]),
    }
    U = feats["U"][:, : cfg.k]
    probe, probe_data = ntk.response_probe(
      f_eval, x, y, U, feats["logits0"], batch_size=cfg.feature_batch
    )
    z_pred = lib.sd_prediction(U, lam)
    duals = {}
    for arm in cfg.arms:
      kind, lam5 = configs.parse_arm(arm)
      coef = losses.eq5_coefficient(lam5, n)  # λ/n: eq 5's λ in the mean form (§3.7)
      arm_tx = train.make_optimizer(
        "sgd", cfg.lr, momentum=cfg.momentum, weight_decay=coef if kind == "wd" else 0.0
      )
      objective = train.softmax_ridge_objective if kind == "ridge" else train.softmax_objective
      step_fn = train.with_probe(train.make_train_step(model, arm_tx, objective), probe, every)
      arm_state0 = (
        state0 if kind != "wd" else train.make_state({"params": state0.params}, arm_tx, state0.key)
      )
      hparams = {"sd_lambda": jnp.float32(0.0), train.PROBE: probe_data}
      if arm == "sd":
        hparams["sd_coef"] = jnp.float32(cfg.sd_coef)
      if kind == "ridge":
        hparams.update(ridge=jnp.float32(coef), params0=state0.params)
      # An arm's training depends on the shared settings, the arm and the seed (not on the
      # other arms): its checkpoint is one part of the run.
      settings = {
        **{k: v for k, v in writer.hparams.items() if k not in ("arms", "seeds")},
        "arm": arm,
        "seed": seed,
      }
      ckpt = (
        writer.checkpointer(f"{arm}_s{seed}", settings, every_seconds=0.0)
        if cfg.run.checkpoint
        else None
      )

      def on_chunk(done, metrics, arm=arm, seed=seed):
        for s, z in train.probe_rows(metrics, done, every):
          writer.log(s, kind="z", arm=arm, seed=seed, z=z)

      t0 = time.perf_counter()
      state, history = train.fit_minibatch(
        model,
        arm_tx,
        objective,
        arm_state0,
        {"x": x_u8, "y": jnp.asarray(y)},
        lambda e, k=jax.random.fold_in(key, 1): cifar.epoch_permutation(k, e, n, cfg.batch_size),
        cfg.epochs,
        hparams,
        preprocess=lambda _, xb: cifar.to_float(xb),
        checkpoint=ckpt,
        train_step=step_fn,
        loop=train.LoopOptions(
          chunk=cfg.chunk, progress=cfg.run.progress, scan=True, desc=f"{arm} s{seed}"
        ),
        callbacks=train.Callbacks(
          on_chunk=on_chunk,
          on_epoch=lambda r, arm=arm, seed=seed: writer.log(
            r["step"],
            kind="epoch",
            arm=arm,
            seed=seed,
            **{k: v for k, v in r.items() if k != "step"},
          ),
        ),
      )
      logits = lib.batched_logits(eval_model, state.params, x, cfg.feature_batch)
      d = logits[:, 1] - logits[:, 0]
      rec = per_run[f"{arm}_s{seed}"] = {
        "arm": arm,
        "seed": seed,
        "train_acc": float(np.mean((d > 0) == (y == 1))),
        "final_loss": history[-1]["loss"],
        "steps": history[-1]["step"],
        "train_time_this_call_s": time.perf_counter() - t0,
        "z_final": np.asarray(ntk.responses(U, y, d, feats["logits0"])),
        "margin_mean": float(np.mean(np.where(y == 1, 1, -1) * d)),
        "logit_sum_rms": float(np.sqrt(np.mean(logits.sum(axis=1) ** 2))),
        "z_eq18": z_pred if arm == "sd" else None,
      }
      if kind in ("ridge", "wd"):
        if lam5 not in duals:
          duals[lam5] = lib.dual_prediction(U, feats["S"][: cfg.k], lam5, cfg.dual_dynamics)
        rec.update(
          eq5_lambda=lam5,
          coefficient=coef,
          z_dual=duals[lam5],
          rel_err_dual=lib.relative_errors(rec["z_final"], duals[lam5]),
        )
    writer.write(
      lib.summarise(per_run, cfg.arms),
      per_run,
      spectra=spectra,
      eq17_lambda=lam,
      data={"source": paths.portable(data.source), "n_train": n, "classes": cfg.classes},
    )
  r = writer.read()
  cifar_features_figures.report(writer.out_dir)
  return r


def main(argv=None):
  return cli.main(
    configs, run, argv, prog="python -m experiments.cifar_features", validate=validate
  )


if __name__ == "__main__":
  main()

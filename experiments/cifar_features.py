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

import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from analysis import cifar_features_figures
from configs import cifar_features as configs
from gs_jax.experiment import checkpoint, cli, results
from gs_jax.theory import dual, ntk
from gs_jax.nn import losses, models
from gs_jax import training as train
from gs_jax.data import cifar, paths

ARMS = ("erm", "sd")   # the default arms; cfg.arms may add ridge<λ> / wd<λ> (§3.7)
TRAINING_FIELDS = ("classes", "epochs", "batch_size", "lr", "momentum", "train_limit", "k",
                   "k_spectrum", "feature_method", "response_every", "response_early")


def default_out_dir(cfg) -> str:
  full = cfg.train_limit == 0 and cfg.epochs == 40
  name = "full" if full else f"n{cfg.train_limit or 'all'}_e{cfg.epochs}"
  if tuple(cfg.arms) != ARMS:
    name = "coupled" if full else name + "_coupled"
  return "runs/cifar_features/" + name


def eq17_lambda(cfg) -> float:
  """λ of eq 17 for the released SD term ``sd_coef·Σ_{batch,logits} ŷ²`` (§3.6): over an
  epoch the objective is ``(1/n)[Σ_i CE_i + B·sd_coef Σ_i (ŷ_i0² + ŷ_i1²)]``; with the logit
  sum driven to 0, ``ŷ_i0² + ŷ_i1² = d_i²/2`` for ``d = ŷ_1 − ŷ_0``, so ``λ = B·sd_coef``."""
  return cfg.sd_coef * cfg.batch_size


def sd_prediction(U, lam: float) -> np.ndarray:
  """eq 18: every ``α_i*`` solves ``log((1−a)/a) = a/λ`` (no U, no S), ``z* = U^T α*/λ``."""
  a = float(dual.fixed_point(np.ones((1, 1)), np.ones(1), lam, dynamics="sd")[0])
  return a / lam * np.asarray(U).sum(axis=0)


def dual_prediction(U, S, lam: float, dynamics: str = "exact") -> np.ndarray:
  """Responses at the fixed point of the linearised model's dual (eq 8–11) for eq 5's λ:
  ``z* = S² Uᵀ α*/λ`` with ``α* = dual.fixed_point(U, S, λ)`` on the top-k features (the
  strengths beyond k taken as 0)."""
  alpha = dual.fixed_point(U, S, lam, dynamics=dynamics, orth_tol=None)
  return np.asarray(dual.responses_at(U, S, lam, alpha, dynamics))


def relative_errors(z, pred) -> dict:
  """``‖z − z*‖/‖z*‖`` over features 1–k and 2–k (feature 1: the label-blind constant
  direction of §3.6)."""
  z, pred = np.asarray(z), np.asarray(pred)
  return {"all": float(np.linalg.norm(z - pred) / np.linalg.norm(pred)),
          "j2plus": float(np.linalg.norm(z[1:] - pred[1:]) / np.linalg.norm(pred[1:]))}


def portable_source(source: str) -> str:
  """The data source without this machine's paths: ``$GS_DATA_DIR/…`` when it lies there."""
  root = os.environ.get(paths.ENV_VAR)
  if root and os.path.abspath(source).startswith(os.path.abspath(root) + os.sep):
    return f"${paths.ENV_VAR}/" + os.path.relpath(source, root)
  return source if not os.path.isabs(source) else os.path.basename(source)


def batched_logits(model, params, x, batch_size: int) -> np.ndarray:
  """(n, 2) logits of ``model`` at ``params`` in chunks of ``batch_size`` (bounded memory)."""
  apply = jax.jit(lambda p, xb: model.apply({"params": p}, xb))
  return np.concatenate([np.asarray(apply(params, x[i:i + batch_size]))
                         for i in range(0, x.shape[0], batch_size)])


def seed_features(cfg, model, f, params, x, y, path) -> dict:
  """Top features at θ0, logits ŷ_0 and input gradients of the top features (cached)."""
  if path.exists():
    with np.load(path) as z:
      return dict(z)
  mf = cfg.feature_method == "matrix_free"
  t0 = time.perf_counter()
  res = ntk.top_features(f, params, x, y, cfg.k_spectrum, method=cfg.feature_method,
                         batch_size=cfg.feature_batch,
                         **({"max_passes": cfg.feature_passes, "tol": cfg.feature_tol,
                             "return_info": True} if mf else {}))
  seconds = time.perf_counter() - t0
  U, S, info = res[0], res[1], (res[2] if mf else {})
  logits = batched_logits(model, params, x, cfg.feature_batch)
  logits0 = logits[:, 1] - logits[:, 0]
  out = {"U": U, "S": S, "logits0": logits0, "seconds": seconds,
         "passes": info.get("passes", 0), "ritz_change": info.get("ritz_change", 0.0)}
  if cfg.n_images:
    j = np.arange(cfg.n_images)
    V = ntk.feature_directions(f, params, x, y, U[:, j], S[j], batch_size=cfg.feature_batch)
    idx = np.argmax(np.abs(U[:, j]), axis=0)       # the example each feature weighs most
    out.update(image_index=idx, images=np.asarray(x[idx]),
               input_grads=np.asarray(ntk.feature_input_gradients(f, params, x[idx], V)))
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **out)
  return out


def run(cfg) -> dict:
  cfg = cli.overrides(cfg, out_dir=cfg.out_dir or default_out_dir(cfg))
  writer = results.RunWriter(cfg.out_dir, "cifar_features", cfg)
  if cfg.overwrite:
    writer.discard_training()
    shutil.rmtree(writer.out_dir / "features", ignore_errors=True)
  data = cifar.head(cifar.load("cifar2", cfg.data_dir or None, cfg.classes), cfg.train_limit)
  x_u8, y = jnp.asarray(data.x_train), np.asarray(data.y_train)
  x, n = cifar.to_float(x_u8), len(y)
  model = models.NarLeNet(2)
  # Probes and logits over the whole set: XLA convolutions, same parameters (3.4× faster than
  # the patch form on 10,000 images, also inside the training scan).
  eval_model = models.NarLeNet(2, patches=False)
  tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum)
  f = ntk.logit_difference(lambda p, xx: model.apply({"params": p}, xx))
  f_eval = ntk.logit_difference(lambda p, xx: eval_model.apply({"params": p}, xx))
  every = (train.probe_schedule(cfg.epochs * (n // cfg.batch_size), cfg.response_every,
                                cfg.response_early) if cfg.response_early else cfg.response_every)
  lam = eq17_lambda(cfg)
  per_run, spectra = {}, {}
  for seed in range(cfg.seeds):
    key = jax.random.PRNGKey(seed)
    state0 = train.init_state(model, tx, jax.random.fold_in(key, 0),   # as experiments.cifar
                              jnp.zeros((2, 32, 32, 3), jnp.float32))
    feats = seed_features(cfg, model, f, state0.params, x, y,
                          writer.out_dir / "features" / f"s{seed}.npz")
    spectra[f"s{seed}"] = {"S": feats["S"], "seconds": float(feats["seconds"]),
                           "passes": int(feats["passes"])}
    U = feats["U"][:, :cfg.k]
    probe, probe_data = ntk.response_probe(f_eval, x, y, U, feats["logits0"],
                                           batch_size=cfg.feature_batch)
    z_pred = sd_prediction(U, lam)
    duals = {}
    for arm in cfg.arms:
      kind, lam5 = configs.parse_arm(arm)
      coef = losses.eq5_coefficient(lam5, n)   # λ/n: eq 5's λ in the mean form (§3.7)
      arm_tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum,
                                    weight_decay=coef if kind == "wd" else 0.0)
      objective = train.softmax_ridge_objective if kind == "ridge" else train.softmax_objective
      step_fn = train.with_probe(train.make_train_step(model, arm_tx, objective), probe, every)
      arm_state0 = state0 if kind != "wd" else train.make_state(
          {"params": state0.params}, arm_tx, state0.key)
      hparams = {"sd_lambda": jnp.float32(0.0), train.PROBE: probe_data}
      if arm == "sd":
        hparams["sd_coef"] = jnp.float32(cfg.sd_coef)
      if kind == "ridge":
        hparams.update(ridge=jnp.float32(coef), params0=state0.params)
      fp = {**{k: cfg[k] for k in TRAINING_FIELDS}, "arm": arm, "seed": seed,
            "sd_coef": cfg.sd_coef if arm == "sd" else 0.0}
      if kind in ("ridge", "wd"):
        fp.update(eq5_lambda=lam5, coefficient=coef)
      ckpt = checkpoint.Checkpointer(writer.out_dir / "ckpt" / f"{arm}_s{seed}",
                                     every_seconds=0.0) if cfg.checkpoint else None

      def on_chunk(done, metrics, arm=arm, seed=seed):
        for s, z in train.probe_rows(metrics, done, every):
          writer.log(s, kind="z", arm=arm, seed=seed, z=z)

      t0 = time.perf_counter()
      state, history = train.fit_minibatch(
          model, arm_tx, objective, arm_state0, {"x": x_u8, "y": jnp.asarray(y)},
          lambda e, k=jax.random.fold_in(key, 1): cifar.epoch_permutation(k, e, n,
                                                                          cfg.batch_size),
          cfg.epochs, hparams, preprocess=lambda _, xb: cifar.to_float(xb), checkpoint=ckpt,
          fingerprint=fp, chunk=cfg.chunk, progress=cfg.progress, train_step=step_fn,
          on_chunk=on_chunk, scan=True, desc=f"{arm} s{seed}",
          on_epoch=lambda r, arm=arm, seed=seed: writer.log(
              r["step"], kind="epoch", arm=arm, seed=seed,
              **{k: v for k, v in r.items() if k != "step"}))
      logits = batched_logits(eval_model, state.params, x, cfg.feature_batch)
      d = logits[:, 1] - logits[:, 0]
      rec = per_run[f"{arm}_s{seed}"] = {
          "arm": arm, "seed": seed, "train_acc": float(np.mean((d > 0) == (y == 1))),
          "final_loss": history[-1]["loss"], "steps": history[-1]["step"],
          "train_time_this_call_s": time.perf_counter() - t0,
          "z_final": np.asarray(ntk.responses(U, y, d, feats["logits0"])),
          "margin_mean": float(np.mean(np.where(y == 1, 1, -1) * d)),
          "logit_sum_rms": float(np.sqrt(np.mean(logits.sum(axis=1) ** 2))),
          "z_eq18": z_pred if arm == "sd" else None}
      if kind in ("ridge", "wd"):
        if lam5 not in duals:
          duals[lam5] = dual_prediction(U, feats["S"][:cfg.k], lam5, cfg.dual_dynamics)
        rec.update(eq5_lambda=lam5, coefficient=coef, z_dual=duals[lam5],
                   rel_err_dual=relative_errors(rec["z_final"], duals[lam5]))
    writer.write(summarise(per_run, cfg), per_run, spectra=spectra, eq17_lambda=lam,
                 data={"source": portable_source(data.source), "n_train": n,
                       "classes": cfg.classes})
  r = results.read_json(writer.results_path)
  cifar_features_figures.report(writer.out_dir)
  return r


def summarise(per_run: dict, cfg) -> dict:
  """Means ± std over seeds of train accuracy and of the final responses of each arm."""
  out = {}
  for arm in cfg.arms:
    runs = [v for v in per_run.values() if v["arm"] == arm]
    if not runs:
      continue
    z = np.stack([np.asarray(v["z_final"]) for v in runs])
    out[arm] = {"train_acc": results.mean_std([v["train_acc"] for v in runs]),
                "z_final_mean": z.mean(axis=0), "seeds": len(runs)}
    if "rel_err_dual" in runs[0]:
      out[arm].update(eq5_lambda=runs[0]["eq5_lambda"], **{
          f"rel_err_dual_{g}": results.mean_std([v["rel_err_dual"][g] for v in runs])
          for g in ("all", "j2plus")})
    if arm == "sd":
      pred = np.stack([np.asarray(v["z_eq18"]) for v in runs])
      out[arm]["z_eq18_mean"] = pred.mean(axis=0)
      out[arm]["rel_gap_to_eq18"] = float(np.linalg.norm(z - pred) / np.linalg.norm(pred))
      # feature 1 is the label-blind constant direction (README): the gap without it
      out[arm]["rel_gap_to_eq18_j2plus"] = float(np.linalg.norm(z[:, 1:] - pred[:, 1:])
                                                 / np.linalg.norm(pred[:, 1:]))
  return out


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.cifar_features")


if __name__ == "__main__":
  main()

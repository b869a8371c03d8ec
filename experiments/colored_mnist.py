r"""Colored MNIST: ERM, SD, IRM, V-REx and the grayscale oracle (Table 2, Figure 3; docs/protocols.md §3.4).

    python -m experiments.colored_mnist --method=sd --restarts=10 \
        --data_dir=/work/shared/data/mnist --out_dir=runs/colored_mnist/sd

All restarts of a method train in ONE compiled full-batch program: initialisation and the
``lax.scan`` over steps are ``vmap``-ed over restarts (``gs_jax.train.make_seed_trainer``);
the released PyTorch code trains them one after another. Every restart sees the same data
(built once from ``--data_seed``) and restarts differ in their initialisation key, unless
``--resample_data`` gives restart r its own data (seed ``data_seed + r``), as the released
code does (then the data carry a leading restart axis and are vmapped too).

Writes ``<out_dir>/results.json`` (per restart: train/test accuracy of the final model and, per
Figure-3 variant, accuracy and mean prediction entropy; a summary; the progress table) and prints the released
code's progress table (every ``--log_every`` steps, mean over restarts) after training.
A finished run with the same configuration is not recomputed (``--overwrite`` forces it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from experiments import common

# Released hyper-parameters (docs/protocols.md §3.4; the authors' table_1.sh and the IRM/REx code).
IRM_LR = 0.0004898536566546834
IRM_L2 = 0.00110794568
METHODS = {
    "erm": dict(hidden=300, lr=1e-4, steps=1001),
    "sd": dict(hidden=300, lr=1e-4, steps=2001, sd_coef=2e-5, anneal_steps=450),
    "sd_clean": dict(hidden=300, lr=1e-4, steps=2001, sd_coef=1.0),
    "irm": dict(hidden=390, lr=IRM_LR, steps=501, l2_weight=IRM_L2,
                penalty_weight=91257.18613115903, anneal_steps=190),
    "rex": dict(hidden=390, lr=IRM_LR, steps=501, l2_weight=IRM_L2, penalty_weight=1e4,
                anneal_steps=190),
    "oracle": dict(hidden=300, lr=1e-4, steps=1001, grayscale=True),
}
# Paper's Table 2 (train / test accuracy %, mean ± std over 10 runs).
PAPER_TABLE2 = {
    "erm": ((91.1, 0.4), (23.7, 0.8)),
    "rex": ((71.5, 1.0), (68.7, 0.9)),
    "irm": ((70.5, 0.6), (67.1, 1.4)),
    "sd": ((70.0, 0.9), (68.4, 1.2)),
    "oracle": ((73.5, 0.2), (73.0, 0.4)),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """One Colored-MNIST run. Unset fields take the released value of ``method`` (METHODS)."""
  method: str = "sd"
  restarts: int = 10
  seed: int = 0
  data_seed: int = 0
  hidden: int = 300
  lr: float = 1e-4
  steps: int = 1001
  sd_coef: float = 0.0
  anneal_steps: int = 0
  l2_weight: float = 0.0
  penalty_weight: float = 0.0
  rex_form: str = "released"
  grayscale: bool = False
  n_train: int = 0
  n_test: int = 0
  log_every: int = 100
  resample_data: bool = False

  @classmethod
  def for_method(cls, method: str, **overrides) -> "Config":
    if method not in METHODS:
      raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    fields = {**METHODS[method], **{k: v for k, v in overrides.items() if v is not None}}
    cfg = cls(method=method, **fields)
    cfg.validate()
    return cfg

  def validate(self):
    if self.restarts < 1:
      raise ValueError(f"restarts must be >= 1; got {self.restarts}")
    if self.steps < 1:
      raise ValueError(f"steps must be >= 1; got {self.steps}")
    if self.lr <= 0:
      raise ValueError(f"lr must be > 0; got {self.lr}")
    if self.method.startswith("sd") and self.sd_coef <= 0:
      raise ValueError(f"SD needs sd_coef > 0; got {self.sd_coef}")
    if self.method in ("irm", "rex") and self.penalty_weight <= 0:
      raise ValueError(f"{self.method} needs penalty_weight > 0; got {self.penalty_weight}")
    if self.rex_form not in ("released", "variance"):
      raise ValueError(f"rex_form must be 'released' or 'variance'; got {self.rex_form!r}")
    for name in ("n_train", "n_test", "anneal_steps", "l2_weight"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
    if self.log_every < 1:
      raise ValueError(f"log_every must be >= 1; got {self.log_every}")


def make_objective(cfg: Config, model):
  """``objective(logits, batch, params, step, hparams)`` for ``gs_jax.train``.

  ``batch`` holds the training union (``x``, ``y`` ∈ {0,1}, ``env``) and the test environment
  (``test_x``, ``test_y``); the test accuracy is recorded at every step, as in the released
  code's table, from a forward pass whose parameters are behind ``stop_gradient``.
  """
  import jax
  import jax.numpy as jnp

  from gs_jax import losses

  def objective(logits, batch, params, step, hparams):
    y, env = batch["y"], batch["env"]
    per_example = losses.logistic_loss(logits, y, kind="01", reduction="none")
    nll = jnp.mean(per_example)
    risks = losses.env_risks(per_example, env, 2)
    irm_pen = jnp.mean(losses.irm_penalty(logits, y, env, 2, kind="01"))
    rex_pen = (jnp.square(risks[0] - risks[1]) if cfg.rex_form == "released"
               else losses.vrex_penalty(risks))
    if cfg.method in ("erm", "oracle"):
      loss = nll
    elif cfg.method in ("sd", "sd_clean"):
      loss = losses.sd_annealed_loss(nll, logits, step, sd_coef=hparams["sd_coef"],
                                     anneal_steps=hparams["anneal_steps"],
                                     rescale=cfg.method == "sd")
    else:
      loss = losses.invariance_loss(
          risks, irm_pen if cfg.method == "irm" else rex_pen, params, step,
          penalty_weight=hparams["penalty_weight"], anneal_steps=hparams["anneal_steps"],
          l2_weight=hparams["l2_weight"],
          risk_form="sum" if (cfg.method == "rex" and cfg.rex_form == "released") else "mean")
    test_logits = model.apply({"params": jax.lax.stop_gradient(params)}, batch["test_x"],
                              train=False)
    metrics = {
        "train_nll": nll,
        "train_acc": losses.accuracy_binary(logits, y, kind="01"),
        "irm_penalty": irm_pen,
        "rex_penalty": rex_pen,
        "test_acc": losses.accuracy_binary(test_logits, batch["test_y"], kind="01"),
    }
    return loss, metrics

  return objective


def build_data(cfg: Config, data_dir: str | None, mnist=None):
  """Training batch, test batch and Figure-3 variants as the model sees them (numpy)."""
  from gs_jax.data import colored_mnist as cm

  envs = cm.colored_mnist(cfg.data_seed, data_dir, mnist=mnist)
  if cfg.n_train:  # reduced runs: the first n_train/2 examples of each training env
    half = max(cfg.n_train // 2, 1)
    envs["train0"] = cm.Environment(*(a[:half] for a in envs["train0"]))
    envs["train1"] = cm.Environment(*(a[:half] for a in envs["train1"]))
  if cfg.n_test:
    for name in ("test",) + cm.VARIANTS:
      envs[name] = cm.Environment(*(a[:cfg.n_test] for a in envs[name]))
  batch = cm.train_batch(envs, grayscale=cfg.grayscale)
  batch["test_x"] = cm.flat_inputs(envs["test"], cfg.grayscale)
  batch["test_y"] = envs["test"].y
  variants = {name: (cm.flat_inputs(envs[name], cfg.grayscale), envs[name].y)
              for name in cm.VARIANTS}
  return batch, variants


def format_table(history: dict, log_every: int, columns=None) -> str:
  """The released code's progress table (``pretty_print``: 13-wide columns, 5 decimals)."""
  columns = columns or ["train_nll", "train_acc", "irm_penalty", "rex_penalty", "test_acc"]
  names = ["step"] + [c.replace("_", " ") for c in columns]
  rows = ["   ".join(n.ljust(13) for n in names)]
  num_steps = len(history["train_nll"])
  for t in range(0, num_steps, log_every):
    vals = [str(t).ljust(13)] + [f"{history[c][t]:.5f}".ljust(13) for c in columns]
    rows.append("   ".join(vals))
  return "\n".join(rows)


def run(cfg: Config, data_dir: str | None, out_dir: str, *, mnist=None, overwrite=False,
        progress=True, verbose=True) -> dict:
  """Trains ``cfg.restarts`` restarts in one vmapped program; writes and returns results."""
  import jax
  import jax.numpy as jnp

  from gs_jax import losses, models, train

  cfg.validate()
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "results.json")
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      old = json.load(f)
    if old.get("config") == dataclasses.asdict(cfg):
      if verbose:
        print(f"{path} exists for this configuration; skipping (--overwrite reruns it)")
      return old

  t0 = time.time()
  if cfg.resample_data:  # as the released code: restart r gets its own shuffle and coin flips
    if mnist is None:
      from gs_jax.data.colored_mnist import load_mnist_train
      mnist = load_mnist_train(data_dir)
    per = [build_data(dataclasses.replace(cfg, data_seed=cfg.data_seed + r), data_dir, mnist)
           for r in range(cfg.restarts)]
    batch = {k: np.stack([b[k] for b, _ in per]) for k in per[0][0]}
    variants = {name: tuple(np.stack([v[name][i] for _, v in per]) for i in range(2))
                for name in per[0][1]}
  else:
    batch, variants = build_data(cfg, data_dir, mnist)
  data_axis = 0 if cfg.resample_data else None
  model = models.MLP(hidden=(cfg.hidden, cfg.hidden), num_outputs=1, kernel_init="xavier")
  tx = train.make_optimizer("adam", cfg.lr)
  trainer = train.make_seed_trainer(model, tx, make_objective(cfg, model),
                                     shared_batch=not cfg.resample_data,
                                     # without a bar, one chunk: a single compilation
                                     chunk=250 if progress else cfg.steps)
  hparams = {"sd_coef": jnp.float32(cfg.sd_coef), "anneal_steps": jnp.int32(cfg.anneal_steps),
             "penalty_weight": jnp.float32(cfg.penalty_weight),
             "l2_weight": jnp.float32(cfg.l2_weight)}
  keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.restarts)
  batch = jax.tree_util.tree_map(jnp.asarray, batch)
  t_data = time.time() - t0
  states, history = trainer(keys, batch, hparams, cfg.steps, desc=f"{cfg.method} x{cfg.restarts}",
                            progress=progress)
  history = jax.tree_util.tree_map(np.asarray, jax.device_get(history))
  t_train = time.time() - t0 - t_data

  # Final model: train/test accuracy and the four Figure-3 variants, for every restart.
  @jax.jit
  def evaluate(params, x, y):
    logits = model.apply({"params": params}, x, train=False)
    return (losses.accuracy_binary(logits, y, kind="01"),
            jnp.mean(losses.binary_entropy_from_logits(logits)))

  eval_all = jax.vmap(evaluate, in_axes=(0, data_axis, data_axis))
  train_acc, _ = eval_all(states.params, batch["x"], batch["y"])
  test_acc, _ = eval_all(states.params, batch["test_x"], batch["test_y"])
  var_res = {name: tuple(np.asarray(a) for a in eval_all(states.params, jnp.asarray(x),
                                                          jnp.asarray(y)))
             for name, (x, y) in variants.items()}

  mean_hist = {k: v.mean(0) for k, v in history.items()}
  table = format_table(mean_hist, cfg.log_every)
  logged = list(range(0, cfg.steps, cfg.log_every))
  results = {
      "config": dataclasses.asdict(cfg),
      "data_dir": data_dir,
      "restarts": [
          {"restart": r, "train_acc": float(train_acc[r]), "test_acc": float(test_acc[r]),
           # the released code reports these: metrics of the last step, before its update
           "last_step_train_acc": float(history["train_acc"][r, -1]),
           "last_step_test_acc": float(history["test_acc"][r, -1]),
           "variants": {name: {"accuracy": float(a[r]), "entropy": float(h[r])}
                        for name, (a, h) in var_res.items()}}
          for r in range(cfg.restarts)],
      "summary": {
          "train_acc": _mean_std(train_acc), "test_acc": _mean_std(test_acc),
          "variants": {name: {"accuracy": _mean_std(a), "entropy": _mean_std(h)}
                       for name, (a, h) in var_res.items()}},
      "history": {"step": logged,
                  **{k: v[:, logged].tolist() for k, v in history.items()}},
      "table": table,
      "timing_s": {"data": t_data, "train": t_train,
                   "ms_per_step_all_restarts": 1e3 * t_train / cfg.steps},
      "device": str(jax.devices()[0]),
      "n_train": int(batch["y"].shape[-1]), "n_test": int(batch["test_y"].shape[-1]),
  }
  common.atomic_write_json(path, results)
  if verbose:
    s = results["summary"]
    print(f"== {cfg.method}: {cfg.restarts} restarts, {cfg.steps} steps, "
          f"{results['n_train']} train / {results['n_test']} test examples, "
          f"{t_train:.1f}s training on {results['device']}")
    print(table)
    print(f"Average train accuracy over {cfg.restarts} runs: {100 * s['train_acc']['mean']:.2f} % "
          f"(pm {100 * s['train_acc']['std']:.2f})")
    print(f"Average test accuracy over {cfg.restarts} runs: {100 * s['test_acc']['mean']:.2f} % "
          f"(pm {100 * s['test_acc']['std']:.2f})")
    for name, v in s["variants"].items():
      print(f"  {name:13s} accuracy {100 * v['accuracy']['mean']:6.2f} %   "
            f"entropy {v['entropy']['mean']:.3f}")
    print(f"wrote {path}")
  return results


def _mean_std(a) -> dict:
  a = np.asarray(a, np.float64)
  return {"mean": float(a.mean()), "std": float(a.std())}  # population std, as the released code


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      prog="python -m experiments.colored_mnist", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--method", default="sd", choices=sorted(METHODS),
                 help="erm | sd (released annealing + loss rescaling) | sd_clean (constant "
                      "coefficient, no rescaling) | irm | rex | oracle (ERM on grayscale)")
  p.add_argument("--restarts", type=int, default=10, help="restarts, trained together (vmap)")
  p.add_argument("--seed", type=int, default=0, help="seed of the restarts' init keys")
  p.add_argument("--data_seed", type=int, default=0,
                 help="seed of the training-pool shuffle and label/colour coin flips")
  p.add_argument("--data_dir", default=None,
                 help="folder with mnist.npz (offline copy: /work/shared/data/mnist); "
                      "default: tfds.load('mnist') (downloads)")
  p.add_argument("--out_dir", default=None, help="run directory (default runs/colored_mnist/<method>)")
  p.add_argument("--steps", type=int, default=None, help="override the method's step count")
  p.add_argument("--hidden", type=int, default=None, help="override the hidden width")
  p.add_argument("--lr", type=float, default=None, help="override the Adam learning rate")
  p.add_argument("--sd_coef", type=float, default=None, help="override the SD coefficient")
  p.add_argument("--anneal_steps", type=int, default=None,
                 help="override the penalty/SD annealing step")
  p.add_argument("--penalty_weight", type=float, default=None, help="override IRM/REx weight")
  p.add_argument("--l2_weight", type=float, default=None,
                 help="override the L2 weight on the loss (IRM/REx)")
  p.add_argument("--rex_form", default="released", choices=("released", "variance"),
                 help="released: (R0+R1) + w(R0-R1)^2 as the REx code; variance: mean R + w Var R")
  p.add_argument("--n_train", type=int, default=0,
                 help="reduced runs: use only this many training examples (0 = all 50,000)")
  p.add_argument("--n_test", type=int, default=0, help="reduced runs: test examples (0 = all)")
  p.add_argument("--resample_data", action="store_true",
                 help="restart r uses data seed data_seed+r (its own shuffle and label/colour "
                      "noise), as the released code; default: all restarts share the data")
  p.add_argument("--log_every", type=int, default=100, help="progress-table interval")
  p.add_argument("--matmul_precision", default="highest", choices=("default", "high", "highest"),
                 help="jax_default_matmul_precision (highest = full float32, no TF32 on GPUs)")
  p.add_argument("--overwrite", action="store_true", help="rerun even if results.json exists")
  p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  import jax
  try:
    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
  except (AttributeError, KeyError, ValueError) as e:  # renamed in some jax version
    print(f"warning: could not set jax_default_matmul_precision: {e}")
  cfg = Config.for_method(
      args.method, restarts=args.restarts, seed=args.seed, data_seed=args.data_seed,
      steps=args.steps, hidden=args.hidden, lr=args.lr, sd_coef=args.sd_coef,
      anneal_steps=args.anneal_steps, penalty_weight=args.penalty_weight,
      l2_weight=args.l2_weight, rex_form=args.rex_form, n_train=args.n_train,
      n_test=args.n_test, log_every=args.log_every, resample_data=args.resample_data)
  out_dir = args.out_dir or os.path.join("runs", "colored_mnist", args.method)
  run(cfg, args.data_dir, out_dir, overwrite=args.overwrite, progress=not args.no_progress)
  return 0


if __name__ == "__main__":
  sys.exit(main())

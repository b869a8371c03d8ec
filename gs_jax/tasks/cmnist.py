r"""Colored-MNIST runs (docs/protocols.md §3.4): model, objectives, every restart in one program.

A *run config* has the fields of ``configs.colored_mnist`` (objective, sd_lambda, sd_rescale,
anneal_steps, penalty_weight, l2_weight, rex_form, grayscale, hidden, lr, steps, seeds, seed,
data_seed, resample_data, n_train, n_test, chunk). The experiment, the speed benchmark and the
tests build models, objectives and trainers here.

The network is the released ``392 (or 196) → h → h → 1`` ReLU MLP with Xavier-uniform weights
and zero biases, trained full-batch with Adam (PyTorch defaults: β = (0.9, 0.999), ε = 1e-8)
on the union of the two training environments. With ``n`` examples, per-example logistic loss
``ℓ_i`` of the logit ``ŷ_i``, environment risks ``R_e = mean_{i∈e} ℓ_i``, ``‖θ‖² = Σ_leaves
‖θ‖²`` (weights and biases) and the step index ``t`` (updates applied so far), the objectives
are (:func:`make_objective`; the functions named are in :mod:`gs_jax.losses`):

- ``erm``: ``mean_i ℓ_i + l2_weight·‖θ‖²``. The released ERM has ``l2_weight = 0``; the
  grayscale oracle (IRM's ``main.py --grayscale_model``, ERM with its penalty weight 0) has
  ``l2_weight > 0`` on 196 grayscale inputs (``mean_i ℓ_i = mean_e R_e``: both environments
  have equally many examples).
- ``sd``: :func:`~gs_jax.losses.sd_annealed_loss` with ``c = sd_lambda``, ``T = anneal_steps``:
  released (``sd_rescale``) ``mean ℓ + c·mean(ŷ²)`` for ``t < T``, then ``c·(mean ℓ +
  mean(ŷ²))``; clean: ``mean ℓ + c·mean(ŷ²)`` at every step. Plus ``l2_weight·‖θ‖²``.
- ``irm``: :func:`~gs_jax.losses.invariance_loss` with the IRMv1 penalty ``mean_e P_e``
  (:func:`~gs_jax.losses.irm_penalty`): ``[mean_e R_e + l2_weight·‖θ‖² + w(t)·mean_e P_e] /
  max(w(t), 1)``, ``w(t) = 1`` for ``t < T`` and ``penalty_weight`` after.
- ``rex``: the same with ``Σ_e R_e`` and ``(R_0 − R_1)²`` (``rex_form="released"``, the REx
  authors' code) or ``mean_e R_e`` and the variance of the risks (``"variance"``).

Restart ``r`` starts from ``init_keys(cfg)[r] = split(PRNGKey(seed), seeds)[r]`` and, with
``resample_data``, trains on data seed ``data_seed + r`` (its own shuffle and coin flips, as the
released code); otherwise every restart shares the data of ``data_seed``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import distributed
from gs_jax.nn import losses, models
from gs_jax import training as train
from gs_jax.data import colored_mnist as data

OBJECTIVES = ("erm", "sd", "irm", "rex")
REX_FORMS = ("released", "variance")
# The released progress table's columns (``pretty_print``), in this order.
TABLE_COLUMNS = ("train_nll", "train_acc", "irm_penalty", "rex_penalty", "test_acc")


def model_of(cfg) -> models.MLP:
  return models.MLP(hidden=(cfg.hidden, cfg.hidden), num_outputs=1, kernel_init="xavier")


def optimizer_of(cfg):
  """Adam with the run's learning rate (L2 terms are on the loss, not in the optimizer)."""
  return train.make_optimizer("adam", cfg.lr)


def hparams_of(cfg) -> dict:
  """The traced hyper-parameters (changing them does not recompile)."""
  return {
    "sd_lambda": jnp.float32(cfg.sd_lambda),
    "anneal_steps": jnp.int32(cfg.anneal_steps),
    "penalty_weight": jnp.float32(cfg.penalty_weight),
    "l2_weight": jnp.float32(cfg.l2_weight),
  }


def init_keys(cfg) -> jax.Array:
  return jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.seeds)


def make_objective(cfg, apply_fn):
  """``objective(logits, batch, params, step, hparams) -> (loss, metrics)`` (module docstring).

  ``batch`` holds the training union (``x``, ``y`` ∈ {0,1}, ``env``) and the test environment
  (``test_x``, ``test_y``). Metrics at every step are the released table's: train NLL and
  accuracy, both penalties, and the test accuracy (a forward pass with the parameters behind
  ``stop_gradient``), all measured before that step's update.
  """
  if cfg.objective not in OBJECTIVES:
    raise ValueError(f"objective must be one of {OBJECTIVES}; got {cfg.objective!r}")
  if cfg.rex_form not in REX_FORMS:
    raise ValueError(f"rex_form must be one of {REX_FORMS}; got {cfg.rex_form!r}")
  released_rex = cfg.rex_form == "released"

  def objective(logits, batch, params, step, hparams):
    y, env = batch["y"], batch["env"]
    per_example = losses.logistic_loss(logits, y, kind="01", reduction="none")
    nll = jnp.mean(per_example)
    risks = losses.env_risks(per_example, env, 2)
    irm_pen = jnp.mean(losses.irm_penalty(logits, y, env, 2, kind="01"))
    rex_pen = jnp.square(risks[0] - risks[1]) if released_rex else losses.vrex_penalty(risks)
    if cfg.objective in ("erm", "sd"):
      loss = (
        nll
        if cfg.objective == "erm"
        else losses.sd_annealed_loss(
          nll,
          logits,
          step,
          sd_coef=hparams["sd_lambda"],
          anneal_steps=hparams["anneal_steps"],
          rescale=cfg.sd_rescale,
        )
      )
      if cfg.l2_weight:  # static, so the released ERM/SD programs stay exactly as they were
        loss = loss + losses.l2_penalty(params, 2.0 * hparams["l2_weight"])
    else:
      loss = losses.invariance_loss(
        risks,
        irm_pen if cfg.objective == "irm" else rex_pen,
        params,
        step,
        penalty_weight=hparams["penalty_weight"],
        anneal_steps=hparams["anneal_steps"],
        l2_weight=hparams["l2_weight"],
        risk_form="sum" if (cfg.objective == "rex" and released_rex) else "mean",
      )
    test_logits = apply_fn({"params": jax.lax.stop_gradient(params)}, batch["test_x"], train=False)
    metrics = {
      "train_nll": nll,
      "train_acc": losses.accuracy_binary(logits, y, kind="01"),
      "irm_penalty": irm_pen,
      "rex_penalty": rex_pen,
      "test_acc": losses.accuracy_binary(test_logits, batch["test_y"], kind="01"),
    }
    return loss, metrics

  return objective


def build_data(cfg, data_dir: str | None = None, *, mnist=None):
  """``(batch, variants)`` as the model sees them (NumPy; see
  :func:`gs_jax.data.colored_mnist.model_inputs`). With ``resample_data`` every array has a
  leading restart axis (restart r: data seed ``data_seed + r``)."""
  if mnist is None:
    mnist = data.load_mnist_train(data_dir)

  def inputs(seed):
    envs = data.subset(data.colored_mnist(seed, mnist=mnist), cfg.n_train, cfg.n_test)
    return data.model_inputs(envs, cfg.grayscale)

  if not cfg.resample_data:
    return inputs(cfg.data_seed)
  per = [inputs(cfg.data_seed + r) for r in range(cfg.seeds)]
  batch = {k: np.stack([b[k] for b, _ in per]) for k in per[0][0]}
  variants = {
    name: tuple(np.stack([v[name][i] for _, v in per]) for i in range(2)) for name in per[0][1]
  }
  return batch, variants


def train_restarts(
  cfg, batch, *, progress: bool = True, checkpoint=None, on_chunk=None, desc: str | None = None
):
  """Trains every restart in one compiled program; returns ``(states, history)`` with
  ``history[metric]`` of shape (seeds, steps). ``checkpoint``/``on_chunk``: see
  :func:`gs_jax.train.make_seed_trainer` (a killed run resumes and ends bit-identical)."""
  model, tx = model_of(cfg), optimizer_of(cfg)
  shared = not cfg.resample_data
  init = train.make_seed_init(model, tx, shared_batch=shared)
  trainer = train.make_seed_trainer(
    model.apply, tx, make_objective(cfg, model.apply), shared_batch=shared, chunk=cfg.chunk
  )
  batch = jax.tree_util.tree_map(jnp.asarray, batch)
  # Initial parameters do not depend on the batch: initialise on two examples.
  states = init(init_keys(cfg), {"x": batch["x"][..., :2, :]})
  return trainer(
    states,
    batch,
    hparams_of(cfg),
    cfg.steps,
    desc=desc,
    progress=progress,
    checkpoint=checkpoint,
    on_chunk=on_chunk,
  )


def evaluate(cfg, params, batch, variants) -> dict:
  """Per restart (arrays of shape (seeds,)): the final model's ``train_acc`` and ``test_acc``,
  and per Figure-3 variant its ``accuracy`` and mean binary prediction ``entropy`` (nats)."""
  apply_fn = model_of(cfg).apply
  axis = 0 if cfg.resample_data else None

  @jax.jit
  def one(p, x, y):
    logits = apply_fn({"params": p}, x, train=False)
    return (
      losses.accuracy_binary(logits, y, kind="01"),
      jnp.mean(losses.binary_entropy_from_logits(logits)),
    )

  # Restarts split over the devices as in training (train.seed_sharding), with one process or
  # many: the same programs, so the same numbers.
  sharding = train.seed_sharding(len(jax.tree_util.tree_leaves(params)[0]))
  data_sharding = sharding if cfg.resample_data else train.replicated(sharding.mesh)
  params = distributed.to_global(params, sharding)
  vmapped = jax.vmap(one, in_axes=(0, axis, axis))

  def every(x, y):
    x, y = distributed.to_global((np.asarray(x), np.asarray(y)), data_sharding)
    return distributed.to_host(vmapped(params, x, y))

  out = {
    "train_acc": every(batch["x"], batch["y"])[0],
    "test_acc": every(batch["test_x"], batch["test_y"])[0],
  }
  out["variants"] = {}
  for name, (x, y) in variants.items():
    acc, ent = every(x, y)
    out["variants"][name] = {"accuracy": acc, "entropy": ent}
  return out


def format_table(history: dict, log_every: int, columns=TABLE_COLUMNS) -> str:
  """The released progress table (``pretty_print``: 13-wide columns, 5 decimals) of a
  seed-averaged history, every ``log_every`` steps."""
  names = ["step"] + [c.replace("_", " ") for c in columns]
  rows = ["   ".join(n.ljust(13) for n in names)]
  for t in range(0, len(history[columns[0]]), log_every):
    vals = [str(t).ljust(13)] + [f"{history[c][t]:.5f}".ljust(13) for c in columns]
    rows.append("   ".join(vals))
  return "\n".join(rows)

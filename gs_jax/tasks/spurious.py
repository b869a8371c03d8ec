"""Training under a spurious correlation with groups ``g = 2y + a``: ERM, SD with per-class
targets, Group DRO and LfF as one compiled step each, and per-group evaluation
(docs/protocols.md §3.5; CelebA, Table 3).

Every method trains one logit ŷ with the logistic loss ``ℓ_i = softplus(−ŷ_i·(2y_i−1))``:

* ``erm``: ``mean_B ℓ``;
* ``sd``: ``mean_B ℓ + Σ_c λ_c·mean_{i∈B, y_i=c}(ŷ_i − γ_c)²`` (released ``--mode spw3``,
  :func:`gs_jax.losses.sd_penalty_with_targets`);
* ``group_dro``: ``Σ_g q_g ℓ_g`` with ``ℓ_g`` the batch mean of group g and q updated online
  before the step (:func:`gs_jax.losses.group_dro_update`, DRO ``loss.py``);
* ``lff``: a biased network trained with GCE (q = 0.7) beside the debiased one trained with
  ``mean_B W_i ℓ_i``, ``W_i = ℓ̄_B/(ℓ̄_B + ℓ̄_D)`` from per-example EMAs of both networks'
  losses, normalised per class (:func:`gs_jax.losses.lff_weights`); the loss is
  ``mean GCE_B + mean W·ℓ_D``, both networks update in the same compiled step.

The step sees ``batch["y"]`` as an int (B, 2) array ``[g, row]`` (group and training-set row,
the row indexes LfF's EMAs), so that :func:`gs_jax.train.fit_minibatch` can gather it.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gs_jax.nn import losses
from gs_jax import training as train
from gs_jax.data import stream
from gs_jax.base.batching import batched

METHODS = ("erm", "sd", "group_dro", "lff")
NUM_GROUPS = 4


@flax.struct.dataclass
class MethodState:
  """The training state of every method (unused parts stay at their initial values).

  Attributes:
    step, key: as :class:`gs_jax.train.TrainState` (read by ``fit_minibatch``'s preprocess).
    net: the network that is evaluated (LfF: the debiased one).
    biased: LfF's biased network (``None`` for the other methods).
    q: Group DRO's group weights, (G,), initially uniform.
    ema: LfF's per-example EMA losses of (biased, debiased), (2, n); ``seen`` (n,) flags.
  """

  step: jax.Array
  key: jax.Array
  net: train.TrainState
  biased: Any
  q: jax.Array
  ema: jax.Array
  seen: jax.Array


def init_state(
  method: str, model, tx, key, x_example, n_train: int, variables=None, biased_variables=None
) -> MethodState:
  """Fresh state; ``variables`` (e.g. pretrained, :func:`gs_jax.models.load_pretrained`)
  replace the initialised ones of the main network, ``biased_variables`` LfF's biased one."""

  def make(k, v):
    if v is None:
      return train.init_state(model, tx, k, x_example)
    # the state train.init_state would give, with v's variables (and no discarded init: an
    # eager init of a ResNet-50 takes minutes on XLA:CPU)
    return train.make_state(dict(v), tx, jax.random.split(k)[1])

  k_net, k_biased, k_state = jax.random.split(key, 3)
  net = make(k_net, variables)
  biased = make(k_biased, biased_variables) if method == "lff" else None
  return MethodState(
    step=jnp.zeros((), jnp.int32),
    key=k_state,
    net=net,
    biased=biased,
    q=jnp.full(NUM_GROUPS, 1.0 / NUM_GROUPS, jnp.float32),
    ema=jnp.zeros((2, n_train), jnp.float32),
    seen=jnp.zeros(n_train, jnp.float32),
  )


def _apply_update(tx, s: train.TrainState, grads, model_state):
  updates, opt_state = tx.update(grads, s.opt_state, s.params)
  return s.replace(
    step=s.step + 1,
    params=optax.apply_updates(s.params, updates),
    opt_state=opt_state,
    model_state=model_state,
  )


def make_step(
  method: str,
  model,
  tx,
  *,
  y_train,
  train_counts=None,
  sd_lambdas=(0.1, 0.1),
  sd_gammas=(0.44, 2.5),
  dro_step_size=0.01,
  dro_adjustments=None,
  gce_q=0.7,
  ema_alpha=0.7,
):
  """``step(state, batch, hparams) -> (state, metrics)`` of ``method`` (module docstring).

  ``y_train`` (n,) are all training labels (LfF's per-class maxima); ``train_counts`` the
  training-set group sizes (Group DRO's ``C/√n_g``). Metrics: ``loss``, ``nll`` (mean
  logistic loss of the evaluated network) and the batch accuracy of every group
  (``acc_g0`` … ``acc_g3``; NaN-free: an absent group shows 0).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")
  y_train = jnp.asarray(y_train, jnp.int32)

  def step(state: MethodState, batch, hparams):
    del hparams
    g, rows = batch["y"][:, 0], batch["y"][:, 1]
    y = g // 2

    def loss_fn(params, params_b):
      logits, model_state = train.apply_model(
        model, state.net, batch["x"], train=True, params=params
      )
      per = losses.logistic_loss(logits, y, kind="01", reduction="none")
      extra = {"q": state.q, "ema": state.ema, "seen": state.seen, "model_state_b": None}
      if method == "erm":
        loss = per.mean()
      elif method == "sd":
        loss = per.mean() + losses.sd_penalty_with_targets(logits, y, sd_lambdas, sd_gammas)
      elif method == "group_dro":
        group_losses, _ = losses.group_mean_losses(per, g, NUM_GROUPS)
        loss, extra["q"] = losses.group_dro_update(
          state.q,
          group_losses,
          step_size=dro_step_size,
          adjustments=dro_adjustments,
          train_counts=train_counts,
        )
      else:  # lff
        logits_b, extra["model_state_b"] = train.apply_model(
          model, state.biased, batch["x"], train=True, params=params_b
        )
        per_b = losses.logistic_loss(logits_b, y, kind="01", reduction="none")
        ema, seen = losses.ema_update(
          state.ema, state.seen, rows, jax.lax.stop_gradient(jnp.stack([per_b, per])), ema_alpha
        )
        w = losses.lff_weights(ema[0], ema[1], y_train, rows)
        extra.update(ema=ema, seen=seen)
        loss = losses.generalized_cross_entropy(logits_b, y, gce_q) + jnp.mean(
          jax.lax.stop_gradient(w) * per
        )
      correct = (logits * (2 * y - 1) > 0).astype(jnp.float32)
      hits, counts = losses.group_mean_losses(correct, g, NUM_GROUPS)
      metrics = {"nll": per.mean(), **{f"acc_g{k}": hits[k] for k in range(NUM_GROUPS)}}
      return loss, (metrics, model_state, extra)

    params_b = state.biased.params if method == "lff" else None
    (loss, (metrics, model_state, extra)), (grads, grads_b) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True
    )(state.net.params, params_b)
    net = _apply_update(tx, state.net, grads, model_state)
    biased = state.biased
    if method == "lff":
      biased = _apply_update(tx, biased, grads_b, extra["model_state_b"])
    new = state.replace(
      step=state.step + 1,
      net=net,
      biased=biased,
      q=extra["q"],
      ema=extra["ema"],
      seen=extra["seen"],
    )
    return new, {"loss": loss, **metrics}

  return step


def make_evaluator(model, preprocess, batch_size: int = 500):
  """``evaluate(variables, x, g) -> {"correct": (G,), "n": (G,)}`` (ints): per-group counts
  of correct predictions in eval mode, ``sign(ŷ) == 2y − 1`` (a zero logit is wrong, as the
  released code). ``x``: uint8 images, or a :class:`gs_jax.data.stream.Stream` of them."""

  @jax.jit
  def logits_fn(variables, xb):
    return model.apply(variables, preprocess(xb), train=False)

  def evaluate(variables, x, g):
    g = np.asarray(g)
    if stream.is_stream(x):  # fixed-shape batches in order, the last padded with row 0
      rows = np.arange(-(-len(g) // batch_size) * batch_size)
      rows[len(g) :] = 0
      logits = np.concatenate(
        [
          np.asarray(logits_fn(variables, jnp.asarray(xb)))
          for xb in x.batches(rows.reshape(-1, batch_size))
        ]
      )[: len(g)]
    else:
      run = batched(lambda xb, yb, key: logits_fn(variables, xb), batch_size)
      logits = np.asarray(run(x, g, jax.random.PRNGKey(0)))
    ok = logits * (2 * (g // 2) - 1) > 0
    return {
      "correct": np.bincount(g, weights=ok, minlength=NUM_GROUPS).astype(int).tolist(),
      "n": np.bincount(g, minlength=NUM_GROUPS).tolist(),
    }

  return evaluate


def summarize(counts: dict) -> dict:
  """Average accuracy (over all examples), per-group accuracies with sizes and Wilson 95%
  intervals, and the worst group, from :func:`make_evaluator`'s counts."""
  from gs_jax.base.stats import wilson_interval

  correct, n = np.asarray(counts["correct"]), np.asarray(counts["n"])
  groups = [
    {
      "group": k,
      "y": k // 2,
      "a": k % 2,
      "n": int(n[k]),
      "correct": int(correct[k]),
      "acc": float(correct[k] / n[k]) if n[k] else None,
      "ci95": list(wilson_interval(int(correct[k]), int(n[k]))),
    }
    for k in range(NUM_GROUPS)
  ]
  present = [x for x in groups if x["n"]]
  worst = min(present, key=lambda x: x["acc"])
  return {
    "average": float(correct.sum() / n.sum()),
    "worst_group": worst["acc"],
    "worst_group_id": worst["group"],
    "worst_group_n": worst["n"],
    "worst_group_ci95": worst["ci95"],
    "groups": groups,
  }

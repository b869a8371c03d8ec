"""Train state, optimizers and the pure ``train_step``; full-batch training as one ``lax.scan``.

The pieces compose as::

    tx = make_optimizer("sgd", learning_rate=1e-2, momentum=0.9)
    step = make_train_step(model, tx, objective)           # pure: (state, batch, hp) -> ...
    state, metrics = fit(step, state, batch, hparams, num_steps=1000)

An *objective* is ``objective(logits, batch, params, step, hparams) -> (loss, metrics)``:
``batch`` is a dict of arrays (``"x"`` is fed to the model), ``hparams`` a pytree of scalars
(e.g. ``{"sd_lambda": 0.003}``) that may differ between vmapped runs without recompiling, and
``metrics`` a dict of scalars recorded at every step (:mod:`gs_jax.training.objectives`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


Objective = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  Attributes:
    step: number of updates applied so far.
    params: the ``"params"`` collection.
    opt_state: optax state.
    model_state: the other variable collections (e.g. ``{"batch_stats": …}``); ``{}`` if none.
    key: PRNG key for stochastic layers; step ``t`` uses ``fold_in(key, t)``.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  key: jax.Array

  def variables(self):
    return {"params": self.params, **self.model_state}


def make_optimizer(
  name: str = "sgd",
  learning_rate: float | optax.Schedule = 1e-2,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  nesterov: bool = False,
) -> optax.GradientTransformation:
  """SGD(+momentum) or Adam with PyTorch's *coupled* weight decay.

  PyTorch's ``SGD``/``Adam`` with ``weight_decay=wd`` add ``wd·θ`` to the gradient before the
  momentum / moment estimates, i.e. they minimise ``loss + (wd/2)‖θ‖²`` (see
  :func:`gs_jax.losses.l2_penalty`); ``optax.add_decayed_weights`` placed first does the same.
  PyTorch's SGD momentum (``v ← μv + g; θ ← θ − lr·v``) is optax's ``sgd(lr, momentum)``.
  """
  if name == "sgd":
    opt = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
  elif name == "adam":
    opt = optax.adam(learning_rate)
  else:
    raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {name!r}")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
  return optax.chain(optax.add_decayed_weights(weight_decay), opt) if weight_decay else opt


def make_state(variables, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
  """The state at step 0 for given ``variables`` (``{"params": …, other collections…}``).

  For initial parameters that are not a module's ``init`` (e.g. built from features at
  initialisation, :class:`gs_jax.models.FeatureScaledNet`); ``key`` is the state's PRNG key.
  """
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    model_state=model_state,
    key=key,
  )


def init_state(
  model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, x: jax.Array
) -> TrainState:
  """Initialises parameters on an example input ``x`` (its batch size is irrelevant)."""
  init_key, state_key = jax.random.split(key)
  return make_state(dict(model.init(init_key, x, train=False)), tx, state_key)


def apply_model(model, state: TrainState, x: jax.Array, *, train: bool = False, params=None):
  """Logits of ``model`` (a Flax module or its ``apply``) at ``state`` (or at ``params``), and
  the updated model state.

  In train mode the dropout stream is ``fold_in(state.key, state.step)`` and batch statistics
  are recomputed from the batch; in eval mode stored statistics are used.
  """
  variables = {"params": state.params if params is None else params, **state.model_state}
  mutable = list(state.model_state) if (train and state.model_state) else False
  rngs = {"dropout": jax.random.fold_in(state.key, state.step)} if train else None
  apply_fn = model.apply if isinstance(model, nn.Module) else model
  out = apply_fn(variables, x, train=train, rngs=rngs, mutable=mutable)
  return out if mutable else (out, state.model_state)


def make_train_step(model, tx: optax.GradientTransformation, objective: Objective) -> Callable:
  """Returns the pure ``train_step(state, batch, hparams) -> (state, metrics)``.

  ``model`` is a Flax module or its ``apply`` (``apply(variables, x, train=, rngs=,
  mutable=)``).

  Not jitted by itself: it is meant to be traced inside ``jit``/``scan``/``vmap`` by the caller
  (:func:`fit`), so that one compiled program runs all steps and all seeds.
  """

  def train_step(state: TrainState, batch, hparams):
    def loss_fn(params):
      logits, model_state = apply_model(model, state, batch["x"], train=True, params=params)
      loss, metrics = objective(logits, batch, params, state.step, hparams)
      return loss, (metrics, model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
    )
    return new_state, {"loss": loss, **metrics}

  return train_step


def fit(train_step: Callable, state: TrainState, batch, hparams, num_steps: int):
  """Full-batch training: ``num_steps`` applications of ``train_step`` as one ``lax.scan``.

  Traceable, so it can be jitted and vmapped (see :func:`make_seed_trainer`).

  Returns:
    The final state and the per-step metrics, each of shape ``(num_steps, …)``.
  """
  return jax.lax.scan(lambda s, _: train_step(s, batch, hparams), state, None, length=num_steps)

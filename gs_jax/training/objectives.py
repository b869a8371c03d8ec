"""Training objectives ``objective(logits, batch, params, step, hparams) -> (loss, metrics)``
(:mod:`gs_jax.training.state`): the losses of :mod:`gs_jax.nn.losses` with their hyper-parameters."""

from __future__ import annotations


import jax.numpy as jnp

from gs_jax.nn import losses


def binary_objective(logits, batch, params, step, hparams):
  """Mean logistic loss on ±1 labels ``batch["y"]`` plus ``hparams["sd_lambda"]·mean(ŷ²)``.

  The objective of the two-moons experiments (docs/protocols.md §3.1); ``sd_lambda = 0`` is ERM. Weight
  decay lives in the optimizer (:func:`make_optimizer`). Records the data loss (without the SD
  term) and the training accuracy.
  """
  del params, step
  nll = losses.logistic_loss(logits, batch["y"], kind="pm1")
  loss = nll + losses.sd_penalty(logits, hparams.get("sd_lambda", 0.0))
  return loss, {"nll": nll, "accuracy": losses.accuracy_binary(logits, batch["y"], kind="pm1")}


def softmax_objective(logits, batch, params, step, hparams):
  """Mean softmax cross-entropy of integer labels ``batch["y"]`` plus
  ``hparams["sd_lambda"]·mean(ŷ²)`` over batch and classes.

  The objective of the CIFAR experiments (docs/protocols.md §3.3, §4: eq 17 in training form;
  ``sd_lambda = 0`` is ERM); with ``hparams["sd_coef"]`` also ``+ sd_coef·Σ ŷ²`` summed over
  batch and classes, the released Figure-2 form (= ``sd_lambda`` = sd_coef·B·C in the mean form
  at batch size B with C classes). Weight decay lives in the optimizer. Records the data loss
  (without the SD term) and the training accuracy.
  """
  del params, step
  nll = losses.softmax_cross_entropy(logits, batch["y"])
  loss = nll + losses.sd_penalty(logits, hparams["sd_lambda"])
  if "sd_coef" in hparams:  # the released form (docs/protocols.md §3.3): sd_coef·Σ_batch,logits ŷ²
    loss = loss + hparams["sd_coef"] * jnp.sum(jnp.square(logits))
  acc = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return loss, {"nll": nll, "accuracy": acc}


def softmax_ridge_objective(logits, batch, params, step, hparams):
  """:func:`softmax_objective` plus ``(c/2)‖θ − θ0‖²`` with ``c = hparams["ridge"]`` and θ0 =
  ``hparams["params0"]`` (:func:`gs_jax.losses.l2_penalty`): the coupled regime of eq 5 in the
  mean form, ``c = λ/n`` (:func:`gs_jax.losses.eq5_coefficient`; docs/protocols.md §3.7).
  Records the penalty as ``"ridge"``."""
  loss, metrics = softmax_objective(logits, batch, params, step, hparams)
  ridge = losses.l2_penalty(params, hparams["ridge"], hparams["params0"])
  return loss + ridge, {**metrics, "ridge": ridge}

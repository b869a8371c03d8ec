"""Training objectives: logistic / cross-entropy, weight decay and spectral decoupling.

Conventions (docs/protocols.md §4): training losses are *means* over examples and ``sd_lambda``
multiplies ``mean(ŷ²)`` over every logit entry, as in the authors' released code, so the
paper's λ values carry over unchanged. The theory (eq 5, eq 17; ``gs_jax.dual``) uses sums and
``λ/2``: for n examples, ``mean softplus(−yŷ) + sd_lambda·mean(ŷ²)`` equals
``(1/n)·[Σ softplus(−yŷ) + (λ/2)‖ŷ‖²]`` with ``λ = 2·sd_lambda``.

Every function here is pure and jit-able. Label checks run eagerly whenever the labels are
concrete (not traced), so bad input fails before compilation with a message naming it.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import _compat
from gs_jax.base.types import Array, Params, PyTree

LabelKind = Literal["01", "pm1"]


def binary_label_kind(y) -> LabelKind:
  """Says whether binary labels are {0,1} ("01") or ±1 ("pm1").

  Raises:
    ValueError: if ``y`` holds any value outside {0,1} and outside {−1,+1} (the message names
      the offending values), or is empty.
  """
  y = np.asarray(y)
  if y.size == 0:
    raise ValueError("binary labels are empty")
  values = np.unique(y)
  if np.all(np.isin(values, (0, 1))):
    return "01"
  if np.all(np.isin(values, (-1, 1))):
    return "pm1"
  bad = values[~np.isin(values, (-1, 0, 1))]
  if bad.size == 0:  # a mix of 0 and −1
    bad = values
  raise ValueError(
    f"binary labels must be all in {{0,1}} or all in {{-1,+1}}; got values {bad.tolist()}"
  )


def to_pm1(y, kind: LabelKind | None = None) -> jax.Array:
  """Maps {0,1} or ±1 labels to ±1 floats. ``kind`` is inferred (and checked) when omitted."""
  if kind is None:
    kind = binary_label_kind(y)
  y = jnp.asarray(y, jnp.float32)
  return 2.0 * y - 1.0 if kind == "01" else y


def _is_concrete(x) -> bool:
  """False for traced values (inside jit/vmap/grad), whose labels cannot be inspected."""
  return not _compat.is_tracer(x)


def _check_same_length(logits, y):
  if jnp.shape(logits) != jnp.shape(y):
    raise ValueError(f"logits shape {jnp.shape(logits)} does not match labels shape {jnp.shape(y)}")


def logistic_loss(logits, y, *, kind: LabelKind | None = None, reduction: str = "mean") -> Array:
  """Logistic loss ``softplus(−y·ŷ)`` (eq 5 without the ridge term).

  Written with softplus, so it is exact and finite for |ŷ| up to float range (no overflow at
  |ŷ| = 1e4). ``y`` is {0,1} or ±1; under ``jit`` pass ``kind`` (labels cannot be inspected
  while traced, and ``kind="pm1"`` is assumed).

  Args:
    logits: (n,) real-valued outputs ŷ.
    y: (n,) labels.
    kind: "01" or "pm1"; inferred from concrete labels when omitted.
    reduction: "mean" (training convention, §4), "sum" (theory, eq 5) or "none".
  """
  _check_same_length(logits, y)
  if kind is None:
    kind = binary_label_kind(y) if _is_concrete(y) else "pm1"
  per_example = jax.nn.softplus(-to_pm1(y, kind) * logits)
  return _reduce(per_example, reduction)


def softmax_cross_entropy(logits, labels, *, reduction: str = "mean") -> Array:
  """Cross-entropy ``−log softmax(ŷ)[label]`` for integer labels in [0, C)."""
  if jnp.ndim(logits) != 2 or jnp.shape(labels) != jnp.shape(logits)[:1]:
    raise ValueError(
      f"expected logits (n, C) and labels (n,); got {jnp.shape(logits)} and {jnp.shape(labels)}"
    )
  if _is_concrete(labels):
    lab = np.asarray(labels)
    bad = lab[(lab < 0) | (lab >= logits.shape[1]) | (lab != np.round(lab))]
    if bad.size:
      raise ValueError(
        f"class labels must be integers in [0, {logits.shape[1]}); got {np.unique(bad).tolist()}"
      )
  logp = jax.nn.log_softmax(logits)
  per_example = -jnp.take_along_axis(logp, jnp.asarray(labels, jnp.int32)[:, None], axis=1)[:, 0]
  return _reduce(per_example, reduction)


def sd_penalty(logits, sd_lambda) -> Array:
  """Spectral decoupling, training form: ``sd_lambda · mean(ŷ²)`` over all logit entries.

  The paper's eq 17 adds ``(λ/2)‖ŷ‖²`` to a *summed* loss; divided by n this is the term here
  with ``sd_lambda = λ/2`` (and for C logits per example, the mean also runs over classes).
  """
  return sd_lambda * jnp.mean(jnp.square(logits))


def sd_penalty_with_targets(logits, y, lambdas, gammas) -> Array:
  """SD with per-class targets: ``Σ_c λ_c · mean_{i: y_i=c} (ŷ_i − γ_c)²`` (docs/protocols.md §1).

  Used for CelebA with ``λ = (0.1, 0.1)`` and ``γ = (0.44, 2.5)`` for classes (0, 1). Classes
  absent from the batch contribute zero.

  Args:
    logits: (n,) outputs.
    y: (n,) integer class labels in [0, C).
    lambdas, gammas: length-C sequences.
  """
  _check_same_length(logits, y)
  lambdas = jnp.asarray(lambdas, jnp.float32)
  gammas = jnp.asarray(gammas, jnp.float32)
  if lambdas.shape != gammas.shape or lambdas.ndim != 1:
    raise ValueError(
      f"lambdas and gammas must be 1-D of equal length; got {lambdas.shape} and {gammas.shape}"
    )
  onehot = jax.nn.one_hot(y, lambdas.shape[0])  # (n, C)
  sq = jnp.square(logits[:, None] - gammas[None, :]) * onehot  # (n, C)
  counts = onehot.sum(0)
  per_class = sq.sum(0) / jnp.maximum(counts, 1.0)
  return jnp.sum(lambdas * per_class)


def l2_penalty(params: Params, weight_decay, params0: Params | None = None) -> Array:
  """``(weight_decay/2)·‖θ − θ0‖²`` over every leaf (weights and biases); θ0 = 0 by default.

  With θ0 = 0 its gradient ``weight_decay·θ`` is exactly what PyTorch's
  ``SGD(weight_decay=…)`` adds to the gradient before momentum ("coupled" L2);
  :func:`gs_jax.train.make_optimizer` applies it as ``optax.add_decayed_weights`` ahead of the
  optimizer, which is the same update. With ``params0`` (a pytree like ``params``) it is the
  ridge around the initialisation of eq 5 (docs/protocols.md §1, ``gs_jax.ntk.ridge_from_init``).
  """
  if params0 is not None:
    params = jax.tree_util.tree_map(jnp.subtract, params, params0)
  leaves = jax.tree_util.tree_leaves(params)
  return 0.5 * weight_decay * sum(jnp.sum(jnp.square(p)) for p in leaves)


def eq5_coefficient(lam: float, n: int) -> float:
  """The coefficient ``c`` of ``(c/2)‖θ − θ0‖²`` beside a *mean* loss over n examples that is
  eq 5's ``λ`` (docs/protocols.md §3.7, §4): ``Σ_i ℓ_i + (λ/2)‖θ − θ0‖² =
  n·[mean_i ℓ_i + (λ/2n)‖θ − θ0‖²]``, so ``c = λ/n`` — the same gradient up to the factor n,
  hence the same minimiser and, at learning rate η on the mean form, the dynamics of rate
  ``η/n`` on eq 5. Minibatch SGD adds ``c(θ − θ0)`` at every step and a minibatch mean at
  every step, so an epoch's summed update is ``(n/B)·`` the full-batch mean-form gradient
  whatever the batch size B: ``c`` does not depend on B (unlike the released SD form,
  ``λ = B·sd_coef``, §3.6). The same ``c`` as a coupled ``weight_decay`` pulls toward 0
  instead of θ0."""
  if n < 1:
    raise ValueError(f"n must be >= 1; got {n}")
  if not lam >= 0:
    raise ValueError(f"λ must be >= 0; got {lam}")
  return lam / n


def theory_objective(
  logits, batch: PyTree, params: Params, step, hparams: PyTree
) -> tuple[Array, dict[str, Array]]:
  """The objective of the theory (eq 5 / eq 17, sums and λ/2; docs/protocols.md §1):

    ``Σ_i softplus(−y_i (ŷ_i − ŷ0_i)) + (ridge/2)‖θ − θ0‖² + (sd/2)‖ŷ − ŷ0‖²``

  on centred logits ``ŷ − ŷ0``. Eq 5 is ``ridge = λ, sd = 0``; spectral decoupling (eq 17) is
  ``ridge = 0, sd = λ`` — both coefficients are the theory's λ (``gs_jax.dual``), not the
  mean-loss ``sd_lambda`` of the training experiments. A
  :data:`gs_jax.train.Objective`: ``batch`` holds ``"y"`` (±1) and optionally ``"logits0"``
  (ŷ at θ0; default 0) and ``"params0"`` (θ0; default 0); ``hparams`` holds ``"ridge"`` and
  ``"sd"``. Records the summed logistic loss ``"nll"``.
  """
  del step
  centred = logits - batch["logits0"] if "logits0" in batch else logits
  nll = logistic_loss(centred, batch["y"], kind="pm1", reduction="sum")
  loss = (
    nll
    + l2_penalty(params, hparams["ridge"], batch.get("params0"))
    + 0.5 * hparams["sd"] * jnp.sum(jnp.square(centred))
  )
  return loss, {"nll": nll}


def accuracy_binary(logits, y, *, kind: LabelKind | None = None) -> Array:
  """Fraction of examples with ``sign(ŷ) == y`` (a logit of exactly 0 counts as class −1/0)."""
  if kind is None:
    kind = binary_label_kind(y) if _is_concrete(y) else "pm1"
  return jnp.mean(jnp.where(logits > 0, 1.0, -1.0) == to_pm1(y, kind))


def _reduce(x, reduction):
  if reduction == "mean":
    return jnp.mean(x)
  if reduction == "sum":
    return jnp.sum(x)
  if reduction == "none":
    return x
  raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# Invariance objectives (IRM, V-REx) and annealed SD for Colored MNIST (docs/protocols.md §3.4).
# Annealing schedules are pure functions of the step index ``step`` = number of updates
# applied so far (the released code's loop variable), so they trace inside ``lax.scan``.


def env_risks(per_example, env, num_envs: int) -> Array:
  """Per-environment mean risks ``R_e = mean_{i: env_i = e} ℓ_i``, shape (num_envs,).

  Args:
    per_example: (n,) losses ℓ_i.
    env: (n,) integer environment ids in [0, num_envs).
    num_envs: number of environments (static). An empty environment has risk 0.
  """
  _check_same_length(per_example, env)
  env = jnp.asarray(env, jnp.int32)
  sums = jax.ops.segment_sum(per_example, env, num_segments=num_envs)
  counts = jax.ops.segment_sum(jnp.ones_like(per_example), env, num_segments=num_envs)
  return sums / jnp.maximum(counts, 1.0)


def irm_penalty(logits, y, env, num_envs: int, *, kind: LabelKind = "01") -> Array:
  """IRMv1 penalties ``P_e = (∂/∂w R_e(w·ŷ) |_{w=1})²``, shape (num_envs,).

  ``R_e`` is the mean logistic loss of environment ``e`` with every logit multiplied by a dummy
  scale ``w`` (Arjovsky et al. 2019, eq IRMv1; the released code's ``IRM_penalty``). All
  environments are handled by one ``jax.grad`` w.r.t. a vector of per-environment scales:
  ``R_e`` depends only on ``w_e``, so ``∂(Σ_e R_e)/∂w_e = ∂R_e/∂w_e``. Differentiable in the
  logits (training differentiates through this gradient). Closed form, for reference:
  ``∂R_e/∂w = mean_{i∈e} (σ(ŷ_i) − y_i)·ŷ_i`` for y ∈ {0,1}.
  """
  _check_same_length(logits, y)
  env = jnp.asarray(env, jnp.int32)

  def total_risk(scales):
    per_example = logistic_loss(logits * scales[env], y, kind=kind, reduction="none")
    return jnp.sum(env_risks(per_example, env, num_envs))

  return jnp.square(jax.grad(total_risk)(jnp.ones((num_envs,), logits.dtype)))


def vrex_penalty(risks) -> Array:
  """V-REx penalty: the (population) variance of the environment risks, ``mean (R_e − R̄)²``.

  For two environments this is ``(R_0 − R_1)²/4``; the REx authors' released Colored-MNIST
  code uses ``(R_0 − R_1)²`` (see :func:`invariance_loss`, ``risk_form="sum"``).
  """
  risks = jnp.asarray(risks)
  return jnp.mean(jnp.square(risks - jnp.mean(risks)))


def annealed_weight(step, anneal_steps, weight) -> Array:
  """Penalty weight schedule of the IRM/REx code: 1.0 while ``step < anneal_steps``, then
  ``weight``."""
  return jnp.where(step >= anneal_steps, weight, 1.0)


def invariance_loss(
  risks,
  penalty,
  params: Params,
  step,
  *,
  penalty_weight,
  anneal_steps,
  l2_weight,
  risk_form: str = "mean",
) -> Array:
  """The released IRM / V-REx training loss (Colored MNIST, docs/protocols.md §3.4).

  ``L = risk + l2_weight·Σ_leaves ‖θ‖² + w(step)·penalty``, divided by ``w(step)`` whenever
  ``w(step) > 1`` ("rescale the entire loss to keep gradients in a reasonable range"), where
  ``w`` is :func:`annealed_weight`. Note the L2 term is on the *loss*, not in the optimizer, and
  is rescaled with it; its weight multiplies ``‖θ‖²`` (not ``‖θ‖²/2``) and covers biases too.

  Args:
    risks: (E,) environment risks.
    penalty: scalar penalty (IRM: mean of :func:`irm_penalty`; V-REx: see ``risk_form``).
    params: parameter pytree (for the L2 term).
    step: updates applied so far.
    risk_form: "mean" → ``risk = mean_e R_e`` (IRM code); "sum" → ``Σ_e R_e`` (the REx code,
      whose penalty is ``(R_0 − R_1)²``).
  """
  if risk_form == "mean":
    risk = jnp.mean(risks)
  elif risk_form == "sum":
    risk = jnp.sum(risks)
  else:
    raise ValueError(f"risk_form must be 'mean' or 'sum'; got {risk_form!r}")
  w = annealed_weight(step, anneal_steps, penalty_weight)
  loss = risk + l2_penalty(params, 2.0 * l2_weight) + w * penalty
  return jnp.where(w > 1.0, loss / w, loss)


def sd_annealed_loss(nll, logits, step, *, sd_coef, anneal_steps, rescale: bool = True) -> Array:
  """SD as in the authors' released Colored-MNIST code (docs/protocols.md §3.4).

  ``rescale=True`` (released): ``nll + c·mean(ŷ²)`` for ``step < anneal_steps`` and
  ``c·(nll + mean(ŷ²))`` afterwards — after the switch the whole loss is multiplied by
  ``c = 2e-5``, a known oddity (Adam is almost invariant to the loss scale, but its ε = 1e-8 is
  not, and the *relative* weight of the SD term jumps from ``c`` to 1). ``rescale=False``
  (clean variant): ``nll + c·mean(ŷ²)`` at every step (:func:`sd_penalty`), with no annealing.
  """
  sd = jnp.mean(jnp.square(logits))
  if not rescale:
    return nll + sd_coef * sd
  return jnp.where(step >= anneal_steps, sd_coef * (nll + sd), nll + sd_coef * sd)


def binary_entropy_from_logits(logits) -> Array:
  """Binary entropy (nats) of ``p = σ(ŷ)``: ``p·softplus(−ŷ) + (1−p)·softplus(ŷ)``.

  Exact and finite for any logit (the released code's ``−p log p − (1−p) log(1−p+1e-8)``
  returns NaN once σ(ŷ) underflows to 0).
  """
  p = jax.nn.sigmoid(logits)
  return p * jax.nn.softplus(-logits) + (1.0 - p) * jax.nn.softplus(logits)


# ------------------------------------------------- robust training (CelebA, docs/protocols.md §3.5)


def group_mean_losses(per_example, groups, num_groups: int) -> tuple[Array, Array]:
  """``(ℓ_g, n_g)``: the mean of ``per_example`` over each group in the batch and the counts.

  As DRO's ``LossComputer.compute_group_avg``: an absent group has ``ℓ_g = 0`` (its mean is
  divided by ``max(n_g, 1)``).
  """
  onehot = jax.nn.one_hot(groups, num_groups, dtype=per_example.dtype)  # (n, G)
  counts = onehot.sum(0)
  return (onehot * per_example[:, None]).sum(0) / jnp.maximum(counts, 1.0), counts


def group_dro_update(
  q, group_losses, *, step_size, adjustments=None, train_counts=None
) -> tuple[Array, Array]:
  """One online Group DRO step (Sagawa et al. 2020, Alg. 1; DRO ``loss.py``
  ``compute_robust_loss``).

  ``ℓ̃_g = ℓ_g + C_g/√n_g`` when every ``C_g > 0`` (``n_g`` = the group's *training-set*
  size), else ``ℓ̃_g = ℓ_g``; then ``q ← q·exp(η_q·ℓ̃_g)`` and ``q ← q/Σq``; the loss is
  ``Σ_g q_g ℓ̃_g`` with the *new* q (no gradient through q). In the released code the
  adjusted loss aliases ``ℓ_g`` (an in-place ``+=``), so the robust loss it reports includes
  the adjustments too; they are constants and do not change the gradient.

  Returns ``(robust_loss, new_q)``.
  """
  adjusted = group_losses
  if adjustments is not None:
    adj = jnp.asarray(adjustments, group_losses.dtype)
    if train_counts is None:
      raise ValueError("group adjustments need the training-set group counts")
    bonus = adj / jnp.sqrt(jnp.asarray(train_counts, group_losses.dtype))
    adjusted = jnp.where(jnp.all(adj > 0), group_losses + bonus, group_losses)
  q = q * jnp.exp(step_size * jax.lax.stop_gradient(adjusted))
  q = q / q.sum()
  return jnp.dot(adjusted, jax.lax.stop_gradient(q)), q


def generalized_cross_entropy(logits, y, q: float = 0.7, *, reduction: str = "mean") -> Array:
  """Generalized cross-entropy (Zhang & Sabuncu 2018) on one logit: ``(1 − p_y^q)/q`` with
  ``p_y = σ(ŷ·(2y−1))``, ``y`` in {0,1}. LfF (Nam et al. 2020) trains its biased model with it,
  q = 0.7. Its gradient is ``p_y^q · ∇(−log p_y)``: confident (easy) examples weigh more. (The
  released LfF code uses the surrogate ``q·p_y^q·CE`` with ``p_y^q`` detached, whose gradient
  is q times this one.)"""
  log_p = -jax.nn.softplus(-to_pm1(y, "01") * logits)
  return _reduce((1.0 - jnp.exp(q * log_p)) / q, reduction)


def ema_update(ema, seen, idx, values, alpha: float) -> tuple[Array, Array]:
  """Per-example moving average as LfF's ``EMA``: at rows ``idx``,
  ``m ← α·m + (1 − α·seen)·v`` (the first update sets ``m = v``), then ``seen = 1``.
  ``ema`` is (..., n) (e.g. both models' losses stacked), ``values`` (..., B)."""
  s = seen[idx]
  new = alpha * ema[..., idx] + (1.0 - alpha * s) * values
  return ema.at[..., idx].set(new), seen.at[idx].set(1.0)


def lff_weights(
  ema_biased, ema_debiased, y_all, idx, num_classes: int = 2, eps: float = 1e-8
) -> Array:
  """LfF's relative-difficulty weights ``W = ℓ_B/(ℓ_B + ℓ_D + ε)`` for the rows ``idx``, where
  each model's EMA loss is first divided by its maximum over all training examples of the same
  class (LfF ``train.py``: ``loss /= ema.max_loss(label)``)."""

  def normalised(ema):
    per_class_max = jnp.stack(
      [jnp.max(jnp.where(y_all == c, ema, -jnp.inf)) for c in range(num_classes)]
    )
    return ema[idx] / jnp.maximum(per_class_max[y_all[idx]], eps)

  lb, ld = normalised(ema_biased), normalised(ema_debiased)
  return lb / (lb + ld + eps)

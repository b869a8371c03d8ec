"""Measurements taken during training inside the compiled loop (``lax.cond`` on the step), and
gradient ascent on a field (the adversarial/boundary probes of the two-moons experiments)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


PROBE = "probe"


def probe_schedule(total: int, every: int, early: int = 0) -> np.ndarray:
  """Sorted training steps for :func:`with_probe`: every multiple of ``every`` up to
  ``total``, plus ``early`` steps log-spaced in [1, ``every``) (rounded, duplicates merged),
  for dynamics that move fastest at the start of training."""
  if every < 1 or early < 0:
    raise ValueError(f"every must be >= 1 and early >= 0; got {every}, {early}")
  steps = np.arange(every, total + 1, every)
  if early and every > 1:
    steps = np.concatenate([np.geomspace(1, every - 1, early).round().astype(int), steps])
  return np.unique(steps)


def _probe_hits(step, every):
  """Whether ``step`` is a probe step: a multiple of int ``every``, or one of its steps."""
  if isinstance(every, (int, np.integer)):
    return step % every == 0
  sched = jnp.asarray(every)
  i = jnp.clip(jnp.searchsorted(sched, step), 0, len(every) - 1)
  return sched[i] == step


def _check_every(every):
  if isinstance(every, (int, np.integer)):
    if every < 1:
      raise ValueError(f"every must be >= 1; got {every}")
    return int(every)
  steps = np.asarray(every, np.int64)
  if steps.ndim != 1 or not len(steps) or steps[0] < 1 or np.any(np.diff(steps) <= 0):
    raise ValueError(
      f"every must be an int >= 1 or a non-empty increasing sequence of steps >= 1; got {every!r}"
    )
  return steps


def with_probe(train_step: Callable, probe: Callable, every) -> Callable:
  """``train_step`` that also records ``probe(state, hparams["probe"])`` after every
  ``every``-th update (``every`` an int) or after the updates listed in ``every`` (an
  increasing sequence of steps, e.g. :func:`probe_schedule`), inside the compiled step.

  The probe (e.g. the responses ``z(t) = U^T Y (ŷ_t − ŷ_0)`` on a fixed set of training
  examples, :func:`gs_jax.ntk.responses`) runs under ``lax.cond`` on the step count after the
  update, so a scanned loop (:func:`make_epoch_runner` with ``scan=True``) never
  leaves its compiled call; on the other steps the metric holds NaN. Its inputs travel in
  ``hparams["probe"]`` (traced arguments, not constants baked into the program). The value
  appears as ``metrics[PROBE]``, stacked per step; :func:`fit_minibatch` leaves it out of the
  epoch means and :func:`probe_rows` picks out the recorded steps.
  """
  every = _check_every(every)

  def step(state, batch, hparams):
    state, metrics = train_step(state, batch, hparams)
    data = hparams[PROBE]
    shape = jax.eval_shape(probe, state, data)
    skip = lambda s, d: jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shape)
    value = jax.lax.cond(_probe_hits(state.step, every), probe, skip, state, data)
    return state, {**metrics, PROBE: value}

  return step


def probe_rows(metrics, last_step: int, every) -> list:
  """``[(step, value), …]`` for the recorded steps of one chunk's stacked ``metrics[PROBE]``
  (:func:`with_probe`, same ``every``); ``last_step`` is the step count after the chunk."""
  every = _check_every(every)
  values = np.asarray(metrics[PROBE])
  first = last_step - len(values) + 1
  steps = np.arange(first, last_step + 1)
  hit = steps % every == 0 if isinstance(every, int) else np.isin(steps, every)
  return [(int(s), values[s - first]) for s in steps[hit]]


def field_ascent(
  field: Callable,
  x0,
  step_size,
  num_steps: int,
  *,
  project: Callable | None = None,
  observe: Callable | None = None,
  every: int = 1,
):
  """Fixed-step Euler iteration ``x_{t+1} = P(x_t + η F(x_t))`` of the flow ``ẋ = F(x)``.

  Plain gradient ascent when ``F = ∇ψ`` (e.g. the dual eq 8 with ``F`` of eq 9,
  ``gs_jax.dual.vector_field``), with an optional projection ``P`` (e.g. a clip into the
  domain). Not an optax/params loop: ``x`` is any array (pytree) and ``F`` a vector field
  on it. Traceable (one ``lax.scan``); jit it at the call site.

  Args:
    field: ``F(x)``, same structure as ``x``.
    x0: starting point.
    step_size: η.
    num_steps: number of steps T ≥ 0.
    project: ``P`` applied after every step (default: none).
    observe: ``observe(x)`` recorded at ``t = 0, every, 2·every, …`` (≤ T).
    every: recording interval (≥ 1).

  Returns:
    ``x_T``, or ``(x_T, observed)`` when ``observe`` is given, with ``observed`` stacked
    along a leading axis of length ``T // every + 1``.
  """
  if every < 1 or num_steps < 0:
    raise ValueError(
      f"need every >= 1 and num_steps >= 0; got every={every}, num_steps={num_steps}"
    )
  project = project or (lambda x: x)

  def step(_, x):
    return project(jax.tree_util.tree_map(lambda a, g: a + step_size * g, x, field(x)))

  def block(x, _):
    x = jax.lax.fori_loop(0, every, step, x)
    return x, observe(x) if observe is not None else None

  x, seen = jax.lax.scan(block, x0, None, length=num_steps // every)
  x = jax.lax.fori_loop(0, num_steps % every, step, x)
  if observe is None:
    return x
  first = jax.tree_util.tree_map(lambda a: a[None], observe(x0))
  return x, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, seen)

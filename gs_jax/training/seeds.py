"""Many seeds (or sweep points) trained together: ``vmap`` over stacked states, sharded over
devices, as one compiled program per chunk of steps."""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
import optax

from gs_jax.base import distributed
from gs_jax.training.sharding import replicated
from gs_jax.training.state import (
  Objective,
  TrainState,
  apply_model,
  fit,
  init_state,
  make_train_step,
)


def seed_sharding(num_seeds: int, devices=None) -> jax.sharding.NamedSharding:
  """Splits a leading seed axis of length ``num_seeds`` over as many of ``devices`` (default:
  all devices, of every process in a multi-process run) as divide it; every seed's
  computation then runs on one device. Over several processes, each gets the same number
  of devices (``num_seeds`` must be a multiple of the process count: ValueError otherwise).

  On CPU, ``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` (before JAX's first
  computation; the experiment CLIs do it) makes one device per core, so independent seeds
  train on all cores in parallel (1.7× on 2 cores for the two-moons net).
  """
  devices = jax.devices() if devices is None else list(devices)
  procs = sorted({d.process_index for d in devices})
  if len(procs) > 1:
    # Every process must hold seeds (a process without a shard cannot take part): the same
    # number k of devices from each, k·P dividing num_seeds.
    per = {p: [d for d in devices if d.process_index == p] for p in procs}
    most = min(len(v) for v in per.values())
    ks = [k for k in range(1, most + 1) if num_seeds % (k * len(procs)) == 0]
    if not ks:
      raise ValueError(
        f"{num_seeds} seeds cannot be split over {len(procs)} processes: use a "
        f"multiple of {len(procs)} seeds (--seeds), or fewer processes"
      )
    chosen = [d for p in procs for d in per[p][: max(ks)]]
  else:
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    chosen = devices[:count]
  mesh = jax.sharding.Mesh(np.asarray(chosen), ("seeds",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def make_seed_init(
  model: nn.Module, tx: optax.GradientTransformation, *, shared_batch: bool = False
) -> Callable:
  """Returns jitted ``init(keys, batches) -> states``: :func:`init_state` vmapped over seeds.

  ``batches`` as in :func:`make_seed_trainer` (only ``batches["x"]``'s shape is used).
  """

  # Runs once per trainer: at XLA's lowest optimisation level it compiles in ~0.2 s instead
  # of ~0.7 s (the PRNG code dominates), a quarter of a Figure-1 run. Without LLVM's
  # multiply-add contraction the initial values can differ from `init_state`'s (compiled at
  # the default level) in the last bit (≤ 6e-8 for the two-moons net).
  @functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
  def init_all(keys, batches):
    x = batches["x"] if shared_batch else batches["x"][0]
    return jax.vmap(lambda k: init_state(model, tx, k, x))(keys)

  return init_all


def make_seed_trainer(
  apply_fn,
  tx: optax.GradientTransformation,
  objective: Objective,
  *,
  shared_batch: bool = False,
  chunk: int = 250,
  devices=None,
) -> Callable:
  """Builds ``train(states, batches, hparams, num_steps, …)`` for many seeds at once.

  ``apply_fn`` is a Flax module's ``apply`` (or the module). All seeds train in one compiled
  program: :func:`fit` is ``vmap``-ed over the seed axis (the released code trains seeds one
  after another in Python), and the seed axis is split over ``devices`` (default: all devices
  of all processes; see :func:`seed_sharding`). In a multi-process run every process passes
  the same (host) ``states`` and ``batches``, places only its own seeds, and gets every seed's
  states and history back as NumPy arrays (all-gathered). The initial ``states`` are
  explicit (e.g. from :func:`make_seed_init`). Steps run in compiled chunks of ``chunk`` scan
  steps so that a tqdm bar can advance between them; the chunk program is compiled once per
  chunk length and reused across calls (``hparams`` are traced and do not recompile).

  Args:
    shared_batch: if True, ``batches`` has no seed axis and all seeds see the same data;
      otherwise every array in ``batches`` has a leading seed axis (S, n, …).

  The returned function takes ``states`` (leading (S,) axis), ``batches`` (dict with
  ``"x"``), ``hparams`` (pytree of scalars shared by the seeds), ``num_steps``, and optional
  ``desc``, ``progress`` (False hides the bar), ``checkpoint`` (a
  :class:`gs_jax.checkpoint.Checkpointer`: the run restores its latest checkpoint and
  continues, and saves at chunk boundaries; chunks start at multiples of ``chunk``, so a
  resumed run computes exactly what an uninterrupted one does) and ``on_chunk(done, hist)``
  (called after every chunk with the steps done and that chunk's metrics, e.g. to append to a
  metrics log). It returns ``(states, history)``: ``history`` holds every metric at every
  step, shape (S, num_steps).
  """
  from tqdm.auto import tqdm

  train_step = make_train_step(apply_fn, tx, objective)
  batch_axis = None if shared_batch else 0

  @functools.partial(jax.jit, static_argnums=3)
  def run_chunk(states, batches, hparams, length):
    return jax.vmap(lambda s, b: fit(train_step, s, b, hparams, length), in_axes=(0, batch_axis))(
      states, batches
    )

  def train(
    states,
    batches,
    hparams,
    num_steps: int,
    desc: str | None = None,
    progress: bool = True,
    checkpoint=None,
    on_chunk=None,
  ):
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1; got {num_steps}")
    num_seeds = len(jax.tree_util.tree_leaves(states)[0])
    sharding = seed_sharding(num_seeds, devices)
    if not shared_batch:
      batches = distributed.to_global(batches, sharding)
    elif jax.process_count() > 1:
      batches = distributed.to_global(batches, replicated(sharding.mesh))
    histories, done = [], 0
    restored = checkpoint.restore(states, with_history=True) if checkpoint else None
    if restored is not None:
      done, states, history, _ = restored
      if done > num_steps:
        raise ValueError(f"checkpoint at step {done} is past num_steps={num_steps}")
      histories.append(history)
    # Committing every chunk's input to the same sharding keeps one compiled chunk program.
    states = distributed.to_global(states, sharding)
    with tqdm(total=num_steps, initial=done, desc=desc, disable=not progress, leave=False) as bar:
      while done < num_steps:
        length = min(chunk, num_steps - done)
        states, hist = run_chunk(states, batches, hparams, length)
        states = jax.device_put(states, sharding)
        # Wait for the chunk, so that the bar shows computed (not just dispatched) steps.
        hist = distributed.to_host(hist)
        histories.append(hist)
        done += length
        bar.update(length)
        if on_chunk is not None:
          on_chunk(done, hist)
        if checkpoint is not None:
          if len(histories) > 1:  # keep one stacked history, so saving stays cheap
            histories = [_concat_histories(histories)]
          checkpoint.maybe_save(done, states, histories[0], force=done == num_steps)
    if jax.process_count() > 1:  # every seed on every process, for evaluation and results
      states = distributed.to_host(states)
    return states, _concat_histories(histories)

  return train


def objective_at(
  apply_fn,
  objective: Objective,
  states: TrainState,
  batches,
  hparams,
  *,
  shared_batch: bool = False,
):
  """Logits, objective value and gradient norm ``‖∇θ objective‖₂`` at every seed's state.

  The end point of a full-batch run (models in eval mode) and its convergence check; the
  history of :func:`make_seed_trainer` holds the metrics *before* each update instead.
  ``states``/``batches`` as in :func:`make_seed_trainer`. Returns three arrays with a
  leading seed axis: logits (S, n, …), loss (S,), gradient norm (S,).
  """

  def one(state, batch):
    def loss_fn(params):
      logits, _ = apply_model(apply_fn, state, batch["x"], params=params)
      return objective(logits, batch, params, state.step, hparams)[0], logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return logits, loss, optax.global_norm(grads)

  return jax.jit(jax.vmap(one, in_axes=(0, None if shared_batch else 0)))(states, batches)


def _concat_histories(histories):
  return jax.tree_util.tree_map(lambda *h: np.concatenate(h, axis=1), *histories)

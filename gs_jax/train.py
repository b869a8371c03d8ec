"""Train state, a pure ``train_step``, full-batch loops as ``lax.scan``, and ``vmap`` over seeds.

The pieces compose as::

    tx = make_optimizer("sgd", learning_rate=1e-2, momentum=0.9)
    step = make_train_step(model, tx, objective)           # pure: (state, batch, hp) -> ...
    states, history = fit_seeds(model, tx, objective, keys, batches, hparams, num_steps=1000)

An *objective* is ``objective(logits, batch, params, step, hparams) -> (loss, metrics)``:
``batch`` is a dict of arrays (``"x"`` is fed to the model), ``hparams`` a pytree of scalars
(e.g. ``{"sd_lambda": 0.003}``) that may differ between vmapped runs without recompiling, and
``metrics`` a dict of scalars recorded at every step.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gs_jax import distributed, losses
from gs_jax.data import stream

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


def make_optimizer(name: str = "sgd", learning_rate: float | optax.Schedule = 1e-2, *,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   nesterov: bool = False) -> optax.GradientTransformation:
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
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=model_state, key=key)


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
               x: jax.Array) -> TrainState:
  """Initialises parameters on an example input ``x`` (its batch size is irrelevant)."""
  init_key, state_key = jax.random.split(key)
  return make_state(dict(model.init(init_key, x, train=False)), tx, state_key)


def apply_model(model, state: TrainState, x: jax.Array, *, train: bool = False,
                params=None):
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


def make_train_step(model, tx: optax.GradientTransformation,
                    objective: Objective) -> Callable:
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

    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              model_state=model_state)
    return new_state, {"loss": loss, **metrics}

  return train_step


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


def fit(train_step: Callable, state: TrainState, batch, hparams, num_steps: int):
  """Full-batch training: ``num_steps`` applications of ``train_step`` as one ``lax.scan``.

  Traceable, so it can be jitted and vmapped (see :func:`make_seed_trainer`).

  Returns:
    The final state and the per-step metrics, each of shape ``(num_steps, …)``.
  """
  return jax.lax.scan(lambda s, _: train_step(s, batch, hparams), state, None,
                      length=num_steps)


def seed_sharding(num_seeds: int, devices=None) -> jax.sharding.NamedSharding:
  """Splits a leading seed axis of length ``num_seeds`` over as many of ``devices`` (default:
  all devices, of every process in a multi-process run) as divide it; every seed's
  computation then runs on one device. Over several processes, each gets the same number
  of devices (``num_seeds`` must be a multiple of the process count: ValueError otherwise).

  On CPU, ``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` (before JAX's first
  computation; the experiment CLIs do it) makes one device per core, so independent seeds
  train on all cores in parallel (1.7× on 2 cores for the two-moons net).
  """
  import numpy as np
  devices = jax.devices() if devices is None else list(devices)
  procs = sorted({d.process_index for d in devices})
  if len(procs) > 1:
    # Every process must hold seeds (a process without a shard cannot take part): the same
    # number k of devices from each, k·P dividing num_seeds.
    per = {p: [d for d in devices if d.process_index == p] for p in procs}
    most = min(len(v) for v in per.values())
    ks = [k for k in range(1, most + 1) if num_seeds % (k * len(procs)) == 0]
    if not ks:
      raise ValueError(f"{num_seeds} seeds cannot be split over {len(procs)} processes: use a "
                       f"multiple of {len(procs)} seeds (--seeds), or fewer processes")
    chosen = [d for p in procs for d in per[p][:max(ks)]]
  else:
    count = max(d for d in range(1, len(devices) + 1) if num_seeds % d == 0)
    chosen = devices[:count]
  mesh = jax.sharding.Mesh(np.asarray(chosen), ("seeds",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def make_seed_init(model: nn.Module, tx: optax.GradientTransformation, *,
                   shared_batch: bool = False) -> Callable:
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


def make_seed_trainer(apply_fn, tx: optax.GradientTransformation,
                      objective: Objective, *, shared_batch: bool = False,
                      chunk: int = 250, devices=None) -> Callable:
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
    return jax.vmap(lambda s, b: fit(train_step, s, b, hparams, length),
                    in_axes=(0, batch_axis))(states, batches)

  def train(states, batches, hparams, num_steps: int, desc: str | None = None,
            progress: bool = True, checkpoint=None, on_chunk=None):
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
    with tqdm(total=num_steps, initial=done, desc=desc, disable=not progress,
              leave=False) as bar:
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
          if len(histories) > 1:   # keep one stacked history, so saving stays cheap
            histories = [_concat_histories(histories)]
          checkpoint.maybe_save(done, states, histories[0], force=done == num_steps)
    if jax.process_count() > 1:   # every seed on every process, for evaluation and results
      states = distributed.to_host(states)
    return states, _concat_histories(histories)

  return train


def objective_at(apply_fn, objective: Objective, states: TrainState, batches, hparams, *,
                 shared_batch: bool = False):
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


def field_ascent(field: Callable, x0, step_size, num_steps: int, *,
                 project: Callable | None = None, observe: Callable | None = None,
                 every: int = 1):
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
    raise ValueError(f"need every >= 1 and num_steps >= 0; got every={every}, "
                     f"num_steps={num_steps}")
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


def _concat_histories(histories):
  import numpy as np
  return jax.tree_util.tree_map(lambda *h: np.concatenate(h, axis=1), *histories)


# ----------------------------------------------------------------------------- minibatch SGD

def data_mesh(devices=None):
  """A 1-D ``jax.sharding.Mesh`` over ``devices`` (default: all devices of all processes),
  axis "data"."""
  import numpy as np
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def replicated(mesh):
  """Sharding that puts a full copy on every device of ``mesh`` (params, whole datasets)."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharded(mesh):
  """Sharding that splits the leading (batch) axis over the "data" axis of ``mesh``."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


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
    raise ValueError("every must be an int >= 1 or a non-empty increasing sequence of "
                     f"steps >= 1; got {every!r}")
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
    skip = lambda s, d: jax.tree_util.tree_map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype),
                                               shape)
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


def make_epoch_runner(train_step: Callable, *, preprocess: Callable | None = None, mesh=None,
                      scan: bool = False):
  """Minibatch training over index chunks: one jitted step, called once per minibatch.

  Returns ``run(state, x_all, y_all, idx, hparams) -> (state, metrics)``: ``x_all``/``y_all``
  are a whole dataset (e.g. uint8 images, kept on device), ``idx`` has shape (k, B) and
  step j trains on ``x_all[idx[j]]`` (gathered inside the compiled step). ``preprocess(key,
  xb)`` (e.g. augmentation and the uint8 → float conversion) runs inside the compiled step with
  ``key = fold_in(fold_in(state.key, state.step), 1)``; it depends only on the state, so a run
  resumed from a checkpoint sees the same augmentations. With a ``mesh`` every minibatch is
  sharded over its "data" axis (the batch size must be divisible by the device count) and
  the rest is replicated; XLA inserts the cross-device reductions (gradients, batch-norm
  statistics), so the result equals the one-device result up to float reassociation.
  ``metrics`` are stacked per step, shape (k,).

  ``x_all`` may be a :class:`gs_jax.data.stream.Stream`: each batch comes from its background
  pipeline (:meth:`~gs_jax.data.stream.Stream.take`) and is fed to the same compiled step.

  In a multi-process run (``jax.process_count() > 1``) ``x_all``/``y_all`` stay on the host
  (NumPy) and every process feeds only its own rows of each global batch
  (:func:`gs_jax.distributed.feed_batch`); the compiled step is the same.

  The k steps are a Python loop over one compiled step rather than a ``lax.scan``: on XLA:CPU
  (jax 0.5) convolutions inside a while loop ran ~25× slower than the same step called
  directly (measured on the cpu CIFAR CNN), and the dispatch cost per call is negligible.
  With ``scan=True`` the k steps are one ``lax.scan`` in one compiled call instead: for
  batch-1 training (docs/protocols.md §3.3, released protocol) the per-call dispatch would
  dominate, and its network (:class:`gs_jax.models.NarLeNet`) avoids XLA convolutions.
  """
  def one_step(state, x_all, y_all, ids, hparams):
    return fed(state, x_all[ids], y_all[ids], hparams)

  def fed(state, xb, yb, hparams):
    if mesh is not None:
      xb = jax.lax.with_sharding_constraint(xb, batch_sharded(mesh))
      yb = jax.lax.with_sharding_constraint(yb, batch_sharded(mesh))
    if preprocess is not None:
      xb = preprocess(jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1), xb)
    return train_step(state, {"x": xb, "y": yb}, hparams)

  multi = mesh is not None and jax.process_count() > 1
  fed_jit = jax.jit(fed, donate_argnums=0)
  one = jax.jit(one_step, donate_argnums=0)

  @jax.jit
  def scanned(state, x_all, y_all, idx, hparams):
    return jax.lax.scan(lambda s, ids: one_step(s, x_all, y_all, ids, hparams), state, idx)

  def run(state, x_all, y_all, idx, hparams):
    if mesh is not None and idx.shape[1] % mesh.size:
      raise ValueError(f"batch size {idx.shape[1]} is not divisible by the {mesh.size} devices")
    if stream.is_stream(x_all):   # images decoded by a background pipeline, fed per batch
      if scan or multi:
        raise ValueError("a streamed dataset is fed per batch: not with scan=True or several "
                         "processes")
      history = []
      for ids in np.asarray(idx):
        state, metrics = fed_jit(state, jnp.asarray(x_all.take(ids)), y_all[ids], hparams)
        history.append(metrics)
      return state, jax.tree_util.tree_map(lambda *m: jnp.stack(m), *history)
    if scan:
      return scanned(state, x_all, y_all, jnp.asarray(idx), hparams)
    history = []
    for ids in idx:
      if multi:
        b = distributed.feed_batch(batch_sharded(mesh), {"x": x_all, "y": y_all}, ids)
        state, metrics = fed_jit(state, b["x"], b["y"], hparams)
      else:
        state, metrics = one(state, x_all, y_all, ids, hparams)
      history.append(metrics)
    return state, jax.tree_util.tree_map(lambda *m: jnp.stack(m), *history)

  return run


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
  if "sd_coef" in hparams:   # the released form (docs/protocols.md §3.3): sd_coef·Σ_batch,logits ŷ²
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


class Diverged(FloatingPointError):
  """Training produced a non-finite epoch-mean loss (:func:`fit_minibatch`); ``epoch`` is
  that epoch (1-based), ``history`` the records up to and including it."""

  def __init__(self, epoch: int, history: list):
    self.epoch, self.history = epoch, history
    super().__init__(f"training diverged: the mean loss of epoch {epoch} is "
                     f"{history[-1].get('loss')} (non-finite); the state of that epoch was not "
                     "checkpointed")


def fit_minibatch(apply_fn, tx: optax.GradientTransformation, objective: Objective,
                  state: TrainState, data: Mapping[str, Any], batch_indices: Callable,
                  num_epochs: int, hparams, *, preprocess: Callable | None = None, mesh=None,
                  checkpoint=None, fingerprint: Mapping[str, Any] | None = None,
                  chunk: int = 10, progress: bool = True, desc: str | None = None,
                  on_chunk: Callable | None = None, on_epoch: Callable | None = None,
                  train_step: Callable | None = None, evaluate: Callable | None = None,
                  show: tuple = (), scan: bool = False, stop_on_nonfinite: bool = True):
  """Minibatch SGD for ``num_epochs`` epochs from an explicit initial ``state``, resumable.

  Epoch ``e`` (0-based) takes the steps ``batch_indices(e)``, an int array (steps, B) of rows
  of ``data`` (``{"x": (n, …), "y": (n,)}``, whole arrays kept on the devices); it must depend
  on ``e`` only (e.g. :func:`gs_jax.data.cifar.epoch_permutation` with a fixed key).
  ``data["x"]`` may be a :class:`gs_jax.data.stream.Stream` (images decoded in the background,
  fed per batch; started on each epoch's rows, so batches still depend on the epoch only). Steps run
  through :func:`make_epoch_runner` (``preprocess``, ``mesh`` as there; with a mesh the state
  and data are replicated over it) in groups of ``chunk`` steps, after each of which
  ``on_chunk(step, metrics)`` is called and the progress bar advances. ``scan=True`` runs each
  group as one ``lax.scan`` (:func:`make_epoch_runner`; same steps, for batch-1 training).

  With a ``checkpoint`` (:class:`gs_jax.checkpoint.Checkpointer`) the state is saved after
  every epoch (as often as its ``every_seconds`` allow, and always after the last) under the
  number of epochs done, with the history and ``fingerprint`` (JSON-able: whatever determines
  the training) as metadata. A new call restores the latest checkpoint and continues from that
  epoch; batches and augmentations depend only on (epoch, step), so a run killed and started
  again ends with the numbers of an uninterrupted one (tested), and a finished run returns at
  once. A checkpoint written under another ``fingerprint`` is refused (ValueError).

  ``train_step(state, batch, hparams) -> (state, metrics)`` replaces
  ``make_train_step(apply_fn, tx, objective)`` for methods whose state is more than one
  :class:`TrainState` (e.g. Group DRO's weights, LfF's two networks; ``state`` then needs
  ``step`` and ``key`` fields for ``preprocess``). ``evaluate(state) -> dict`` (JSON-able) runs
  after every epoch and its entries join that epoch's record *before* the checkpoint is
  written, so a resumed run keeps the evaluations of the epochs it does not redo. ``show``
  names scalar metrics shown in the progress bar beside the loss. An epoch whose mean loss
  is NaN or ±inf raises :class:`Diverged` before its state is checkpointed (unless
  ``stop_on_nonfinite=False``): nothing after it is worth computing.

  Returns:
    ``(state, history)``: ``history[e] = {"epoch": e + 1, "step": steps done, **means}``, the
    mean of every metric of ``objective`` over the epoch's steps. ``on_epoch(record)`` is
    called with each new record after its checkpoint is written.
  """
  import json

  from tqdm.auto import tqdm

  fingerprint = json.loads(json.dumps(fingerprint or {}))
  history, start = [], 0
  restored = checkpoint.restore(state) if checkpoint is not None else None
  if restored is not None:
    start, state, _, meta = restored
    if meta.get("fingerprint", {}) != fingerprint:
      raise ValueError(f"the checkpoint in {checkpoint.directory} belongs to another run: it "
                       f"was written for {meta.get('fingerprint')}, this run is {fingerprint}")
    if start > num_epochs:
      raise ValueError(f"checkpoint at epoch {start} is past num_epochs={num_epochs}")
    history = list(meta["history"])
  if mesh is not None and jax.process_count() > 1:   # data stay on the host: fed per batch
    state = distributed.to_global(state, replicated(mesh))
  elif mesh is not None and stream.is_stream(data["x"]):   # the images stay on the host
    state, y = jax.device_put((state, data["y"]), replicated(mesh))
    data = {**data, "y": y}
  elif mesh is not None:
    state, data = jax.device_put((state, dict(data)), replicated(mesh))
  if start == num_epochs:
    return state, history
  run_steps = make_epoch_runner(train_step or make_train_step(apply_fn, tx, objective),
                                preprocess=preprocess, mesh=mesh, scan=scan)
  steps_per_epoch = len(batch_indices(start))
  with tqdm(total=steps_per_epoch * num_epochs, initial=steps_per_epoch * start, desc=desc,
            disable=not progress) as bar:
    for epoch in range(start, num_epochs):
      idx = batch_indices(epoch)
      if stream.is_stream(data["x"]):
        data["x"].start(idx)   # this epoch's batches, decoded ahead in the background
      sums = {}
      for first in range(0, len(idx), chunk):
        state, metrics = run_steps(state, data["x"], data["y"], idx[first:first + chunk],
                                   hparams)
        for name, values in metrics.items():   # float64 sums of per-chunk float32 sums
          if name != PROBE:
            sums[name] = sums.get(name, 0.0) + float(jnp.sum(values))
        bar.update(len(idx[first:first + chunk]))
        bar.set_postfix(epoch=epoch + 1, loss=f"{float(metrics['loss'][-1]):.4f}",
                        **{k: f"{float(jnp.mean(metrics[k])):.3f}" for k in show})
        if on_chunk is not None:
          on_chunk(int(state.step), metrics)
      record = {"epoch": epoch + 1, "step": int(state.step),
                **{name: total / len(idx) for name, total in sums.items()}}
      if stop_on_nonfinite and not np.isfinite(record.get("loss", 0.0)):
        raise Diverged(epoch + 1, history + [record])
      if evaluate is not None:
        record.update(evaluate(state))
      history.append(record)
      if checkpoint is not None:
        checkpoint.maybe_save(epoch + 1, state, meta={"history": history,
                                                      "fingerprint": fingerprint},
                              force=epoch + 1 == num_epochs)
      if on_epoch is not None:
        on_epoch(record)
  return state, history

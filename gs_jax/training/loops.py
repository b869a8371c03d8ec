"""Minibatch training loops: epochs of compiled chunks of steps, resumable from checkpoints."""

from __future__ import annotations

import dataclasses

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gs_jax.base import distributed
from gs_jax.data import stream
from gs_jax.training.probes import PROBE
from gs_jax.training.sharding import batch_sharded, replicated
from gs_jax.training.state import Objective, TrainState, make_train_step


def make_epoch_runner(
  train_step: Callable, *, preprocess: Callable | None = None, mesh=None, scan: bool = False
):
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
    if stream.is_stream(x_all):  # images decoded by a background pipeline, fed per batch
      if scan or multi:
        raise ValueError(
          "a streamed dataset is fed per batch: not with scan=True or several processes"
        )
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


class Diverged(FloatingPointError):
  """Training produced a non-finite epoch-mean loss (:func:`fit_minibatch`); ``epoch`` is
  that epoch (1-based), ``history`` the records up to and including it."""

  def __init__(self, epoch: int, history: list):
    self.epoch, self.history = epoch, history
    super().__init__(
      f"training diverged: the mean loss of epoch {epoch} is "
      f"{history[-1].get('loss')} (non-finite); the state of that epoch was not "
      "checkpointed"
    )


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """How :func:`fit_minibatch` runs its steps and reports them (never what they compute).

  Attributes:
    chunk: steps per compiled call; the progress bar and ``on_chunk`` advance after each.
    scan: run each chunk as one ``lax.scan`` (:func:`make_epoch_runner`; same steps; for
      batch-1 training).
    progress: show a progress bar; ``desc`` labels it, ``show`` names scalar metrics shown in it
      beside the loss.
    stop_on_nonfinite: raise :class:`Diverged` when an epoch's mean loss is NaN or ±inf.
  """

  chunk: int = 10
  scan: bool = False
  progress: bool = True
  desc: str | None = None
  show: tuple = ()
  stop_on_nonfinite: bool = True


@dataclasses.dataclass(frozen=True)
class Callbacks:
  """What :func:`fit_minibatch` calls while it trains.

  Attributes:
    on_chunk: ``on_chunk(step, metrics)`` after every chunk (metrics: ``(chunk, …)`` arrays).
    evaluate: ``evaluate(state) -> dict`` (JSON-able) after every epoch; its entries join the
      epoch's record before the checkpoint is written.
    on_epoch: ``on_epoch(record)`` with each new record, after its checkpoint is written.
  """

  on_chunk: Callable | None = None
  evaluate: Callable | None = None
  on_epoch: Callable | None = None


def fit_minibatch(
  apply_fn,
  tx: optax.GradientTransformation,
  objective: Objective,
  state: TrainState,
  data: Mapping[str, Any],
  batch_indices: Callable,
  num_epochs: int,
  hparams,
  *,
  preprocess: Callable | None = None,
  mesh=None,
  checkpoint=None,
  train_step: Callable | None = None,
  loop: LoopOptions = LoopOptions(),
  callbacks: Callbacks = Callbacks(),
):
  """Minibatch SGD for ``num_epochs`` epochs from an explicit initial ``state``, resumable.

  Epoch ``e`` (0-based) takes the steps ``batch_indices(e)``, an int array (steps, B) of rows
  of ``data`` (``{"x": (n, …), "y": (n,)}``, whole arrays kept on the devices); it must depend
  on ``e`` only (e.g. :func:`gs_jax.data.cifar.epoch_permutation` with a fixed key).
  ``data["x"]`` may be a :class:`gs_jax.data.stream.Stream` (images decoded in the background,
  fed per batch; started on each epoch's rows, so batches still depend on the epoch only). Steps run
  through :func:`make_epoch_runner` (``preprocess``, ``mesh`` as there; with a mesh the state
  and data are replicated over it) in groups of ``loop.chunk`` steps (:class:`LoopOptions`),
  after each of which ``callbacks.on_chunk(step, metrics)`` is called (:class:`Callbacks`) and
  the progress bar advances.

  With a ``checkpoint`` (:class:`gs_jax.checkpoint.Checkpointer`) the state is saved after
  every epoch (as often as its ``every_seconds`` allow, and always after the last) under the
  number of epochs done, with the history as metadata. A new call restores the latest
  checkpoint and continues from that epoch; batches and augmentations depend only on (epoch,
  step), so a run killed and started again ends with the numbers of an uninterrupted one
  (tested), and a finished run returns at once. Whether a checkpoint belongs to this training
  is the checkpointer's question (its ``fingerprint``; :meth:`gs_jax.experiment.run.Run.checkpointer`).

  ``train_step(state, batch, hparams) -> (state, metrics)`` replaces
  ``make_train_step(apply_fn, tx, objective)`` for methods whose state is more than one
  :class:`TrainState` (e.g. Group DRO's weights, LfF's two networks; ``state`` then needs
  ``step`` and ``key`` fields for ``preprocess``). ``callbacks.evaluate`` runs after every epoch
  and its entries join that epoch's record *before* the checkpoint is written, so a resumed run
  keeps the evaluations of the epochs it does not redo. An epoch whose mean loss is NaN or
  ±inf raises :class:`Diverged` before its state is checkpointed (unless
  ``loop.stop_on_nonfinite`` is False): nothing after it is worth computing.

  Returns:
    ``(state, history)``: ``history[e] = {"epoch": e + 1, "step": steps done, **means}``, the
    mean of every metric of ``objective`` over the epoch's steps.
  """
  from tqdm.auto import tqdm

  history, start = [], 0
  restored = checkpoint.restore(state) if checkpoint is not None else None
  if restored is not None:
    start, state, _, meta = restored
    if start > num_epochs:
      raise ValueError(f"checkpoint at epoch {start} is past num_epochs={num_epochs}")
    history = list(meta["history"])
  if mesh is not None and jax.process_count() > 1:  # data stay on the host: fed per batch
    state = distributed.to_global(state, replicated(mesh))
  elif mesh is not None and stream.is_stream(data["x"]):  # the images stay on the host
    state, y = jax.device_put((state, data["y"]), replicated(mesh))
    data = {**data, "y": y}
  elif mesh is not None:
    state, data = jax.device_put((state, dict(data)), replicated(mesh))
  if start == num_epochs:
    return state, history
  run_steps = make_epoch_runner(
    train_step or make_train_step(apply_fn, tx, objective),
    preprocess=preprocess,
    mesh=mesh,
    scan=loop.scan,
  )
  steps_per_epoch = len(batch_indices(start))
  with tqdm(
    total=steps_per_epoch * num_epochs,
    initial=steps_per_epoch * start,
    desc=loop.desc,
    disable=not loop.progress,
  ) as bar:
    for epoch in range(start, num_epochs):
      idx = batch_indices(epoch)
      if stream.is_stream(data["x"]):
        data["x"].start(idx)  # this epoch's batches, decoded ahead in the background
      sums = {}
      for first in range(0, len(idx), loop.chunk):
        state, metrics = run_steps(
          state, data["x"], data["y"], idx[first : first + loop.chunk], hparams
        )
        for name, values in metrics.items():  # float64 sums of per-chunk float32 sums
          if name != PROBE:
            sums[name] = sums.get(name, 0.0) + float(jnp.sum(values))
        bar.update(len(idx[first : first + loop.chunk]))
        bar.set_postfix(
          epoch=epoch + 1,
          loss=f"{float(metrics['loss'][-1]):.4f}",
          **{k: f"{float(jnp.mean(metrics[k])):.3f}" for k in loop.show},
        )
        if callbacks.on_chunk is not None:
          callbacks.on_chunk(int(state.step), metrics)
      record = {
        "epoch": epoch + 1,
        "step": int(state.step),
        **{name: total / len(idx) for name, total in sums.items()},
      }
      if loop.stop_on_nonfinite and not np.isfinite(record.get("loss", 0.0)):
        raise Diverged(epoch + 1, history + [record])
      if callbacks.evaluate is not None:
        record.update(callbacks.evaluate(state))
      history.append(record)
      if checkpoint is not None:
        checkpoint.maybe_save(
          epoch + 1, state, meta={"history": history}, force=epoch + 1 == num_epochs
        )
      if callbacks.on_epoch is not None:
        callbacks.on_epoch(record)
  return state, history

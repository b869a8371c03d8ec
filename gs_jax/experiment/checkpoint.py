"""Checkpoints for resuming killed runs (orbax): a state pytree, stacked history, JSON metadata.

Every loop in :mod:`gs_jax.train` takes an optional :class:`Checkpointer`; started again with
the same command, a run restores the latest checkpoint and continues. The loops are
deterministic functions of (state, step), so a resumed run ends with the same numbers as an
uninterrupted one (tested).

Multi-process runs: every process calls :meth:`~Checkpointer.save` and
:meth:`~Checkpointer.restore` together (orbax synchronises them; process 0 finalises the
checkpoint), with global arrays fetched to the host first (:func:`gs_jax.distributed.to_host`);
the directory must be on a filesystem every process sees.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from gs_jax.base import distributed, errors

_FINGERPRINT = "_fingerprint"


class Checkpointer:
  """Saves ``(step, state, history, meta)`` under ``directory`` and restores the latest.

  Args:
    directory: folder of the checkpoints (created on first save).
    every_seconds: :meth:`maybe_save` saves at most this often (``force=True`` always saves);
      checkpointing is a wall-clock decision only, it never changes what is computed.
    max_to_keep: how many checkpoints stay on disk.
    fingerprint: optional JSON-able description of everything the run's numbers depend on
      (e.g. its config). It is stored with every checkpoint, and :meth:`restore` refuses a
      checkpoint written under another fingerprint, so a changed config never silently
      continues a stale run.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    every_seconds: float = 60.0,
    max_to_keep: int = 2,
    fingerprint: Any = None,
  ):
    import orbax.checkpoint as ocp  # lazy: a slow import

    self._ocp = ocp
    self.directory = os.path.abspath(os.fspath(directory))
    self.every_seconds = every_seconds
    self.fingerprint = None if fingerprint is None else json.loads(json.dumps(fingerprint))
    self._last = time.monotonic()
    self._mgr = ocp.CheckpointManager(
      self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    )

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def save(self, step: int, state: Any, history: Any = None, meta: dict | None = None) -> None:
    """Writes checkpoint ``step`` (waits until it is on disk)."""
    ocp = self._ocp
    meta = dict(meta or {})
    if self.fingerprint is not None:
      meta[_FINGERPRINT] = self.fingerprint
    items = {
      "state": ocp.args.StandardSave(distributed.to_host(state)),
      "meta": ocp.args.JsonSave(meta),
    }
    if history is not None:
      items["history"] = ocp.args.StandardSave(distributed.to_host(history))
    self._mgr.save(int(step), args=ocp.args.Composite(**items), force=True)
    self._mgr.wait_until_finished()
    self._last = time.monotonic()

  def maybe_save(
    self,
    step: int,
    state: Any,
    history: Any = None,
    meta: dict | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Saves if ``every_seconds`` have passed since the last save (or ``force``). In a
    multi-process run process 0's clock decides for all: saving is collective, and each
    process's own clock could disagree."""
    due = force or time.monotonic() - self._last >= self.every_seconds
    if not force and self.every_seconds > 0 and jax.process_count() > 1:
      from jax.experimental import multihost_utils

      due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
    if due:
      self.save(step, state, history, meta)
      return True
    return False

  def restore(self, template: Any, *, with_history: bool = False):
    """``(step, state, history, meta)`` of the latest checkpoint, or None if there is none.

    ``template`` is a pytree with the state's structure, shapes and dtypes (e.g. a freshly
    initialised state); the history comes back as NumPy arrays.
    """
    step = self.latest_step()
    if step is None:
      return None
    ocp = self._ocp
    abstract = jax.tree_util.tree_map(
      lambda a: np.zeros(np.shape(a), np.asarray(a).dtype) if hasattr(a, "shape") else a,
      distributed.to_host(template),
    )
    items = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
    if with_history:
      items["history"] = ocp.args.StandardRestore()
    out = self._mgr.restore(step, args=ocp.args.Composite(**items))
    stored = out["meta"].pop(_FINGERPRINT, None)
    if self.fingerprint is not None and stored != self.fingerprint:
      raise errors.RunMismatch(
        f"the checkpoint in {self.directory} belongs to another run (written "
        f"for {stored}, this run is {self.fingerprint}); start afresh with "
        f"--overwrite or choose another out_dir"
      )
    history = out["history"] if with_history else None
    return step, out["state"], history, out["meta"]

  def close(self) -> None:
    self._mgr.close()

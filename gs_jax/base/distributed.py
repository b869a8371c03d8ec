"""Multi-process runs with JAX's own multi-controller runtime (``jax.distributed``).

One way to start (:func:`initialize`, called by :func:`gs_jax.cli.main` from the config fields
``coordinator_address``, ``num_processes``, ``process_id``, ``dist_timeout_s``):

- explicit flags (``--coordinator_address=host:port --num_processes=N --process_id=i``, every
  process the same command but its own ``process_id``);
- otherwise the cluster environments JAX detects (Slurm, Open MPI, Cloud TPU VMs, GKE, …) when
  they describe more than one process;
- otherwise nothing: a plain single-process run.

On CPU the cross-process collectives are gloo's (``jax_cpu_collectives_implementation``).

Failure: every process sends a heartbeat to the coordination service (process 0) every
``timeout_s / 5`` seconds; a process missing for ``timeout_s`` seconds is declared dead and
every survivor is terminated by the runtime (SIGABRT, exit status 134, or −6 from
``subprocess``) with the message ``Terminating process because the JAX distributed service
detected fatal errors … The following tasks are unhealthy (stopped sending heartbeats):
/job:jax_worker/replica:0/task:<i>``; or, when a collective is running, gloo notices the dead
peer first (``ValueError: … Gloo all-reduce failed … Connection reset by peer``) and the
shutdown that follows reports ``Task /job:jax_worker/replica:0/task:<i> heartbeat timeout``
(non-zero exit either way). If process 0 (the coordinator) dies, the others abort as soon as
their error poll sees the closed connection (``Failed to send RPC to coordination service …
Socket closed``; measured: at once). A process that never shows up makes the others fail after
``init_timeout_s``. Measured (tests/base/test_distributed.py): with ``timeout_s=4`` the survivor
exits 2–5 s after the kill (bound asserted: 15 s). A Python exception in one process must not
leave it waiting at the runtime's shutdown barrier while the others wait for it in a
collective: :func:`fail_fast` (used by :func:`gs_jax.cli.main`) exits at once instead. The runtime catches SIGTERM (a preemption
notice) and keeps running: stop a job with SIGKILL or let the scheduler do it.

Data placement helpers work the same with one process or many: :func:`to_global` builds a
global ``jax.Array`` from a host value every process holds in full (each process puts only its
addressable shards on its devices), :func:`feed_batch` from each process's own rows of a
global batch, and :func:`to_host` fetches a global array to NumPy on every process.
"""

from __future__ import annotations

import math
import sys

import jax
import numpy as np

from gs_jax.base import _compat

DEFAULT_TIMEOUT_S = 60


def config_fields() -> dict:
  """The config fields of a run that may be distributed (flags of :mod:`gs_jax.cli`)."""
  return dict(
    coordinator_address="", num_processes=0, process_id=-1, dist_timeout_s=DEFAULT_TIMEOUT_S
  )


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  timeout_s: int = DEFAULT_TIMEOUT_S,
  init_timeout_s: int = 300,
  verbose: bool = True,
) -> bool:
  """Starts ``jax.distributed`` if asked or if the environment says so; returns whether it did.

  Must run before JAX's first computation. Explicit arguments win; missing ones come from
  the detected cluster. ``timeout_s``: a process silent for that long counts as dead and the
  others terminate (see the module docstring); ``init_timeout_s``: how long to wait for all
  processes to connect.
  """
  explicit = bool(coordinator_address) or (num_processes or 0) > 1
  if not explicit and _compat.detected_cluster() is None:
    return False
  if explicit and not (
    coordinator_address
    and num_processes
    and process_id is not None
    and 0 <= process_id < num_processes
  ):
    raise ValueError(
      "a multi-process run needs --coordinator_address=host:port, --num_processes=N >= 2 and "
      f"--process_id in [0, N); got {coordinator_address!r}, {num_processes}, {process_id}"
    )
  if _compat.backends_started():
    raise RuntimeError(
      "jax.distributed must start before JAX's first computation (or "
      "jax.devices()); this process has already started its backends"
    )
  if timeout_s < 2:
    raise ValueError(f"timeout_s must be >= 2 seconds; got {timeout_s}")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  interval = max(1, timeout_s // 5)
  missing = max(2, math.ceil(timeout_s / interval))
  _compat.distributed_initialize(
    coordinator_address or None,
    num_processes or None,
    None if process_id is None or process_id < 0 else process_id,
    init_timeout_s=init_timeout_s,
    heartbeat_interval_s=interval,
    max_missing_heartbeats=missing,
  )
  if verbose:  # the runtime's own state: asking for devices would start the backends, and
    # the CPU device count (gs_jax.devices.use_cpu_devices) may still be set after this
    state = _compat.distributed_state()
    print(
      f"jax.distributed: process {state.process_id} of {state.num_processes} "
      f"(coordinator {state.coordinator_address}); a process silent for "
      f"{interval * missing} s stops the job",
      file=sys.stderr,
      flush=True,
    )
  return True


def from_config(cfg) -> bool:
  """:func:`initialize` from a config with the fields of :func:`config_fields`."""
  return initialize(
    cfg.coordinator_address or None,
    cfg.num_processes or None,
    None if cfg.process_id < 0 else cfg.process_id,
    timeout_s=cfg.dist_timeout_s,
  )


def fail_fast(fn, *args, **kwargs):
  """``fn(*args, **kwargs)``; in a multi-process run an exception (or ``SystemExit``) in it
  ends this process at once: traceback printed, exit status 1; for a
  :class:`gs_jax.base.errors.UserError` only ``error: <message>``, exit status 2 (as
  :func:`gs_jax.cli.main` with one process).

  Python's normal exit would run ``jax.distributed.shutdown``, whose barrier waits for every
  process; the others, blocked in a collective with this one, would wait there too, for
  minutes (measured: 3 min before the barrier's deadline). Exiting at once stops this
  process's heartbeats, so the others stop within ``timeout_s`` (module docstring).
  """
  state = _compat.distributed_state()
  if not state.active:  # one process: nothing to wait for
    return fn(*args, **kwargs)
  import os
  import traceback

  try:
    return fn(*args, **kwargs)
  except BaseException as e:
    if isinstance(e, SystemExit) and e.code in (None, 0):
      raise
    from gs_jax.base import errors

    if isinstance(e, errors.UserError):
      print(f"error: {e}", file=sys.stderr)
    else:
      traceback.print_exc()
    print(
      f"process {state.process_id} failed: exiting now (the others stop "
      f"when they miss its heartbeats)",
      file=sys.stderr,
      flush=True,
    )
    os._exit(2 if isinstance(e, errors.UserError) else 1)


def barrier(name: str) -> None:
  """Waits until every process reaches ``barrier(name)`` (nothing with one process): e.g.
  before reading what process 0 has written."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port free on ``host`` now: the coordinator's for several local processes."""
  import socket

  with socket.socket() as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def is_main() -> bool:
  """True on the process that writes results, logs and figures (process 0; True without
  ``jax.distributed``). Reads the runtime's state without starting JAX's backends."""
  return _compat.distributed_state().process_id == 0


def to_global(tree, sharding):
  """Global arrays with ``sharding`` from host values that every process holds in full.

  One process: ``jax.device_put``. Several: each process places only the shards of its own
  devices (``jax.make_array_from_callback``), so no process needs the others' devices.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree_util.tree_map(one, tree)


def local_rows(sharding, global_shape) -> slice:
  """The rows (leading axis) of a global array of ``global_shape`` with ``sharding`` that
  this process's devices hold; contiguous for a 1-D mesh over ``jax.devices()``."""
  spans = [idx[0] for idx in sharding.addressable_devices_indices_map(global_shape).values()]
  start = min(s.start or 0 for s in spans)
  stop = max(global_shape[0] if s.stop is None else s.stop for s in spans)
  return slice(start, stop)


def feed_batch(sharding, host_arrays: dict, rows: np.ndarray) -> dict:
  """A global batch, rows ``rows`` of ``host_arrays``, split over ``sharding``'s devices;
  each process reads only its own part of ``rows`` (``jax.make_array_from_process_local_data``)."""
  mine = rows[local_rows(sharding, (len(rows),))]
  return {
    k: jax.make_array_from_process_local_data(
      sharding, np.asarray(v[mine]), (len(rows),) + np.shape(v)[1:]
    )
    for k, v in host_arrays.items()
  }


def to_host(tree):
  """NumPy copies of (possibly global) arrays on every process: shards on other processes'
  devices are all-gathered; replicated or local arrays are just fetched."""

  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      from jax.experimental import multihost_utils

      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)

  return jax.tree_util.tree_map(one, tree)

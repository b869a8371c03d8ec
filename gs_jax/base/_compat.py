"""The one place where gs-jax touches JAX internals or version-dependent APIs.

gs-jax supports ``jax >= 0.5.3`` (README, "Choosing a stack"). Everything that differs between
the oldest and the newest JAX, or that JAX exposes only privately, goes through this module,
so the rest of the library imports only public JAX. Each function picks the public API where
the installed JAX has one, and the private one where it has none (version or feature checked);
``tests/base/test_compat.py`` exercises the branch the running stack takes, and names the other.

- :func:`backends_started`: whether JAX has started its backends (no public API on any
  version; ``jax._src.xla_bridge.backends_are_initialized``).
- :func:`distributed_initialize`: ``jax.distributed.initialize`` with heartbeat settings —
  public ``heartbeat_timeout_seconds`` where ``jax.distributed.initialize`` takes it (newer
  JAX), else the private global state's ``initialize`` with the interval/missing pair (0.5.x).
- :func:`distributed_state`: this process's id, the process count and the coordinator as the
  multi-controller runtime knows them *without starting the backends* (private on every
  version; ``jax.process_index()`` would start them).
- :func:`detected_cluster`: the cluster environment ``jax.distributed.initialize`` would
  auto-detect (Slurm, Open MPI, TPU, …; private ``jax._src.clusters``).
- :func:`is_tracer`: whether a value is being traced (``jax.core.Tracer``).
- :func:`enable_x64`: a float64 scope (``jax.experimental.enable_x64`` is gone in newer JAX).
- :data:`HAS_LEGACY_CPU_RUNTIME`: XLA:CPU's legacy (non-thunk) runtime exists before jax 0.6.
- :data:`HAS_YNN_DOTS`: XLA:CPU runs dots through YNNPACK by default and takes the flag that
  turns it off (``--xla_cpu_experimental_ynn_fusion_type``; checked on jaxlib 0.10.2, absent
  in 0.5.3, where an unknown XLA flag aborts the process — hence the conservative bound).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, NamedTuple

import jax

JAX_VERSION: tuple[int, ...] = tuple(jax.__version_info__)

# XLA:CPU's whole-program ("legacy") runtime was removed in jax 0.6.
HAS_LEGACY_CPU_RUNTIME: bool = JAX_VERSION < (0, 6)

# XLA:CPU's YNNPACK dot fusions and their flag (verified on jaxlib 0.10.2 and newer only).
HAS_YNN_DOTS: bool = JAX_VERSION >= (0, 10)

# jax.distributed.initialize gained a public heartbeat timeout (older JAX: only the private
# global state took the interval and missed-heartbeat count).
PUBLIC_HEARTBEAT: bool = (
  "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters
)


def is_tracer(x: Any) -> bool:
  """True for values being traced (inside ``jit``/``vmap``/``grad``): they have no value."""
  return isinstance(x, jax.core.Tracer)


def backends_started() -> bool:
  """Whether JAX has started its backends (after the first computation or ``jax.devices()``).

  Settings such as the CPU device count, XLA flags or ``jax.distributed`` take effect only
  before that. JAX has no public query for it; if a future JAX drops the private one this
  returns False (callers then skip their "too late" warning, nothing else).
  """
  try:
    from jax._src import xla_bridge
  except ImportError:  # pragma: no cover - a future JAX
    return False
  fn = getattr(xla_bridge, "backends_are_initialized", None)
  return bool(fn()) if fn is not None else False


def _global_state():
  from jax._src import distributed

  return distributed.global_state


class DistributedState(NamedTuple):
  """The multi-controller runtime's view of this process (``process_id`` 0 and
  ``num_processes`` 1 when ``jax.distributed`` was not started)."""

  active: bool
  process_id: int
  num_processes: int
  coordinator_address: str | None


def distributed_state() -> DistributedState:
  """This process's place in a ``jax.distributed`` run, read without starting the backends."""
  state = _global_state()
  if state.client is None:
    return DistributedState(False, 0, 1, None)
  return DistributedState(
    True, int(state.process_id or 0), int(state.num_processes or 1), state.coordinator_address
  )


def distributed_initialize(
  coordinator_address: str | None,
  num_processes: int | None,
  process_id: int | None,
  *,
  init_timeout_s: int,
  heartbeat_interval_s: int,
  max_missing_heartbeats: int,
) -> str:
  """Starts ``jax.distributed`` with a heartbeat deadline of
  ``heartbeat_interval_s · max_missing_heartbeats`` seconds; returns which API was used.

  Newer JAX: the public ``jax.distributed.initialize(heartbeat_timeout_seconds=…)`` (JAX
  picks the interval). jax 0.5.x: its public ``initialize`` has no heartbeat settings; the
  private global state's ``initialize`` (the function it calls) takes the interval and the
  missed-heartbeat count for the service and the clients.
  """
  if PUBLIC_HEARTBEAT:
    jax.distributed.initialize(
      coordinator_address,
      num_processes,
      process_id,
      initialization_timeout=init_timeout_s,
      heartbeat_timeout_seconds=heartbeat_interval_s * max_missing_heartbeats,
    )
    return "public"
  _global_state().initialize(
    coordinator_address,
    num_processes,
    process_id,
    initialization_timeout=init_timeout_s,
    service_heartbeat_interval_seconds=heartbeat_interval_s,
    service_max_missing_heartbeats=max_missing_heartbeats,
    client_heartbeat_interval_seconds=heartbeat_interval_s,
    client_max_missing_heartbeats=max_missing_heartbeats,
  )
  return "private"


def detected_cluster() -> Any:
  """The cluster environment JAX would use (Slurm, MPI, TPU, …) if it spans > 1 process,
  else None — the same detection ``jax.distributed.initialize()`` runs (private: JAX exposes
  the result only by starting the runtime)."""
  try:
    from jax._src import clusters
  except ImportError:  # pragma: no cover - a future JAX: let jax.distributed decide
    return None
  for env in getattr(clusters.ClusterEnv, "_cluster_types", ()):
    if env.opt_in_only_method or not env.is_env_present():
      continue
    try:
      count = env.get_process_count()
    except Exception:  # e.g. a TPU VM without metadata access: let JAX decide
      count = None
    return env if count is None or count > 1 else None
  return None


def enable_x64() -> contextlib.AbstractContextManager:
  """A context manager under which JAX computes in float64 (``jax.enable_x64(True)`` on newer
  JAX; ``jax.experimental.enable_x64()``, removed since, on jax 0.5)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  import jax.experimental as jax_experimental

  # Only jax < 0.6 has it (the oldest stack's branch); mypy runs on the newest, which lacks it.
  return jax_experimental.enable_x64()  # type: ignore[attr-defined,unused-ignore]

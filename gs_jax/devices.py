"""JAX CPU devices: one per core, so that seeds or batch shards run on all cores."""
from __future__ import annotations

import os
import warnings


def available_cores() -> int:
  """The cores this process may run on (``os.cpu_count()`` counts the host's)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def use_cpu_devices(count: int | None = None) -> int:
  """Makes JAX expose ``count`` CPU devices (default or 0: one per core); returns the count.
  ``count=1`` leaves JAX's default (one CPU device, or what ``XLA_FLAGS`` asks for).

  Independent runs (seeds) sharded over them train in parallel on all cores
  (:func:`gs_jax.train.seed_sharding`). Only possible before JAX's first computation; later
  calls leave the devices as they are (with a warning) and return the current count.
  """
  import jax
  count = count or available_cores()
  if count == 1:                # JAX's default: leave the configuration alone
    return len(jax.devices("cpu"))
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as e:     # the CPU backend is already initialised
    warnings.warn(f"could not set {count} CPU devices: {e}")
    return len(jax.devices("cpu"))
  return count


CPU_RUNTIMES = ("thunk", "legacy")
_LEGACY_FLAG = "--xla_cpu_use_thunk_runtime=false"


def use_cpu_runtime(name: str = "thunk") -> str:
  """Chooses XLA:CPU's runtime before JAX starts its backends; returns the runtime in effect.

  ``"thunk"`` is jax 0.5's default: every operation of a compiled program is a separate
  task, a few µs each. ``"legacy"`` compiles the whole program into one function. For
  batch-1 training of the released CIFAR network (many tiny operations) both run ~1,300–1,500
  images/s on a quiet 2-core machine, but on a busy one the legacy runtime kept ~1,500 where
  the thunk runtime fell to ~1,000 (``benchmarks/cifar_speed.py --protocol=released``); for
  large elementwise work it costs (two-moons: 1.4× slower). Only JAX < 0.6 has the
  legacy runtime; elsewhere, or once the backends run, the current runtime stays (with a
  warning). Results differ from the thunk runtime's only by float rounding.
  """
  if name not in CPU_RUNTIMES:
    raise ValueError(f"cpu_runtime must be one of {CPU_RUNTIMES}; got {name!r}")
  flags = os.environ.get("XLA_FLAGS", "")
  current = "legacy" if _LEGACY_FLAG in flags else "thunk"
  if name == current:
    return current
  import jax
  from jax._src import xla_bridge
  if xla_bridge.backends_are_initialized():
    warnings.warn(f"cpu_runtime={name!r} ignored: JAX's backends already run ({current})")
    return current
  if name == "legacy" and jax.__version_info__ >= (0, 6):
    warnings.warn(f"cpu_runtime='legacy' needs jax < 0.6 (this is {jax.__version__}); "
                  "using the default runtime")
    return current
  parts = [f for f in flags.split() if f != _LEGACY_FLAG]
  os.environ["XLA_FLAGS"] = " ".join(parts + ([_LEGACY_FLAG] if name == "legacy" else []))
  return name

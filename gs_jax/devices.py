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

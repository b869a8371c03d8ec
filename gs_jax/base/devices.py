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
  if count == 1:  # JAX's default: leave the configuration alone
    return len(jax.devices("cpu"))
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as e:  # the CPU backend is already initialised
    warnings.warn(f"could not set {count} CPU devices: {e}", stacklevel=2)
    return len(jax.devices("cpu"))
  return count


def use_cpu_cores(spec: str = "") -> list[int]:
  """Pins this process (every thread, present and future) to some of its allowed cores;
  returns the CPU ids it now runs on. ``spec``: ``""`` leaves the affinity alone; otherwise
  comma-separated *indices into the allowed cores* (sorted), e.g. ``"0"`` or ``"1"`` or
  ``"0,1"`` — indices rather than CPU ids, so a spec works inside a container or Slurm
  allocation whose CPUs are not numbered from 0.

  Why: XLA:CPU sizes its intra-op thread pool from the process's affinity when its backend
  starts, and splits even tiny operations over that pool. For batch-1 training of the
  released CIFAR network (docs/protocols.md §3.3; ~10 MFLOP per step) the splitting costs
  more than it gains: pinned to one core, a step runs ~1.9× faster than on two (measured:
  2,500–2,700 against 1,300–1,450 images/s on this 2-core machine, legacy runtime), and two
  pinned runs side by side on two cores each keep their speed. Call before JAX starts its
  backends; later the pool keeps its size (a warning says so) though the threads move.
  """
  if not spec:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if not hasattr(os, "sched_setaffinity"):
    raise ValueError("cpu_cores needs os.sched_setaffinity (Linux); leave it empty here")
  allowed = sorted(os.sched_getaffinity(0))
  try:
    picks = [int(tok) for tok in spec.split(",")]
  except ValueError:
    raise ValueError(
      f"cpu_cores must be comma-separated core indices like '0' or '0,1'; got {spec!r}"
    ) from None
  bad = [i for i in picks if not 0 <= i < len(allowed)]
  if bad:
    raise ValueError(
      f"cpu_cores {spec!r}: indices {bad} out of range — this process may run "
      f"on {len(allowed)} cores (indices 0..{len(allowed) - 1})"
    )
  cpus = sorted({allowed[i] for i in picks})
  from gs_jax.base import _compat

  if _compat.backends_started():
    warnings.warn(
      "cpu_cores set after JAX started its backends: XLA's thread pool keeps the size it has",
      stacklevel=2,
    )
  os.sched_setaffinity(0, cpus)
  return cpus


CPU_RUNTIMES = ("thunk", "legacy", "fastest")
_LEGACY_FLAG = "--xla_cpu_use_thunk_runtime=false"
# Copy insertion by region analysis: without it XLA:CPU copies every loop-carried parameter
# that the loop body reads before updating it (e.g. NarLeNet's 800×240 fc0 kernel, once per
# batch-1 step). Semantics-preserving; both jax 0.5.3 and 0.10.2 know the flag.
_REGION_FLAG = "--xla_cpu_copy_insertion_use_region_analysis=true"


def use_cpu_runtime(name: str = "thunk") -> str:
  """Chooses XLA:CPU's runtime before JAX starts its backends; returns the runtime in effect.

  ``"thunk"`` is jax 0.5's default: every operation of a compiled program is a separate
  task, a few µs each. ``"legacy"`` compiles the whole program into one function. For
  batch-1 training of the released CIFAR network (many tiny operations) pinned to one core
  (:func:`use_cpu_cores`) the legacy runtime runs ~2,500–2,700 images/s against the thunk
  runtime's ~1,550 (unpinned on two cores both run ~1,300–1,500;
  ``benchmarks/cifar_speed.py --protocol=released``); for large elementwise work it costs
  (two-moons: 1.4× slower). Only JAX < 0.6 has the
  legacy runtime; elsewhere, or once the backends run, the current runtime stays (with a
  warning). ``"fastest"``: the settings for loops of tiny operations (batch-1 training), on
  every stack without a warning (the released presets' choice): the legacy runtime where this
  JAX has it, else thunk, and on both copy insertion by region analysis (``_REGION_FLAG``:
  no per-step copy of the loop-carried parameters; +10–25% images/s for the released
  batch-1 step, measured on jax 0.5.3 and 0.10.2). Results differ from the thunk runtime's
  only by float rounding.
  """
  if name not in CPU_RUNTIMES:
    raise ValueError(f"cpu_runtime must be one of {CPU_RUNTIMES}; got {name!r}")
  from gs_jax.base import _compat

  extra = [_REGION_FLAG] if name == "fastest" else []
  if name == "fastest":
    name = "legacy" if _compat.HAS_LEGACY_CPU_RUNTIME else "thunk"
  flags = os.environ.get("XLA_FLAGS", "").split()
  current = "legacy" if _LEGACY_FLAG in flags else "thunk"
  if name == current and all(f in flags for f in extra):
    return current
  if name == "legacy" and not _compat.HAS_LEGACY_CPU_RUNTIME and not _compat.backends_started():
    import jax

    warnings.warn(
      f"cpu_runtime='legacy' needs jax < 0.6 (this is {jax.__version__}); "
      "using the default runtime",
      stacklevel=2,
    )
    return current
  wanted = extra + ([_LEGACY_FLAG] if name == "legacy" else [])
  if not _set_xla_flags((_LEGACY_FLAG, *extra), wanted, f"cpu_runtime={name!r}", current):
    return current
  return name


def _set_xla_flags(drop, add, what: str, current: str) -> bool:
  """Replaces the flags ``drop`` by ``add`` in ``XLA_FLAGS`` if JAX's backends have not
  started (XLA reads them once, at backend start); otherwise warns that ``what`` is ignored
  and ``current`` stays. Returns whether the flags were set."""
  from gs_jax.base import _compat

  if _compat.backends_started():
    warnings.warn(f"{what} ignored: JAX's backends already run ({current})", stacklevel=3)
    return False
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in drop]
  os.environ["XLA_FLAGS"] = " ".join(flags + list(add))
  return True


CPU_DOTS = ("xla", "eigen")
_EIGEN_DOTS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"


def use_cpu_dots(name: str = "xla") -> str:
  """Chooses the library of XLA:CPU's matrix products before JAX starts its backends; returns
  the one in effect (``"xla"``: whatever this XLA picks; ``"eigen"``: Eigen).

  From jax 0.10 (:data:`gs_jax.base._compat.HAS_YNN_DOTS`) XLA:CPU runs dots through
  YNNPACK; on jax 0.5.3 through Eigen. For the Colored MNIST full-batch step (50,000×392 →
  300 → 300 → 1, two threads) Eigen is ~15% faster (measured 318 against 378 ms per step
  with ``benchmarks/cmnist_speed.py``, jax 0.10.2), which brings the newest stack back to the
  oldest's speed. ``"eigen"`` turns YNNPACK off for individual dots only
  (``--xla_cpu_experimental_ynn_fusion_type=-individual_dot``); on older JAX, whose dots are
  Eigen's already, it changes nothing. Results differ only by float rounding.
  """
  if name not in CPU_DOTS:
    raise ValueError(f"cpu_dots must be one of {CPU_DOTS}; got {name!r}")
  from gs_jax.base import _compat

  if not _compat.HAS_YNN_DOTS:
    return "eigen"
  current = "eigen" if _EIGEN_DOTS_FLAG in os.environ.get("XLA_FLAGS", "").split() else "xla"
  if name == current:
    return current
  wanted = [_EIGEN_DOTS_FLAG] if name == "eigen" else []
  if not _set_xla_flags((_EIGEN_DOTS_FLAG,), wanted, f"cpu_dots={name!r}", current):
    return current
  return name

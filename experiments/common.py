"""Shared by the experiment CLIs: atomic JSON, figures as PNG + PDF, CPU devices."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _to_builtin(obj):
  if isinstance(obj, dict):
    return {str(k): _to_builtin(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_builtin(v) for v in obj]
  if hasattr(obj, "tolist"):       # numpy / jax arrays and scalars
    return _to_builtin(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)                # JSON has no inf/nan
  return obj


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
  """Writes ``data`` as JSON via a temporary file and ``os.replace``: never half-written."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    json.dump(_to_builtin(data), f, indent=2)
  os.replace(tmp, path)


def read_json(path: str | os.PathLike, default=None):
  path = Path(path)
  if not path.exists():
    return default
  with open(path) as f:
    return json.load(f)


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
  """Saves ``fig`` as ``stem.png`` (150 dpi) and ``stem.pdf``; returns both paths."""
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  for p in paths:
    fig.savefig(p, dpi=150, bbox_inches="tight")
  return paths


def matplotlib_pyplot():
  """pyplot with the non-interactive Agg backend (experiments run headless)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def use_cpu_devices(count: int | None = None) -> int:
  """Makes JAX expose ``count`` CPU devices (default: one per core); returns the count.
  ``count=1`` leaves JAX's default (one CPU device, or what ``XLA_FLAGS`` asks for).

  Independent runs (seeds) sharded over them train in parallel on all cores
  (:func:`gs_jax.train.seed_sharding`). Only possible before JAX's first computation; later
  calls leave the devices as they are (with a warning) and return the current count.
  """
  import warnings

  import jax
  if not count:   # the cores this process may run on (os.cpu_count() counts the host's)
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  count = count or 1
  if count == 1:                # JAX's default: leave the configuration alone
    return len(jax.devices("cpu"))
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError as e:     # the CPU backend is already initialised
    warnings.warn(f"could not set {count} CPU devices: {e}")
    return len(jax.devices("cpu"))
  return count

"""JSON files that are never half-written, and JSON-able copies of arrays and configs."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def to_builtin(obj):
  """JSON-compatible copy: arrays → lists, tuples → lists, non-finite floats → strings."""
  if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): to_builtin(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_builtin(v) for v in obj]
  if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
    return to_builtin(np.asarray(obj).tolist())
  if isinstance(obj, float) and not np.isfinite(obj):
    return str(obj)  # JSON has no inf/nan
  return obj


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
  """Writes ``data`` as JSON via a temporary file and ``os.replace``: never half-written."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(to_builtin(data), f, indent=2)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def read_json(path: str | os.PathLike, default=None):
  path = Path(path)
  if not path.exists():
    return default
  with open(path) as f:
    return json.load(f)

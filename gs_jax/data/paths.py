"""Where local data copies are found: ``--data_dir`` first, then ``$GS_DATA_DIR``.

``GS_DATA_DIR`` names one folder that holds the datasets side by side (docs/protocols.md §5)::

    $GS_DATA_DIR/mnist/mnist.npz
    $GS_DATA_DIR/cifar10/cifar10.npz
    $GS_DATA_DIR/celeba/...

When neither is given, loaders fall back to ``tfds.load`` (which downloads).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import Sequence

import numpy as np

from gs_jax.base import errors

ENV_VAR = "GS_DATA_DIR"


def resolve(data_dir: str | None, dataset: str) -> str | None:
  """The local location of ``dataset`` (a sub-folder name such as ``"mnist"``), or None.

  An explicit ``data_dir`` wins and is returned as given (a file or a folder; the loader
  reports it if it is missing). Otherwise ``$GS_DATA_DIR/<dataset>`` when that exists. None
  means: use ``tfds.load`` (e.g. CIFAR-100, of which there is no offline copy).
  """
  if data_dir:
    return data_dir
  root = os.environ.get(ENV_VAR)
  path = os.path.join(root, dataset) if root else None
  return path if path and os.path.exists(path) else None


def portable(source: str) -> str:
  """A data source without this machine's paths (for results files): ``$GS_DATA_DIR/…`` when
  it lies under ``$GS_DATA_DIR``, else the file name of an absolute path."""
  root = os.environ.get(ENV_VAR)
  if root and os.path.abspath(source).startswith(os.path.abspath(root) + os.sep):
    return f"${ENV_VAR}/" + os.path.relpath(source, root)
  return source if not os.path.isabs(source) else os.path.basename(source)


def read_npz(path: str, keys: Sequence[str], optional: Sequence[str] = ()) -> dict:
  """``{key: array}`` of ``keys`` (required) and of those ``optional`` keys present in the
  ``.npz`` at ``path``, read without pickle. A missing file, a file that is no ``.npz`` (or is
  truncated), a missing key or an object array is a user error naming ``path``
  (:mod:`gs_jax.base.errors`), not a traceback."""
  if not os.path.isfile(path):
    raise errors.MissingDataError(
      f"{path}: no such file (expected an .npz with keys {', '.join(keys)})"
    )
  try:
    d = np.load(path, allow_pickle=False)
    if not isinstance(d, np.lib.npyio.NpzFile):
      raise errors.BadFileError(
        f"{path}: a single .npy array, not an .npz with keys {', '.join(keys)}"
      )
    with d:
      missing = [k for k in keys if k not in d.files]
      if missing:
        raise errors.BadFileError(f"{path} lacks keys {missing}; it holds {sorted(d.files)}")
      return {k: d[k] for k in (*keys, *optional) if k in d.files}
  except errors.UserError:
    raise
  except (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
  ) as e:  # not an npz, or damaged
    raise errors.BadFileError(
      f"{path}: not a readable .npz with keys {', '.join(keys)} ({type(e).__name__}: {e})"
    ) from e

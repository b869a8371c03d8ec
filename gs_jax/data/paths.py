"""Where local data copies are found: ``--data_dir`` first, then ``$GS_DATA_DIR``.

``GS_DATA_DIR`` names one folder that holds the datasets side by side (docs/protocols.md §5)::

    $GS_DATA_DIR/mnist/mnist.npz
    $GS_DATA_DIR/cifar10/cifar10.npz
    $GS_DATA_DIR/celeba/...

When neither is given, loaders fall back to ``tfds.load`` (which downloads).
"""
from __future__ import annotations

import os

ENV_VAR = "GS_DATA_DIR"


def resolve(data_dir: str | None, dataset: str) -> str | None:
  """The local location of ``dataset`` (a sub-folder name such as ``"mnist"``), or None.

  An explicit ``data_dir`` wins and is returned as given (a file or a folder). Otherwise,
  if ``$GS_DATA_DIR`` is set, ``$GS_DATA_DIR/<dataset>`` is returned; a missing folder there
  is an error (the variable promised the data). None means: use ``tfds.load``.
  """
  if data_dir:
    return data_dir
  root = os.environ.get(ENV_VAR)
  if not root:
    return None
  path = os.path.join(root, dataset)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"${ENV_VAR}={root!r} has no {dataset!r} folder ({path!r} does not exist); unset "
        f"{ENV_VAR} to download with tfds.load, or pass --data_dir")
  return path

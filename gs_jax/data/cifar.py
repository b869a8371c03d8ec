"""CIFAR-10, CIFAR-100 and CIFAR-2 (two CIFAR-10 classes, cat vs dog by default) as whole
uint8 arrays (docs/protocols.md §3.3, §5).

Two sources:

* ``tfds.load`` (the default; downloads on first use). TensorFlow is imported lazily, only on
  this path.
* a local ``.npz`` (``data_dir=``): either a Keras-style CIFAR file with keys ``x_train,
  y_train, x_test, y_test`` (uint8, NHWC; e.g. the offline ``cifar10.npz`` described in its
  SOURCE.md) or an already-binary CIFAR-2 file with the same keys whose labels are {0,1}
  (cat → 0, dog → 1) or {3,5}. An optional boolean ``test_is_lossless`` marks the test images
  that are byte-exact; when absent every test image counts as exact. ``data_dir`` may name
  the file or a folder holding ``cifar10.npz`` / ``cifar2.npz`` / ``cifar100.npz``.

The input pipeline never leaves JAX: the whole split lives on the device as uint8, an epoch is
a permutation drawn with an explicit key (:func:`epoch_permutation`), and random crop (4-pixel
zero padding) + horizontal flip (:func:`augment`) run inside the jitted train step. Pixels are
converted to float in [0,1] by :func:`to_float`; per-channel normalisation happens inside the
model (``gs_jax.models.CIFAR_MEAN``/``CIFAR_STD``), so attacks act on [0,1] pixels.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import errors
from gs_jax.data import paths

DATASETS = ("cifar2", "cifar10", "cifar100")
NUM_CLASSES = {"cifar2": 2, "cifar10": 10, "cifar100": 100}
CIFAR10_NAMES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)  # CIFAR-10's label order
CIFAR2_CLASSES = (3, 5)  # cat, dog (the paper's text) → labels 0, 1

_NPZ_NAMES = {
  "cifar2": ("cifar2.npz", "cifar10.npz"),
  "cifar10": ("cifar10.npz",),
  "cifar100": ("cifar100.npz",),
}
_TFDS_NAMES = {"cifar2": "cifar10", "cifar10": "cifar10", "cifar100": "cifar100"}


@dataclasses.dataclass(frozen=True)
class CifarData:
  """One dataset as host arrays.

  Attributes:
    x_train, x_test: uint8 (n, 32, 32, 3), pixel values 0..255.
    y_train, y_test: int32 (n,) labels in [0, num_classes).
    test_is_lossless: bool (n_test,), True for byte-exact test images.
    num_classes: 2, 10 or 100.
    name: "cifar2", "cifar10" or "cifar100".
    source: where the arrays came from (a path or "tfds:<name>").
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  test_is_lossless: np.ndarray
  num_classes: int
  name: str
  source: str


def _missing_message(dataset: str, detail: str) -> str:
  return (
    f"{dataset} data not found ({detail}). Provide it in one of three ways: (1) run without "
    f"--data_dir so that tensorflow_datasets downloads '{_TFDS_NAMES[dataset]}' "
    f"(needs internet, or a prepared TFDS data dir via TFDS_DATA_DIR); or (2) pass "
    f"--data_dir=<file.npz or folder containing {' or '.join(_NPZ_NAMES[dataset])}> "
    f"holding Keras-style uint8 arrays x_train (n,32,32,3), y_train (n,), x_test, y_test "
    f"[, test_is_lossless]; or (3) set GS_DATA_DIR to a folder holding cifar10/cifar10.npz "
    f"(docs/protocols.md §5)."
  )


def _resolve_npz(dataset: str, data_dir: str) -> str:
  if os.path.isfile(data_dir):
    return data_dir
  if os.path.isdir(data_dir):
    for name in _NPZ_NAMES[dataset]:
      path = os.path.join(data_dir, name)
      if os.path.isfile(path):
        return path
    raise errors.MissingDataError(
      _missing_message(dataset, f"no {' or '.join(_NPZ_NAMES[dataset])} in folder {data_dir!r}")
    )
  raise errors.MissingDataError(_missing_message(dataset, f"{data_dir!r} does not exist"))


def _check_images(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
    raise errors.BadFileError(f"{what} must have shape (n, 32, 32, 3) (NHWC); got {x.shape}")
  if x.dtype != np.uint8:
    raise errors.BadFileError(f"{what} must be uint8 pixels 0..255; got dtype {x.dtype}")
  return x


def _check_labels(y, n: int, what: str) -> np.ndarray:
  y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
  if y.shape != (n,):
    raise errors.BadFileError(f"{what} must have shape ({n},) to match the images; got {y.shape}")
  if not np.issubdtype(y.dtype, np.integer):
    raise errors.BadFileError(f"{what} must be integer class labels; got dtype {y.dtype}")
  return y.astype(np.int32)


def class_ids(names) -> tuple[int, int]:
  """CIFAR-10 label ids of two class names, e.g. ``("airplane", "horse") → (0, 7)``."""
  names = tuple(names.split(",")) if isinstance(names, str) else tuple(names)
  unknown = [c for c in names if c not in CIFAR10_NAMES]
  if len(names) != 2 or names[0] == names[1] or unknown:
    raise ValueError(
      f"CIFAR-2 needs two different CIFAR-10 class names from {CIFAR10_NAMES}; got {names}"
    )
  return CIFAR10_NAMES.index(names[0]), CIFAR10_NAMES.index(names[1])


def select_cifar2(x, y, classes=CIFAR2_CLASSES):
  """Keeps the images of the two CIFAR-10 label ids ``classes`` (default cat=3, dog=5) and
  relabels them 0, 1 in that order."""
  keep = np.isin(y, classes)
  return x[keep], (y[keep] == classes[1]).astype(np.int32), keep


def _finalise(
  dataset, x_train, y_train, x_test, y_test, lossless, source, classes=CIFAR2_CLASSES
) -> CifarData:
  x_train = _check_images(x_train, f"{source}: x_train")
  x_test = _check_images(x_test, f"{source}: x_test")
  y_train = _check_labels(y_train, len(x_train), f"{source}: y_train")
  y_test = _check_labels(y_test, len(x_test), f"{source}: y_test")
  if lossless is None:
    lossless = np.ones(len(x_test), bool)
  lossless = np.asarray(lossless)
  if lossless.shape != (len(x_test),) or lossless.dtype != bool:
    raise errors.BadFileError(
      f"{source}: test_is_lossless must be bool of shape ({len(x_test)},); got "
      f"{lossless.dtype} {lossless.shape}"
    )
  if dataset == "cifar2":
    values = set(np.unique(np.concatenate([y_train, y_test])).tolist())
    if not values <= {0, 1}:  # a 10-class file (or a binary file labelled 3/5): select
      x_train, y_train, _ = select_cifar2(x_train, y_train, classes)
      x_test, y_test, keep = select_cifar2(x_test, y_test, classes)
      lossless = lossless[keep]
    elif tuple(classes) != CIFAR2_CLASSES:
      raise errors.BadFileError(
        f"{source} is an already-binary CIFAR-2 file (cat vs dog); classes "
        f"{classes} need a 10-class CIFAR-10 file"
      )
  k = NUM_CLASSES[dataset]
  for y, what in ((y_train, "y_train"), (y_test, "y_test")):
    bad = np.unique(y[(y < 0) | (y >= k)])
    if bad.size:
      raise errors.BadFileError(
        f"{source}: {what} of {dataset} must lie in [0, {k}); got values {bad.tolist()}"
      )
  if len(x_train) == 0 or len(x_test) == 0:
    raise errors.BadFileError(
      f"{dataset} from {source} has an empty split (train {len(x_train)}, test {len(x_test)})"
    )
  return CifarData(
    np.ascontiguousarray(x_train),
    y_train,
    np.ascontiguousarray(x_test),
    y_test,
    lossless,
    k,
    dataset,
    source,
  )


def load_npz(dataset: str, data_dir: str, classes=CIFAR2_CLASSES) -> CifarData:
  """Reads a Keras-style (or already-binary CIFAR-2) ``.npz``; never imports TensorFlow."""
  path = _resolve_npz(dataset, data_dir)
  arrays = paths.read_npz(
    path, ("x_train", "y_train", "x_test", "y_test"), optional=("test_is_lossless",)
  )
  lossless = arrays.get("test_is_lossless")
  return _finalise(
    dataset,
    arrays["x_train"],
    arrays["y_train"],
    arrays["x_test"],
    arrays["y_test"],
    lossless,
    path,
    classes,
  )


def load_tfds(dataset: str, tfds_data_dir: str | None = None, classes=CIFAR2_CLASSES) -> CifarData:
  """Whole splits from ``tfds.load`` as uint8 arrays (imports TensorFlow lazily)."""
  import tensorflow_datasets as tfds  # lazy: heavy, and only this path needs it

  name = _TFDS_NAMES[dataset]

  def split(s):
    # Batches of 4096 concatenated on the host: ``batch_size=-1`` aborted TF 2.21 (vector::reserve).
    ds = tfds.load(name, split=s, as_supervised=True, batch_size=4096, data_dir=tfds_data_dir)
    xs, ys = zip(*tfds.as_numpy(ds))
    return np.concatenate(xs), np.concatenate(ys)

  try:
    (x_train, y_train), (x_test, y_test) = split("train"), split("test")
  except Exception as e:  # no network, no prepared data dir, …
    raise errors.MissingDataError(
      _missing_message(dataset, f"tfds.load('{name}') failed: {e}")
    ) from e
  return _finalise(dataset, x_train, y_train, x_test, y_test, None, f"tfds:{name}", classes)


def load(dataset: str, data_dir: str | None = None, classes="cat,dog") -> CifarData:
  """Loads ``dataset`` ∈ {cifar2, cifar10, cifar100} from ``data_dir`` (npz) or from TFDS.

  ``classes``: the two CIFAR-10 class names of CIFAR-2 (labels 0, 1 in that order; ignored
  for the other datasets), e.g. ``"cat,dog"`` (the paper's text) or ``"airplane,horse"`` (the
  released Figure-2 code).

  Raises:
    ValueError: unknown dataset name.
    gs_jax.base.errors.BadFileError: malformed arrays (a ValueError; the message names the file and
      the problem).
    gs_jax.base.errors.MissingDataError: data missing (a FileNotFoundError); the message says the
      ways to provide it.
  """
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
  data_dir = paths.resolve(data_dir, "cifar10" if dataset in ("cifar2", "cifar10") else dataset)
  ids = class_ids(classes)
  if data_dir:
    return load_npz(dataset, data_dir, ids)
  return load_tfds(dataset, classes=ids)


def head(data: CifarData, n_train: int = 0, n_test: int = 0) -> CifarData:
  """The first ``n_train`` training and ``n_test`` test images of ``data`` (0: all of them)."""
  tr = slice(n_train or None)
  te = slice(n_test or None)
  return dataclasses.replace(
    data,
    x_train=data.x_train[tr],
    y_train=data.y_train[tr],
    x_test=data.x_test[te],
    y_test=data.y_test[te],
    test_is_lossless=data.test_is_lossless[te],
  )


# ----------------------------------------------------------------------------- JAX pipeline


def to_float(x_uint8: jax.Array) -> jax.Array:
  """uint8 pixels → float32 in [0,1] (the space attacks act in)."""
  return x_uint8.astype(jnp.float32) / 255.0


def epoch_permutation(key: jax.Array, epoch, n: int, batch_size: int) -> jax.Array:
  """Indices of one epoch as ``(n // batch_size, batch_size)``; the last partial batch is dropped.

  The permutation depends only on ``(key, epoch)``, so a resumed run sees the same batches.
  """
  steps = n // batch_size
  if steps < 1:
    raise ValueError(f"batch_size {batch_size} exceeds the number of examples {n}")
  perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
  return perm[: steps * batch_size].reshape(steps, batch_size)


def augment(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
  """Random crop after ``pad``-pixel zero padding, then a random horizontal flip, per example.

  Works on any dtype (uint8 in the train step: it is cheaper to move bytes) and returns the
  same dtype and value range, since cropping and flipping only move pixels (padding adds 0).
  """
  n, h, w, c = x.shape
  k_off, k_flip = jax.random.split(key)
  offsets = jax.random.randint(k_off, (n, 2), 0, 2 * pad + 1)
  flips = jax.random.bernoulli(k_flip, 0.5, (n,))
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

  def one(img, off, flip):
    crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, offsets, flips)

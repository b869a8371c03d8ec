"""MNIST–CIFAR "dominoes" with a contrast dial on the MNIST half (docs/protocols.md §3.8).

The construction of Shah et al. 2020 (*The Pitfalls of Simplicity Bias*, §3.3; their
``mnistcifar_utils``), with one addition, the contrast ``a`` of the MNIST half:

1. Two MNIST digits (default 0 and 1) and two CIFAR-10 classes (default automobile and truck,
   as Shah et al.'s ``cifar_classes=(1, 9)``); label ``y = c`` pairs digit ``DIGITS[c]`` with
   CIFAR class ``c``.
2. Each MNIST image (28×28, uint8) is zero-padded by 2 pixels to 32×32 (Shah et al.'s
   ``np.pad(x, 2)``; no interpolation) and repeated over 3 channels; it is stacked **above** a
   32×32×3 CIFAR image of the same label: a 64×32×3 image, MNIST rows 0–31, CIFAR rows 32–63.
3. Per split and class, ``n_c = min`` of the four pools (two digits, two classes); the first
   ``n_c`` of each class's pool, in a seeded random order, are paired one to one. Train: MNIST
   and CIFAR training sets, 5,000 per class (CIFAR has 5,000); test: the test sets, 980 per
   class (MNIST has 980 zeros). ``n_val`` examples (half per class) are held out of the
   training pools before pairing, as a validation split.
4. Variants (test and validation): ``intact`` (both halves predict the label),
   ``mnist_random`` (the MNIST halves permuted across the examples of the split with a
   seeded permutation, so the digit is independent of the label and the CIFAR half is the
   only signal), ``cifar_random`` (the CIFAR halves permuted; the digit is the only signal).
   A permutation keeps the set of images and only breaks their pairing with the labels (Shah
   et al. partition the pooled images at random into two halves: the same distribution).
5. **Contrast** (:func:`to_float`): pixels as floats in [0,1] (uint8/255) for both halves,
   then the MNIST half becomes ``b + a·(m − b)`` with ``m`` its [0,1] intensity and ``b``
   the background (default 0, MNIST's own black background). ``a = 1`` is Shah et al.'s
   image; ``a = 0`` a constant (blank) MNIST half equal to ``b``, which carries no
   information; in between, the digit's pixel differences from the background — and with them
   the MNIST half's share of every input-gradient and kernel — are scaled by ``a``. The CIFAR
   half is untouched, and both halves share one normalisation: the network maps [0,1] to
   [−1,1] (:class:`gs_jax.models.NarLeNet`), as the CIFAR experiments of §3.3 do.

Everything is deterministic given ``seed`` (``np.random.default_rng(seed)``: the per-class
pool orders, then the validation and test permutations, in that order). Data come from the
offline copies (``$GS_DATA_DIR/mnist/mnist.npz``, ``$GS_DATA_DIR/cifar10/cifar10.npz``, or
``--data_dir`` naming the folder that holds ``mnist/`` and ``cifar10/``) or ``tfds.load``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from gs_jax.base import errors
from gs_jax.data import cifar, paths

DIGITS = (0, 1)
CLASSES = "automobile,truck"
VARIANTS = ("intact", "mnist_random", "cifar_random")
HEIGHT, WIDTH = 64, 32
SPLIT_ROW = 32  # rows [0, 32): the MNIST half; [32, 64): the CIFAR half


@dataclasses.dataclass(frozen=True)
class Dominoes:
  """One split (or variant) of the dominoes.

  Attributes:
    x: uint8 (n, 64, 32, 3), the composite at contrast 1 (MNIST half: the padded digit in
      every channel, 0..255); :func:`to_float` applies the contrast.
    y: int32 (n,) labels in {0, 1}.
    digit: int32 (n,) the MNIST digit shown (0..9).
    cifar_class: int32 (n,) the CIFAR half's class as label index (0 or 1).
    cifar_lossless: bool (n,) the CIFAR half is byte-exact (docs/protocols.md §5; the
      offline test set is 1,000 exact + 9,000 recompressed images).
  """

  x: np.ndarray
  y: np.ndarray
  digit: np.ndarray
  cifar_class: np.ndarray
  cifar_lossless: np.ndarray

  def __len__(self):
    return len(self.y)


def load_mnist(data_dir: str | None = None):
  """MNIST ``(x_train, y_train, x_test, y_test)``: uint8 (n, 28, 28) images, int64 digits.

  ``data_dir``: a folder with ``mnist.npz`` (Keras layout) or the file; None:
  ``$GS_DATA_DIR/mnist``, else ``tfds.load("mnist")`` (downloads).
  """
  data_dir = paths.resolve(data_dir, "mnist")
  if data_dir is None:
    import tensorflow_datasets as tfds  # lazy: heavy, and it downloads

    out = []
    for split in ("train", "test"):
      ds = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1))
      out += [ds["image"][..., 0], ds["label"]]
    source = "tfds:mnist"
  else:
    source = path = data_dir if data_dir.endswith(".npz") else os.path.join(data_dir, "mnist.npz")
    if not os.path.isfile(path):
      raise errors.MissingDataError(
        f"no MNIST file at {path!r}: pass --data_dir=<folder holding mnist/mnist.npz and "
        "cifar10/cifar10.npz>, or set GS_DATA_DIR, or omit both to download with tfds.load"
      )
    f = paths.read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    out = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
  xs, ys = (np.asarray(out[0]), np.asarray(out[2])), (np.asarray(out[1]), np.asarray(out[3]))
  for x, y in zip(xs, ys):
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
      raise errors.BadFileError(
        f"{source}: expected MNIST images (n, 28, 28) and labels (n,); got {x.shape} and {y.shape}"
      )
  return xs[0], ys[0].astype(np.int64), xs[1], ys[1].astype(np.int64)


def pad_digit(images: np.ndarray) -> np.ndarray:
  """(n, 28, 28) → (n, 32, 32): 2 pixels of 0 on every side (Shah et al.)."""
  images = np.asarray(images)
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise ValueError(f"MNIST images must have shape (n, 28, 28); got {images.shape}")
  return np.pad(images, ((0, 0), (2, 2), (2, 2)))


def stack(mnist32: np.ndarray, cifar32: np.ndarray) -> np.ndarray:
  """The composite: ``mnist32`` (n, 32, 32) over ``cifar32`` (n, 32, 32, 3) → (n, 64, 32, 3)."""
  mnist32, cifar32 = np.asarray(mnist32), np.asarray(cifar32)
  if (
    mnist32.shape[1:] != (32, 32)
    or cifar32.shape[1:] != (32, 32, 3)
    or len(mnist32) != len(cifar32)
  ):
    raise ValueError(
      f"expected MNIST (n, 32, 32) and CIFAR (n, 32, 32, 3) of equal n; got "
      f"{mnist32.shape} and {cifar32.shape}"
    )
  top = np.repeat(mnist32[..., None], 3, axis=-1).astype(cifar32.dtype)
  return np.concatenate([top, cifar32], axis=1)


def to_float(x_uint8, a: float, background: float = 0.0):
  """The network's input at contrast ``a``: float32 in [0,1], (n, 64, 32, 3).

  ``x/255`` for the CIFAR half (rows 32–63) and ``b + a·(x/255 − b)`` for the MNIST half
  (rows 0–31), ``b = background``. Works on NumPy and JAX arrays (traceable: inside the
  jitted train step the data stay uint8 and ``a`` may be a traced scalar).
  """
  import jax.numpy as jnp

  if x_uint8.shape[-3:] != (HEIGHT, WIDTH, 3):
    raise ValueError(f"dominoes must have shape (n, {HEIGHT}, {WIDTH}, 3); got {x_uint8.shape}")
  x = x_uint8.astype(jnp.float32) / 255.0
  rows = jnp.arange(HEIGHT)[:, None, None] < SPLIT_ROW
  return jnp.where(rows, background + a * (x - background), x)


def _check_contrast(a):
  if not 0.0 <= a <= 1.0:
    raise ValueError(f"the MNIST-half contrast a must lie in [0, 1]; got {a}")


def _pair(rng, m_imgs, m_digits, c_imgs, c_labels, c_lossless, digits, n_per_class=None):
  """Pairs, per class c, the first n_c digits ``digits[c]`` with the first n_c CIFAR images of
  class c (each pool in a seeded random order); returns the pairs in a seeded random order."""
  pools = []
  for c in (0, 1):
    mi = np.flatnonzero(m_digits == digits[c])
    ci = np.flatnonzero(c_labels == c)
    pools.append((rng.permutation(mi), rng.permutation(ci)))
  n = min(min(len(p[0]), len(p[1])) for p in pools)
  if n_per_class is not None:
    n = min(n, n_per_class)
  if n < 1:
    raise ValueError("a class has no MNIST digits or no CIFAR images to pair")
  mi = np.concatenate([p[0][:n] for p in pools])
  ci = np.concatenate([p[1][:n] for p in pools])
  order = rng.permutation(2 * n)
  mi, ci = mi[order], ci[order]
  y = np.repeat(np.arange(2, dtype=np.int32), n)[order]
  return Dominoes(
    stack(pad_digit(m_imgs[mi]), c_imgs[ci]),
    y,
    m_digits[mi].astype(np.int32),
    c_labels[ci].astype(np.int32),
    np.asarray(c_lossless)[ci].astype(bool),
  )


def randomise(d: Dominoes, half: str, rng: np.random.Generator) -> Dominoes:
  """``d`` with one half (``"mnist"`` or ``"cifar"``) permuted across its examples: that half
  no longer depends on the label (step 4 of the module docstring)."""
  perm = rng.permutation(len(d))
  x = d.x.copy()
  if half == "mnist":
    x[:, :SPLIT_ROW] = d.x[perm, :SPLIT_ROW]
    return dataclasses.replace(d, x=x, digit=d.digit[perm])
  if half == "cifar":
    x[:, SPLIT_ROW:] = d.x[perm, SPLIT_ROW:]
    return dataclasses.replace(
      d, x=x, cifar_class=d.cifar_class[perm], cifar_lossless=d.cifar_lossless[perm]
    )
  raise ValueError(f"half must be 'mnist' or 'cifar'; got {half!r}")


def build(
  seed: int,
  mnist,
  cifar2: cifar.CifarData,
  *,
  digits=DIGITS,
  n_val: int = 0,
  n_train: int = 0,
  n_test: int = 0,
) -> dict[str, Dominoes]:
  """All splits, deterministic given ``seed``.

  Args:
    mnist: ``(x_train, y_train, x_test, y_test)`` as :func:`load_mnist` returns.
    cifar2: the two CIFAR classes as a :class:`gs_jax.data.cifar.CifarData` with labels 0, 1.
    digits: the two MNIST digits paired with labels 0 and 1.
    n_val: validation examples held out of the training pools (n_val/2 per class; even).
    n_train, n_test: keep at most this many per split (n/2 per class; 0: all).

  Returns:
    ``{"train", "val", "val_mnist_random", "test", "test_mnist_random",
    "test_cifar_random"}`` → :class:`Dominoes` (no ``val*`` when ``n_val`` is 0).
  """
  if len(digits) != 2 or digits[0] == digits[1] or not all(0 <= d <= 9 for d in digits):
    raise ValueError(f"digits must be two different MNIST digits; got {digits}")
  for name, v in (("n_val", n_val), ("n_train", n_train), ("n_test", n_test)):
    if v < 0 or v % 2:
      raise ValueError(f"{name} must be an even number >= 0 (half per class); got {v}")
  if cifar2.num_classes != 2:
    raise ValueError(f"cifar2 must hold two classes labelled 0, 1; got {cifar2.num_classes}")
  xm_tr, ym_tr, xm_te, ym_te = mnist
  rng = np.random.default_rng(seed)
  m_val, c_val = np.zeros(0, np.int64), np.zeros(0, np.int64)
  smallest = min(
    min(np.sum(ym_tr == d) for d in digits), min(np.sum(cifar2.y_train == c) for c in (0, 1))
  )
  if n_val // 2 >= smallest:
    raise ValueError(
      f"n_val={n_val} exceeds the training pools: at most "
      f"{2 * (smallest - 1)} leave a training pair per class"
    )
  if n_val:  # n_val/2 digits and CIFAR images per class leave the training pools
    m_val = np.concatenate(
      [rng.permutation(np.flatnonzero(ym_tr == digits[c]))[: n_val // 2] for c in (0, 1)]
    )
    c_val = np.concatenate(
      [rng.permutation(np.flatnonzero(cifar2.y_train == c))[: n_val // 2] for c in (0, 1)]
    )
  m_tr = np.setdiff1d(np.arange(len(ym_tr)), m_val)
  c_tr = np.setdiff1d(np.arange(len(cifar2.y_train)), c_val)
  out = {
    "train": _pair(
      rng,
      xm_tr[m_tr],
      ym_tr[m_tr],
      cifar2.x_train[c_tr],
      cifar2.y_train[c_tr],
      np.ones(len(c_tr), bool),
      digits,
      (n_train // 2) or None,
    )
  }
  if n_val:
    out["val"] = _pair(
      rng,
      xm_tr[m_val],
      ym_tr[m_val],
      cifar2.x_train[c_val],
      cifar2.y_train[c_val],
      np.ones(len(c_val), bool),
      digits,
    )
  test = _pair(
    rng,
    xm_te,
    ym_te,
    cifar2.x_test,
    cifar2.y_test,
    cifar2.test_is_lossless,
    digits,
    (n_test // 2) or None,
  )
  out["test"] = test
  out["test_mnist_random"] = randomise(test, "mnist", rng)
  out["test_cifar_random"] = randomise(test, "cifar", rng)
  if n_val:
    out["val_mnist_random"] = randomise(out["val"], "mnist", rng)
  return out


def load_sources(data_dir: str | None = None, classes: str = CLASSES):
  """``(mnist, cifar2, sources)``: the MNIST arrays (:func:`load_mnist`), the two CIFAR classes
  (:func:`gs_jax.data.cifar.load`) and where they came from (paths under ``$GS_DATA_DIR``
  written as such, so results files hold no machine paths).

  ``data_dir``: a folder holding ``mnist/mnist.npz`` and ``cifar10/cifar10.npz`` (default:
  ``$GS_DATA_DIR``, else ``tfds.load``).
  """
  m_dir = os.path.join(data_dir, "mnist") if data_dir else None
  c_dir = os.path.join(data_dir, "cifar10") if data_dir else None
  mnist = load_mnist(m_dir)
  c2 = cifar.load("cifar2", c_dir, classes)
  return (
    mnist,
    c2,
    {
      "mnist": _portable(paths.resolve(m_dir, "mnist") or "tfds:mnist"),
      "cifar": _portable(c2.source),
    },
  )


def _portable(source: str) -> str:
  root = os.environ.get(paths.ENV_VAR)
  if root and os.path.abspath(source).startswith(os.path.abspath(root) + os.sep):
    return f"${paths.ENV_VAR}/" + os.path.relpath(source, root)
  return source if not os.path.isabs(source) else os.path.basename(source)


def load(
  seed: int,
  data_dir: str | None = None,
  *,
  classes: str = CLASSES,
  digits=DIGITS,
  n_val: int = 0,
  n_train: int = 0,
  n_test: int = 0,
):
  """:func:`build` from :func:`load_sources`; returns ``(splits, sources)``."""
  mnist, c2, sources = load_sources(data_dir, classes)
  splits = build(seed, mnist, c2, digits=digits, n_val=n_val, n_train=n_train, n_test=n_test)
  return splits, sources

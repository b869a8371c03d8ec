"""Colored MNIST (Arjovsky et al. 2019), as used for Table 2 and Figure 3 (docs/protocols.md §3.4).

Construction, following the released code (IRM's ``colored_mnist/main.py`` as copied by the
gradient-starvation authors), written with numpy so that it is deterministic given one seed:

1. Take the 60,000 MNIST *training* images. The first 50,000, shuffled with ``seed``, are the
   training pool; the last 10,000 (in file order) are the test pool.
2. Subsample 28×28 → 14×14 (every second row and column, ``[::2, ::2]``).
3. Binary label ``y = (digit < 5)``, flipped with probability 0.25 (label noise).
4. Colour ``c = y XOR Bernoulli(e)``; the image is duplicated into two channels (red = 0,
   green = 1) and channel ``1 − c`` is zeroed, so channel ``c`` holds the digit.
5. Pixels are divided by 255; inputs are (n, 2, 14, 14) float32 (392 features when flattened
   channel-major, as ``input.view(n, 2·14·14)`` in the released code).

Environments: training pool even positions ``[::2]`` with e = 0.2, odd positions ``[1::2]``
with e = 0.1 (25,000 each), test pool with e = 0.9.

Figure-3 variants of the test environment (same labels and colours as the test env):

* ``gray_digits``   – both channels hold ``image/2`` (no colour information);
* ``color_digits``  – the test environment itself;
* ``gray_blank``    – every image replaced by a constant image whose pixels all equal the mean
  intensity of the (subsampled) test pool, both channels ``/2``;
* ``color_blank``   – that constant image, coloured as in step 4 (colour is the only signal).

Randomness: ``np.random.default_rng(seed)`` gives the training-pool permutation, then the label
and colour coin flips of env 0, env 1 and the test env, in that order. (The released code
draws these with torch's RNG seeded by ``1234 + restart`` and reshuffles per restart, so the
individual coin flips differ; the distribution is the same.)
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from gs_jax.base import errors
from gs_jax.data import paths

TRAIN_POOL = 50_000
LABEL_NOISE = 0.25
TRAIN_COLOR_FLIPS = (0.2, 0.1)
TEST_COLOR_FLIP = 0.9
VARIANTS = ("gray_digits", "color_digits", "gray_blank", "color_blank")
# Figure-3 layout (rows: digit / blank, columns: grayscale / coloured).
VARIANT_GRID = (("gray_digits", "color_digits"), ("gray_blank", "color_blank"))


class Environment(NamedTuple):
  """One environment: inputs ``x`` (n, 2, 14, 14) float32 in [0,1], labels ``y`` (n,) float32
  in {0,1}, colours ``color`` (n,) int32 in {0,1} (index of the non-zero channel; for
  grayscale variants the colour that *would* have been drawn), digits (n,) int32."""

  x: np.ndarray
  y: np.ndarray
  color: np.ndarray
  digit: np.ndarray


def load_mnist_train(data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The 60,000 MNIST training images (uint8, 60000×28×28) and digits (int64).

  Args:
    data_dir: a folder holding ``mnist.npz`` (Keras layout: ``x_train``, ``y_train``, …), or
      the path of such a file. ``None`` uses ``$GS_DATA_DIR/mnist`` when ``GS_DATA_DIR`` is
      set (docs/protocols.md §5), else ``tfds.load("mnist")`` (downloads; tensorflow is imported only then). TFDS stores the
      split in its own shuffled order, so the 50,000/10,000 split differs from the file-order
      split of the released code (same distribution).

  Raises:
    gs_jax.base.errors.MissingDataError: ``data_dir`` has no ``mnist.npz`` (a FileNotFoundError).
    gs_jax.base.errors.BadFileError: the file is no npz, lacks a key or has the wrong shapes (a
      ValueError).
  """
  data_dir = paths.resolve(data_dir, "mnist")
  if data_dir is None:
    import tensorflow_datasets as tfds  # lazy: heavy, and it downloads

    ds = tfds.as_numpy(tfds.load("mnist", split="train", batch_size=-1))
    images, digits = ds["image"][..., 0], ds["label"]
    source = "tfds:mnist"
  else:
    source = path = data_dir if data_dir.endswith(".npz") else os.path.join(data_dir, "mnist.npz")
    if not os.path.isfile(path):
      raise errors.MissingDataError(
        f"no MNIST file at {path!r}: pass --data_dir=<folder with mnist.npz> (Keras layout, "
        "keys x_train/y_train), or set GS_DATA_DIR, or omit both to "
        "download with tfds.load('mnist')"
      )
    f = paths.read_npz(path, ("x_train", "y_train"))
    images, digits = f["x_train"], f["y_train"]
  images, digits = np.asarray(images), np.asarray(digits)
  if (
    images.shape != (60_000, 28, 28)
    or digits.shape != (60_000,)
    or not np.issubdtype(digits.dtype, np.integer)
  ):
    raise errors.BadFileError(
      f"{source}: expected MNIST train images (60000, 28, 28) and integer "
      f"labels (60000,); got {images.shape} and {digits.dtype} {digits.shape}"
    )
  digits = digits.astype(np.int64)
  return images, digits


def subsample(images: np.ndarray) -> np.ndarray:
  """28×28 → 14×14 by keeping every second row and column (``[:, ::2, ::2]``)."""
  return images.reshape(-1, 28, 28)[:, ::2, ::2]


def _colorize(gray: np.ndarray, color: np.ndarray, grayscale: bool) -> np.ndarray:
  """(n,14,14) intensities in [0,255] → (n,2,14,14) float32 in [0,1]."""
  x = np.repeat(gray[:, None].astype(np.float32), 2, axis=1)
  if grayscale:
    x /= 2.0
  else:
    x[np.arange(len(x)), 1 - color] = 0.0  # zero the other colour's channel
  return x / 255.0


def make_environment(
  images: np.ndarray, digits: np.ndarray, e: float, rng: np.random.Generator
) -> Environment:
  """Steps 2–5 of the module docstring for one environment with colour-flip probability e."""
  if not 0.0 <= e <= 1.0:
    raise ValueError(f"colour-flip probability must be in [0, 1]; got {e}")
  gray = subsample(images)
  y = (digits < 5).astype(np.int32) ^ (rng.random(len(digits)) < LABEL_NOISE)
  color = y ^ (rng.random(len(digits)) < e)
  return Environment(
    _colorize(gray, color, False),
    y.astype(np.float32),
    color.astype(np.int32),
    digits.astype(np.int32),
  )


def variant(env: Environment, gray_images: np.ndarray, name: str) -> Environment:
  """A Figure-3 variant of ``env``, whose 14×14 intensities (0..255) are ``gray_images``."""
  if name not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}; got {name!r}")
  if name.endswith("blank"):
    gray_images = np.full_like(gray_images, gray_images.astype(np.float64).mean(), dtype=np.float32)
  x = _colorize(gray_images, env.color, grayscale=name.startswith("gray"))
  return env._replace(x=x)


def colored_mnist(
  seed: int = 0,
  data_dir: str | None = None,
  *,
  mnist=None,
  train_env_flips=TRAIN_COLOR_FLIPS,
  test_env_flip: float = TEST_COLOR_FLIP,
  with_variants: bool = True,
) -> dict[str, Environment]:
  """All environments of docs/protocols.md §3.4, deterministic given ``seed``.

  Args:
    seed: seeds the training-pool shuffle and all coin flips.
    data_dir: see :func:`load_mnist_train`.
    mnist: optional ``(images, digits)`` already loaded (skips loading; any n ≥ 2 works, the
      last ``n/6`` examples then form the test pool, which lets tests use small subsets).
    train_env_flips: colour-flip probabilities of the two training environments.
    with_variants: also build the four Figure-3 variants.

  Returns:
    ``{"train0", "train1", "test"}`` (and the names in :data:`VARIANTS`) → :class:`Environment`.
  """
  images, digits = load_mnist_train(data_dir) if mnist is None else mnist
  images, digits = np.asarray(images), np.asarray(digits)
  n = len(images)
  n_pool = TRAIN_POOL if n == 60_000 else n - n // 6
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n_pool)
  pool_x, pool_d = images[:n_pool][perm], digits[:n_pool][perm]
  test_x, test_d = images[n_pool:], digits[n_pool:]
  envs = {
    "train0": make_environment(pool_x[::2], pool_d[::2], train_env_flips[0], rng),
    "train1": make_environment(pool_x[1::2], pool_d[1::2], train_env_flips[1], rng),
    "test": make_environment(test_x, test_d, test_env_flip, rng),
  }
  if with_variants:
    gray = subsample(test_x)
    for name in VARIANTS:
      envs[name] = envs["test"] if name == "color_digits" else variant(envs["test"], gray, name)
  return envs


def to_grayscale(x: np.ndarray) -> np.ndarray:
  """The oracle's input: the two channels summed, (n, 2, 14, 14) → (n, 196).

  As the released oracle (IRM's ``main.py`` with ``--grayscale_model``:
  ``input.view(n, 2, 14*14).sum(dim=1)``): one channel of a coloured image is zero, so the sum
  is the digit's intensity/255 whatever its colour, and a grayscale variant (both channels
  /2) gives the same image.
  """
  x = np.asarray(x)
  return x.reshape(x.shape[0], 2, -1).sum(axis=1)


def train_batch(envs: dict[str, Environment], grayscale: bool = False) -> dict[str, np.ndarray]:
  """The union of both training environments as one full batch.

  Returns ``{"x": (n, 392) or (n, 196), "y": (n,) in {0,1}, "env": (n,) int32}``; ERM and SD
  ignore ``"env"``, IRM and V-REx use it to form per-environment risks.
  """
  e0, e1 = envs["train0"], envs["train1"]
  x = np.concatenate([e0.x, e1.x])
  x = to_grayscale(x) if grayscale else x.reshape(len(x), -1)
  return {
    "x": np.ascontiguousarray(x, np.float32),
    "y": np.concatenate([e0.y, e1.y]).astype(np.float32),
    "env": np.concatenate([np.zeros(len(e0.y), np.int32), np.ones(len(e1.y), np.int32)]),
  }


def flat_inputs(env: Environment, grayscale: bool = False) -> np.ndarray:
  """An environment's inputs as the model sees them: (n, 392), or (n, 196) for the oracle."""
  x = to_grayscale(env.x) if grayscale else env.x.reshape(len(env.x), -1)
  return np.ascontiguousarray(x, np.float32)


def subset(
  envs: dict[str, Environment], n_train: int = 0, n_test: int = 0
) -> dict[str, Environment]:
  """Reduced runs: the first ``n_train/2`` examples of each training environment and the first
  ``n_test`` of the test environment and its variants (0 keeps everything)."""
  envs = dict(envs)
  if n_train:
    half = max(n_train // 2, 1)
    for name in ("train0", "train1"):
      envs[name] = Environment(*(a[:half] for a in envs[name]))
  if n_test:
    for name in ("test",) + VARIANTS:
      if name in envs:
        envs[name] = Environment(*(a[:n_test] for a in envs[name]))
  return envs


def model_inputs(envs: dict[str, Environment], grayscale: bool = False):
  """What the model sees: ``(batch, variants)``.

  ``batch`` is :func:`train_batch` plus the test environment as ``"test_x"``, ``"test_y"``;
  ``variants`` maps each Figure-3 variant to ``(x, y)``. Inputs are (n, 392), or (n, 196) with
  ``grayscale`` (the oracle).
  """
  batch = train_batch(envs, grayscale=grayscale)
  batch["test_x"] = flat_inputs(envs["test"], grayscale)
  batch["test_y"] = envs["test"].y
  variants = {name: (flat_inputs(envs[name], grayscale), envs[name].y) for name in VARIANTS}
  return batch, variants

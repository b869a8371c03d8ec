"""Streaming image input: decode, crop, resize and batch in background threads (grain), for
datasets that do not fit in memory (the official CelebA train split is ≈ 24 GB as uint8 at
224 px; docs/experiments/paper_scale.md).

A :class:`Stream` stands in for a split's uint8 image array ``x`` (n, s, s, 3): it has
``shape``/``len`` and yields batches of given rows, in the given order, decoded on demand.

* :meth:`Stream.start` begins a background pipeline over one epoch's rows ``idx`` (steps, B)
  (:func:`gs_jax.train.fit_minibatch` calls it at the start of every epoch); :meth:`Stream.take`
  then returns the next batch and checks that its rows are the ones asked for. The rows of an
  epoch come from :func:`gs_jax.data.cifar.epoch_permutation` (a function of the seed and the
  epoch only) and decoding is deterministic, so a resumed run sees the same batches, pixel for
  pixel, as an uninterrupted one and as the in-memory path.
* :meth:`Stream.batches` iterates over any rows (evaluation: the split in order).

Why grain (``pip install 'gs-jax[stream]'``): a pure-Python package (one small dependency,
portpicker) that installs beside both supported stacks (numpy 1.26 and 2.x, Python 3.11) and
works on NumPy arrays directly, with threads: PIL's JPEG decode and resize release the GIL, so
threads scale with cores without pickling images between processes. tf.data would pull in
TensorFlow (≈ 0.5–1 GB, its own NumPy pins) for the same job. Memory is bounded by the prefetch
buffer: ``prefetch`` batches of images in flight (+ one per thread being decoded).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import numpy as np


class ImageFiles:
  """Random-access source: ``self[i]`` = uint8 (size, size, 3) of ``image_dir/files[i]``
  through ``transform(PIL image, size)`` (CelebA: :func:`gs_jax.data.celeba.center_crop_resize`)."""

  def __init__(self, image_dir: str, files: Sequence[str], size: int, transform: Callable):
    self.image_dir, self.files, self.size, self.transform = image_dir, list(files), size, transform

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> np.ndarray:
    from PIL import Image

    with Image.open(os.path.join(self.image_dir, self.files[int(i)])) as img:
      return self.transform(img, self.size)


class TfdsImages:
  """Random-access source over a TFDS split (``tfds.data_source``; needs the dataset prepared
  in array_record format): ``self[i]`` = ``transform(PIL image of record i, size)``."""

  def __init__(self, source, size: int, transform: Callable):
    self.source, self.size, self.transform = source, size, transform

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> np.ndarray:
    from PIL import Image

    return self.transform(Image.fromarray(np.asarray(self.source[int(i)]["image"])), self.size)


class _Rows:
  """``source`` read at ``rows`` (a flat index array): the order of one pipeline."""

  def __init__(self, source, rows):
    self.source, self.rows = source, rows

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, k):
    return self.source[self.rows[k]]


class Stream:
  """A split's images read on demand (module docstring).

  Args:
    source: random access ``source[i]`` → uint8 (s, s, 3), ``len(source)`` = n.
    threads: decoding threads.
    prefetch: batches decoded ahead of the consumer (the memory bound, with ``threads``).
  """

  def __init__(self, source, *, threads: int = 8, prefetch: int = 4):
    if threads < 1 or prefetch < 1:
      raise ValueError(f"threads and prefetch must be >= 1; got {threads}, {prefetch}")
    self.source, self.threads, self.prefetch = source, threads, prefetch
    first = np.asarray(source[0]) if len(source) else np.zeros((0, 0, 3), np.uint8)
    self.shape = (len(source), *first.shape)
    self.dtype = np.uint8
    self._it, self._expected = None, None

  def __len__(self) -> int:
    return self.shape[0]

  def batches(self, idx) -> Iterator[np.ndarray]:
    """uint8 batches ``x[idx[j]]`` for every row ``j`` of ``idx`` (steps, B), decoded by a
    background pipeline (ordered; at most ``prefetch`` batches ahead)."""
    try:
      import grain
    except ImportError as e:
      raise ImportError(
        "streamed input needs grain: pip install 'gs-jax[stream]' (or run "
        "with --no_stream, reading the images into memory)"
      ) from e
    idx = np.asarray(idx)
    if idx.ndim != 2:
      raise ValueError(f"idx must have shape (steps, batch); got {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise ValueError(f"rows out of range [0, {len(self)}): {idx.min()}..{idx.max()}")
    b = idx.shape[1]
    ds = grain.MapDataset.source(_Rows(self.source, idx.reshape(-1)))
    opts = grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.prefetch * b)
    return iter(ds.to_iter_dataset(opts).batch(b, batch_fn=np.stack))

  def start(self, idx) -> None:
    """Begins decoding one epoch's rows ``idx`` (steps, B) in the background."""
    idx = np.asarray(idx)
    self._it, self._expected = self.batches(idx), list(idx)

  def take(self, ids) -> np.ndarray:
    """The next batch of the started epoch, whose rows must be ``ids`` (else a pipeline for
    ``ids`` alone is run: correct, without read-ahead)."""
    ids = np.asarray(ids)
    if self._expected and np.array_equal(self._expected[0], ids):
      self._expected.pop(0)
      return next(self._it)
    self._it, self._expected = None, None
    return next(self.batches(ids[None]))


def is_stream(x) -> bool:
  return isinstance(x, Stream)

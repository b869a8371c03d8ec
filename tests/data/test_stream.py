"""Streaming CelebA input (gs_jax.data.stream, grain): the same pixels and batches as the
in-memory path, in the order asked for, bad rows and options refused, and the tfds source
streamed with labels and the released crop."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gs_jax.data import celeba, cifar

pytest.importorskip("grain")
from gs_jax.data import stream  # noqa: E402


def test_stream_yields_the_in_memory_pixels_in_the_asked_order(celeba_official_dir):
  mem = celeba.load(celeba_official_dir, size=40, verbose=False)
  st = celeba.load(celeba_official_dir, size=40, verbose=False, stream=True, threads=3, prefetch=2)
  x, xs = mem.splits["train"].x, st.splits["train"].x
  assert stream.is_stream(xs) and xs.shape == x.shape == (24, 40, 40, 3)
  np.testing.assert_array_equal(st.splits["train"].g, mem.splits["train"].g)
  idx = cifar.epoch_permutation(jax.random.PRNGKey(0), 1, 24, 5)  # (4, 5): 4 rows dropped
  got = list(xs.batches(idx))
  assert len(got) == 4
  for ids, xb in zip(idx, got):
    assert xb.dtype == np.uint8
    np.testing.assert_array_equal(xb, x[ids])
  xs.start(idx)  # an epoch started ahead, then taken batch by batch
  for ids in idx:
    np.testing.assert_array_equal(xs.take(ids), x[ids])
  np.testing.assert_array_equal(xs.take(np.array([3, 3, 0])), x[[3, 3, 0]])  # unplanned rows


def test_stream_rejects_bad_rows_and_options(celeba_official_dir):
  xs = celeba.load(celeba_official_dir, size=16, verbose=False, stream=True).splits["val"].x
  with pytest.raises(ValueError, match="out of range"):
    next(xs.batches(np.array([[0, 8]])))
  with pytest.raises(ValueError, match="shape"):
    xs.batches(np.arange(4))
  with pytest.raises(ValueError, match="threads and prefetch"):
    stream.Stream(xs.source, threads=0)


def test_tfds_source_is_streamed_with_labels_and_the_released_crop(monkeypatch):
  """The TFDS path (``tfds.data_source``, mocked): labels by attribute name, images through
  the released crop + resize, on demand."""
  import sys
  import types

  from PIL import Image

  rng = np.random.default_rng(0)
  records = {
    s: [
      {
        "image": rng.integers(0, 256, (218, 178, 3), dtype=np.uint8),
        "attributes": {"Blond_Hair": bool(i % 2), "Male": bool(i // 2 % 2), "Smiling": True},
      }
      for i in range(n)
    ]
    for s, n in (("train", 6), ("validation", 4), ("test", 4))
  }
  fake = types.SimpleNamespace(data_source=lambda name, split: records[split])
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  monkeypatch.delenv("GS_DATA_DIR", raising=False)
  d = celeba.load(None, size=24, stream=True, verbose=False)
  assert d.source == "tfds" and d.division == "official"
  tr = d.splits["train"]
  np.testing.assert_array_equal(tr.y, [0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(tr.a, [0, 0, 1, 1, 0, 0])
  (xb,) = list(tr.x.batches(np.array([[5, 0]])))
  for row, i in zip(xb, (5, 0)):
    want = celeba.center_crop_resize(Image.fromarray(records["train"][i]["image"]), 24)
    np.testing.assert_array_equal(row, want)
  assert len(celeba.load(None, size=24, stream=True, limit=3, verbose=False).splits["val"].y) == 3

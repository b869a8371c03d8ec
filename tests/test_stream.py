"""Streaming CelebA input (gs_jax.data.stream, grain): the same pixels and batches as the
in-memory path, in the order asked for, and the experiment's numbers unchanged by --stream."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from gs_jax.data import celeba, cifar
from tests.test_celeba import make_official_layout

pytest.importorskip("grain")
from gs_jax.data import stream  # noqa: E402


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
  root = tmp_path_factory.mktemp("celeba") / "celeba"
  make_official_layout(str(root), n_per_split=(24, 8, 8))
  return str(root)


def test_stream_yields_the_in_memory_pixels_in_the_asked_order(layout):
  mem = celeba.load(layout, size=40, verbose=False)
  st = celeba.load(layout, size=40, verbose=False, stream=True, threads=3, prefetch=2)
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


def test_stream_rejects_bad_rows_and_options(layout):
  xs = celeba.load(layout, size=16, verbose=False, stream=True).splits["val"].x
  with pytest.raises(ValueError, match="out of range"):
    next(xs.batches(np.array([[0, 8]])))
  with pytest.raises(ValueError, match="shape"):
    xs.batches(np.arange(4))
  with pytest.raises(ValueError, match="threads and prefetch"):
    stream.Stream(xs.source, threads=0)


def test_experiment_with_stream_gives_the_in_memory_numbers(layout, tmp_path):
  from experiments import celeba as exp

  common = [
    "--preset=cpu",
    "--method=erm",
    "--epochs=2",
    "--batch_size=8",
    "--chunk=2",
    "--image_size=16",
    "--eval_batch=8",
    "--no_progress",
    f"--data_dir={layout}",
  ]
  a = exp.main(common + [f"--out_dir={tmp_path / 'mem'}"])
  b = exp.main(common + ["--stream", "--stream_threads=2", f"--out_dir={tmp_path / 'stream'}"])
  assert b["data"]["streamed"] and not a["data"]["streamed"]
  ha = [json.loads(r) for r in (tmp_path / "mem" / "metrics.jsonl").read_text().splitlines()]
  hb = [json.loads(r) for r in (tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()]
  assert len(ha) == len(hb) == 2
  for ra, rb in zip(ha, hb):  # same batches; the step is compiled apart (gather outside)
    np.testing.assert_allclose(rb["loss"], ra["loss"], rtol=1e-5)
    assert rb["val"] == ra["val"] and rb["test"] == ra["test"]


def test_pipeline_benchmark_writes_results(layout, tmp_path):
  from benchmarks import celeba_stream

  r = celeba_stream.main(
    [
      f"--data_dir={layout}",
      "--size=32",
      "--batch_size=4",
      "--batches=2",
      "--threads=1",
      "--prefetch=1",
      f"--out_dir={tmp_path}",
    ]
  )
  (run,) = r["metrics"]["runs"]
  assert run["images"] == 8 and run["images_per_s"] > 0 and run["threads"] == 1
  assert run["prefetch_buffer_bytes"] == 4 * 32 * 32 * 3
  assert r["metrics"]["in_memory_official_train_bytes"] == 162_770 * 32 * 32 * 3


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

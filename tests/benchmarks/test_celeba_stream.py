"""benchmarks.celeba_stream: the input-pipeline benchmark writes its results."""

from __future__ import annotations

import pytest


def test_pipeline_benchmark_writes_results(celeba_official_dir, tmp_path):
  pytest.importorskip("grain")  # streams through gs_jax.data.stream
  from benchmarks import celeba_stream

  r = celeba_stream.main(
    [
      f"--data_dir={celeba_official_dir}",
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

"""Throughput and memory of the streaming CelebA input alone (gs_jax.data.stream; no model).

    python -m benchmarks.celeba_stream [--size=224 --batch_size=128 --batches=20 --threads=1,2]

Reads the CelebA copy in ``--data_dir`` (default ``$GS_DATA_DIR/celeba``: the offline copy's
half-size JPEGs, upsampled to ``--size``; an official layout works the same) through
:class:`gs_jax.data.stream.Stream` exactly as training does: one epoch's shuffled rows
(:func:`gs_jax.data.cifar.epoch_permutation`), decode → centre crop (178 scaled) → bilinear
resize → uint8 batch, ``--prefetch`` batches ahead. For each thread count, in a fresh process,
with the files already in the page cache (decoding is measured, not the disk): images/s over
``--batches`` batches after one warm-up batch, and the memory the pipeline holds — the peak of
the process's resident set size (sampled every 10 ms) above its level before the pipeline
started — next to what the in-memory path would hold for the official train split
(162,770 × size² × 3 bytes). Writes ``results.json`` (:class:`gs_jax.results.RunWriter`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time

import numpy as np

OFFICIAL_TRAIN = 162_770


def _rss_bytes() -> int:
  """Resident set size of this process (Linux /proc)."""
  import os

  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
  """Samples the RSS every ``every`` seconds in a thread; ``peak`` is the maximum seen."""

  def __init__(self, every: float = 0.01):
    self.every, self.peak, self._stop = every, _rss_bytes(), threading.Event()
    self._t = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _rss_bytes())
      time.sleep(self.every)

  def __enter__(self):
    self._t.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._t.join()


def measure(
  data_dir: str, size: int, batch_size: int, batches: int, threads: int, prefetch: int
) -> dict:
  """One thread count, in a fresh process (:func:`main` spawns it), so the RSS baseline holds
  nothing of another measurement."""
  import jax

  from gs_jax.data import celeba, cifar, stream

  split = celeba.load(data_dir or None, size=size, stream=True, verbose=False).splits["train"]
  xs = stream.Stream(split.x.source, threads=threads, prefetch=prefetch)
  n = len(xs)
  idx = cifar.epoch_permutation(jax.random.PRNGKey(0), 0, n, batch_size)[: batches + 1]
  if len(idx) < batches + 1:
    raise ValueError(f"{n} images give {len(idx)} batches of {batch_size}; need {batches + 1}")
  src = xs.source
  for i in idx.reshape(-1):  # the files into the page cache: decoding is timed, not the disk
    with open(os.path.join(src.image_dir, src.files[i]), "rb") as f:
      f.read()
  base = _rss_bytes()
  with _PeakRss() as rss:
    xs.start(idx)
    xs.take(idx[0])  # warm-up: the pipeline fills
    t0 = time.perf_counter()
    for ids in idx[1:]:
      xb = xs.take(ids)
    dt = time.perf_counter() - t0
  assert xb.shape[0] == batch_size and xb.dtype == np.uint8
  return {
    "threads": threads,
    "prefetch_batches": prefetch,
    "images": batches * batch_size,
    "seconds": dt,
    "images_per_s": batches * batch_size / dt,
    "pipeline_peak_rss_above_start_bytes": max(0, rss.peak - base),
    "prefetch_buffer_bytes": prefetch * batch_size * int(np.prod(xs.shape[1:])),
  }


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--data_dir", default="", help="CelebA folder (default $GS_DATA_DIR/celeba)")
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--batches", type=int, default=20, help="timed batches per thread count")
  p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
  p.add_argument("--prefetch", type=int, default=4, help="batches decoded ahead")
  p.add_argument("--out_dir", default="runs/bench_celeba_stream")
  a = p.parse_args(argv)
  from gs_jax.experiment import results
  from gs_jax.data import celeba

  data = celeba.load(a.data_dir or None, size=a.size, stream=True, verbose=False)
  writer = results.RunWriter(a.out_dir, "bench_celeba_stream", vars(a))
  rows = []
  ctx = multiprocessing.get_context("spawn")
  for t in (int(v) for v in a.threads.split(",")):
    with ctx.Pool(1) as pool:
      r = pool.apply(measure, (a.data_dir, a.size, a.batch_size, a.batches, t, a.prefetch))
    rows.append(r)
    print(
      f"{a.size} px, batch {a.batch_size}, {t} thread(s): {r['images_per_s']:.1f} images/s, "
      f"pipeline memory {r['pipeline_peak_rss_above_start_bytes'] / 2**20:.0f} MiB "
      f"(prefetch buffer {r['prefetch_buffer_bytes'] / 2**20:.0f} MiB)"
    )
  in_memory = OFFICIAL_TRAIN * a.size * a.size * 3
  metrics = {
    "runs": rows,
    "cpu_count": os.cpu_count(),
    "load_average_1_5_15_min": list(os.getloadavg()),  # the machine may be shared
    "in_memory_official_train_bytes": in_memory,
    "source": data.source,
    "source_image_size": "178x218 official / 89x109 offline copy (upsampled)",
  }
  writer.write(metrics, {})
  print(
    f"in memory, the official train split at {a.size} px would hold "
    f"{in_memory / 2**30:.1f} GiB; wrote {writer.results_path}"
  )
  return results.read_json(writer.results_path)


if __name__ == "__main__":
  main()

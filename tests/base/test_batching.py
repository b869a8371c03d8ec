"""gs_jax.base.batching: pad_rows (NumPy and JAX), batched's chunks, keys and sizes, map_chunks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.base import batching


def test_pad_rows_repeats_row_zero_for_numpy_and_jax():
  a = np.arange(6).reshape(3, 2)
  out = batching.pad_rows(a, 5)
  assert isinstance(out, np.ndarray)
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])
  assert batching.pad_rows(a, 3) is a
  out = batching.pad_rows(jnp.asarray(a), 4)
  assert isinstance(out, jax.Array)
  np.testing.assert_array_equal(out, [[0, 1], [2, 3], [4, 5], [0, 1]])
  with pytest.raises(ValueError, match="fewer"):
    batching.pad_rows(a, 2)
  with pytest.raises(ValueError, match="empty"):
    batching.pad_rows(a[:0], 2)


def test_batched_chunks_keys_and_sizes():
  x = np.arange(7.0)[:, None]
  seen = []

  def fn(xb, yb, key):
    seen.append((xb.shape[0], int(jax.random.key_data(key).sum())))
    return xb[:, 0] * 10 + yb

  out = batching.batched(fn, 3)(x, np.arange(7), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(out, np.arange(7) * 11)  # padding cut off, order kept
  assert [s for s, _ in seen] == [3, 3, 3]
  keys = [
    int(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(0), i)).sum()) for i in range(3)
  ]
  assert [k for _, k in seen] == keys
  # Small inputs get a small chunk, a multiple of `multiple` (e.g. the device count).
  assert batching.chunk_size(7, 500, 4) == 8 and batching.chunk_size(7, 500) == 7
  assert batching.chunk_size(1000, 500, 4) == 500


def test_map_chunks_equals_one_call_and_pads_the_last_chunk():
  """Row-wise fn: chunked result equals fn on all rows (10 rows in chunks of 4: 4, 4, 2 + 2
  padding), fewer rows than a chunk call fn directly, under jit too; chunk < 1 is refused."""
  w = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
  x = jax.random.normal(jax.random.PRNGKey(1), (10, 3))
  calls = []

  def fn(v):
    calls.append(v.shape)
    return jnp.tanh(v @ w)

  np.testing.assert_allclose(batching.map_chunks(fn, x, 4), fn(x), rtol=1e-6, atol=1e-7)
  assert calls[0] == (4, 3)  # traced once on one chunk
  np.testing.assert_allclose(
    jax.jit(lambda v: batching.map_chunks(fn, v, 16))(x), fn(x), rtol=1e-6, atol=1e-7
  )
  assert calls[-2] == (10, 3)
  with pytest.raises(ValueError, match="chunk must be >= 1"):
    batching.map_chunks(fn, x, 0)

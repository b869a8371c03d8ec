"""Fixed-shape chunks of a dataset: row padding and a chunked map, so a function compiles once.

A compiled function recompiles for every new input shape. Code that walks over ``n`` rows in
chunks therefore pads the last chunk to the full chunk size with :func:`pad_rows` (repeating
row 0, whose results are cut off again) and keeps one shape for every chunk.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def pad_rows(a, rows: int):
  """``a`` padded along axis 0 to ``rows`` rows by repeating row 0; ``a`` itself if it has them.

  NumPy in → NumPy out (no device transfer), anything else → a JAX array. Repeating a real row
  (rather than zeros) keeps padded rows valid inputs (e.g. inside a model's domain).
  """
  n = a.shape[0]
  if rows < n:
    raise ValueError(f"cannot pad {n} rows to fewer ({rows})")
  if rows == n:
    return a
  if n == 0:
    raise ValueError("cannot pad an empty array: there is no row to repeat")
  xp = np if isinstance(a, np.ndarray) else jnp
  return xp.concatenate([a, xp.broadcast_to(a[:1], (rows - n,) + a.shape[1:])])


def chunk_size(n: int, batch_size: int, multiple: int = 1) -> int:
  """The chunk size for ``n`` rows: ``batch_size``, or less for small inputs (padding 50 rows
  to 500 wastes 10× the work), always a multiple of ``multiple`` (e.g. the device count, so
  that a chunk shards evenly)."""
  return min(batch_size, -(-n // multiple) * multiple)


def batched(
  fn: Callable, batch_size: int, *, multiple: int = 1, prepare: Callable | None = None
) -> Callable:
  """``run(x, y, key)``: ``fn(xb, yb, key_i)`` → (b, …) over chunks of rows, concatenated.

  Chunks have :func:`chunk_size` rows (the last one padded by :func:`pad_rows` and its padding
  cut off), so ``fn`` sees one shape and compiles once. ``prepare(xb, yb) -> (xb, yb)``, if
  given, maps every padded chunk first (e.g. uint8 pixels → floats, placement on devices). The
  key of chunk i is ``fold_in(key, i)``, so results do not depend on how a caller interleaves
  other work.
  """

  def run(x, y, key):
    n = x.shape[0]
    b = chunk_size(n, batch_size, multiple)
    outs = []
    for i, start in enumerate(range(0, n, b)):
      xb, yb = x[start : start + b], y[start : start + b]
      m = xb.shape[0]
      xb, yb = pad_rows(xb, b), pad_rows(yb, b)
      if prepare is not None:
        xb, yb = prepare(xb, yb)
      outs.append(fn(xb, yb, jax.random.fold_in(key, i))[:m])
    return jnp.concatenate(outs)

  return run


def map_chunks(fn: Callable, x, chunk: int):
  """``fn(x)`` for a row-wise ``fn``, computed chunk by chunk: ``lax.map`` over chunks of
  ``chunk`` rows (the last padded by :func:`pad_rows`, its padding cut off), or ``fn(x)``
  itself for at most ``chunk`` rows. Traceable. Why: a network whose intermediates grow with
  the batch (e.g. im2col patches, k² copies of the input) runs faster when they stay in
  cache."""
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1; got {chunk}")
  n = x.shape[0]
  if n <= chunk:
    return fn(x)
  m = -(-n // chunk) * chunk
  out = jax.lax.map(fn, pad_rows(x, m).reshape((m // chunk, chunk) + x.shape[1:]))
  return jax.tree.map(lambda o: o.reshape((m,) + o.shape[2:])[:n], out)

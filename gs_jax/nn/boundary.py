"""Decision boundaries of 2-D classifiers and input-space margins (docs/protocols.md §3.1).

The margin of a training point is its signed L2 distance to the zero level set
``{x : F(x) = 0}`` of a decision function ``F`` (positive on the correct side). The level set
is traced on a grid (marching squares, ``contourpy``) and each vertex is then moved onto the
exact zero set by Newton steps along ``∇F``; distances are taken to the resulting polyline, so
the error is the chord error of the polyline (≈ curvature · h²/8), not the grid spacing h.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import batching

# fn(x) or fn(params, x); x (m, 2) -> (m,), row-wise (as networks in eval mode are)
DecisionFn = Callable[..., jax.Array]


def _bucket(m: int, minimum: int = 1024) -> int:
  """Padded length for m rows: the next power of two, so varying sizes reuse compilations
  (the minimum covers the level sets of typical 2-D decision functions in one size)."""
  return max(minimum, 1 << (max(m, 1) - 1).bit_length())


def _as_binary(fn: DecisionFn, params: Any):
  """``(fn2, params)`` with ``fn2(params, x)``; ``params`` are traced, not baked into jit."""
  if params is None:
    return (lambda _, x: fn(x)), ()
  return fn, params


@functools.partial(jax.jit, static_argnums=0)
def _values(fn2, params, x):
  return fn2(params, x)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _chunked_values(fn2, params, x, chunk):
  # One compiled loop over chunks of points: small chunks keep the hidden activations in
  # cache, one dispatch avoids a Python round trip per chunk.
  out = jax.lax.map(lambda c: fn2(params, c), x.reshape(-1, chunk, x.shape[-1]))
  out = jnp.moveaxis(out, 0, -2)  # (..., chunks, chunk)
  return out.reshape(*out.shape[:-2], -1)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _newton_refine(fn2, params, verts, max_step, steps):
  """``steps`` Newton steps onto {F = 0} along ∇F; steps longer than ``max_step`` are refused.

  F acts row-wise (row i of the output depends on row i of the input only), so the gradient
  of ΣF is every vertex's ∇F in one batched backward pass.
  """
  grad = jax.grad(lambda v: jnp.sum(fn2(params, v)))

  def newton_step(_, verts):
    f, g = fn2(params, verts), grad(verts)
    step = (f / jnp.maximum(jnp.sum(g * g, axis=1), 1e-12))[:, None] * g
    # A step larger than the grid spacing means a flat spot: keep the grid vertex.
    ok = jnp.linalg.norm(step, axis=1, keepdims=True) < max_step
    return jnp.where(ok, verts - step, verts)

  return jax.lax.fori_loop(0, steps, newton_step, verts)


@jax.jit
def _nearest(p, a, ab, ab2):
  ap = p[:, None, :] - a[None]
  t = jnp.clip(jnp.sum(ap * ab[None], axis=2) / ab2[None], 0.0, 1.0)
  d = ap - t[..., None] * ab[None]
  return jnp.sqrt(jnp.min(jnp.sum(d * d, axis=2), axis=1))


def grid_values(
  fn: DecisionFn, bounds=(-2.0, 2.0), resolution: int = 100, batch: int = 1024, *, params=None
):
  """``F`` on a ``resolution²`` grid over ``bounds²``: returns ``(xs, ys, Z)`` with Z[..., i, j]
  at (xs[j], ys[i]) (matplotlib's ``contourf(xs, ys, Z)`` convention).

  ``fn(x)``, or ``fn(params, x)`` when ``params`` is given (then one compilation serves every
  ``params`` of the same structure, e.g. every seed). ``fn`` maps points (m, 2) to values
  (m,), or to (k, m) for k functions at once (e.g. every seed of a vmapped model: Z is then
  (k, resolution, resolution)). Points are evaluated ``batch`` at a time in one compiled loop.
  """
  fn2, params = _as_binary(fn, params)
  xs = np.linspace(bounds[0], bounds[1], resolution)
  gx, gy = np.meshgrid(xs, xs)
  pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
  chunk = min(batch, _bucket(len(pts), minimum=16))
  padded = batching.pad_rows(pts, -(-len(pts) // chunk) * chunk)
  vals = np.asarray(_chunked_values(fn2, params, jnp.asarray(padded), chunk))[..., : len(pts)]
  return xs, xs, vals.reshape(*vals.shape[:-1], resolution, resolution)


def zero_level_set(
  fn: DecisionFn,
  bounds=(-2.0, 2.0),
  resolution: int = 400,
  newton_steps: int = 3,
  *,
  params=None,
  values=None,
) -> list[np.ndarray]:
  """Polylines (each (k, 2)) of ``{F = 0}`` inside ``bounds²``, vertices refined by Newton.

  ``values``: ``F`` on the grid, as the ``Z`` of :func:`grid_values` with the same
  ``bounds`` and ``resolution``, if already computed (it is then not evaluated again).
  """
  import contourpy  # matplotlib's contouring engine; lazy to keep imports light

  fn2, params = _as_binary(fn, params)
  if values is None:
    xs, ys, z = grid_values(fn2, bounds, resolution, params=params)
  else:
    xs = ys = np.linspace(bounds[0], bounds[1], resolution)
    z = np.asarray(values)
    if z.shape != (resolution, resolution):
      raise ValueError(
        f"values must have shape {(resolution, resolution)} (the grid of "
        f"resolution {resolution}); got {z.shape}"
      )
  lines = contourpy.contour_generator(xs, ys, z).lines(0.0)
  if not lines:
    return []
  sizes = [len(line) for line in lines]
  flat = np.concatenate(lines).astype(np.float32)
  verts = jnp.asarray(batching.pad_rows(flat, _bucket(len(flat))))
  h = (bounds[1] - bounds[0]) / (resolution - 1)
  verts = _newton_refine(fn2, params, verts, h, newton_steps)
  return np.split(np.asarray(verts)[: len(flat)], np.cumsum(sizes)[:-1])


def distance_to_polylines(
  points: np.ndarray, polylines: list[np.ndarray], chunk: int = 1024
) -> np.ndarray:
  """Euclidean distance from each point (m, 2) to the nearest segment of any polyline."""
  segs = [np.stack([p[:-1], p[1:]], axis=1) for p in polylines if len(p) > 1]
  if not segs:
    return np.full(len(points), np.inf)
  segs = np.concatenate(segs).astype(np.float32)  # (s, 2, 2)
  segs = batching.pad_rows(segs, _bucket(len(segs)))  # repeats don't change the min
  a, ab = segs[:, 0], segs[:, 1] - segs[:, 0]
  ab2 = np.maximum(np.sum(ab * ab, axis=1), 1e-20)
  pts = np.asarray(points, np.float32)
  size = min(chunk, _bucket(len(pts), minimum=16))
  out = [
    np.asarray(_nearest(jnp.asarray(batching.pad_rows(pts[i : i + size], size)), a, ab, ab2))[
      : len(pts[i : i + size])
    ]
    for i in range(0, len(pts), size)
  ]
  return np.concatenate(out)


def input_space_margins(
  fn: DecisionFn,
  x: np.ndarray,
  y: np.ndarray,
  *,
  bounds=(-2.0, 2.0),
  resolution: int = 400,
  params=None,
  values=None,
) -> np.ndarray:
  """Signed distance of each training point (x, y ∈ ±1) to ``{F = 0}``.

  Positive when ``sign F(x) = y`` (correct side), negative otherwise; ``inf`` if the zero set
  does not cross ``bounds²``. ``fn(x)``, or ``fn(params, x)`` when ``params`` is given;
  ``values`` as in :func:`zero_level_set`.
  """
  fn2, params = _as_binary(fn, params)
  lines = zero_level_set(fn2, bounds, resolution, params=params, values=values)
  dist = distance_to_polylines(x, lines)
  x = np.asarray(x, np.float32)
  side = np.where(np.asarray(_values(fn2, params, jnp.asarray(x))) > 0, 1.0, -1.0)
  return dist * side * np.asarray(y)

"""Decision boundaries of 2-D classifiers and input-space margins (DESIGN §3.1).

The margin of a training point is its signed L2 distance to the zero level set
``{x : F(x) = 0}`` of a decision function ``F`` (positive on the correct side). The level set
is traced on a grid (marching squares, ``contourpy``) and each vertex is then moved onto the
exact zero set by Newton steps along ``∇F``; distances are taken to the resulting polyline, so
the error is the chord error of the polyline (≈ curvature · h²/8), not the grid spacing h.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

DecisionFn = Callable[[jax.Array], jax.Array]   # (m, 2) -> (m,)


def grid_values(fn: DecisionFn, bounds=(-2.0, 2.0), resolution: int = 100,
                batch: int = 65536):
  """``F`` on a ``resolution²`` grid over ``bounds²``: returns ``(xs, ys, Z)`` with Z[i, j] at
  (xs[j], ys[i]) (matplotlib's ``contourf(xs, ys, Z)`` convention)."""
  xs = np.linspace(bounds[0], bounds[1], resolution)
  gx, gy = np.meshgrid(xs, xs)
  pts = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
  vals = np.concatenate([np.asarray(fn(jnp.asarray(pts[i:i + batch])))
                         for i in range(0, len(pts), batch)])
  return xs, xs, vals.reshape(resolution, resolution)


def zero_level_set(fn: DecisionFn, bounds=(-2.0, 2.0), resolution: int = 400,
                   newton_steps: int = 3) -> list[np.ndarray]:
  """Polylines (each (k, 2)) of ``{F = 0}`` inside ``bounds²``, vertices refined by Newton."""
  import contourpy  # matplotlib's contouring engine; lazy to keep imports light

  xs, ys, z = grid_values(fn, bounds, resolution)
  lines = contourpy.contour_generator(xs, ys, z).lines(0.0)
  if not lines:
    return []
  sizes = [len(line) for line in lines]
  verts = jnp.asarray(np.concatenate(lines), jnp.float32)
  grad = jax.vmap(jax.grad(lambda p: fn(p[None])[0]))
  for _ in range(newton_steps):
    f = fn(verts)
    g = grad(verts)
    step = (f / jnp.maximum(jnp.sum(g * g, axis=1), 1e-12))[:, None] * g
    # A Newton step larger than the grid spacing means a flat spot: keep the grid vertex.
    h = (bounds[1] - bounds[0]) / (resolution - 1)
    ok = jnp.linalg.norm(step, axis=1, keepdims=True) < h
    verts = jnp.where(ok, verts - step, verts)
  return np.split(np.asarray(verts), np.cumsum(sizes)[:-1])


def distance_to_polylines(points: np.ndarray, polylines: list[np.ndarray],
                          chunk: int = 1024) -> np.ndarray:
  """Euclidean distance from each point (m, 2) to the nearest segment of any polyline."""
  segs = [np.stack([p[:-1], p[1:]], axis=1) for p in polylines if len(p) > 1]
  if not segs:
    return np.full(len(points), np.inf)
  segs = jnp.asarray(np.concatenate(segs))                    # (s, 2, 2)
  a, ab = segs[:, 0], segs[:, 1] - segs[:, 0]
  ab2 = jnp.maximum(jnp.sum(ab * ab, axis=1), 1e-20)

  @jax.jit
  def nearest(p):                                              # (c, 2) -> (c,)
    ap = p[:, None, :] - a[None]
    t = jnp.clip(jnp.sum(ap * ab[None], axis=2) / ab2[None], 0.0, 1.0)
    d = ap - t[..., None] * ab[None]
    return jnp.sqrt(jnp.min(jnp.sum(d * d, axis=2), axis=1))

  pts = np.asarray(points, np.float32)
  return np.concatenate([np.asarray(nearest(jnp.asarray(pts[i:i + chunk])))
                         for i in range(0, len(pts), chunk)])


def input_space_margins(fn: DecisionFn, x: np.ndarray, y: np.ndarray, *,
                        bounds=(-2.0, 2.0), resolution: int = 400) -> np.ndarray:
  """Signed distance of each training point (x, y ∈ ±1) to ``{F = 0}``.

  Positive when ``sign F(x) = y`` (correct side), negative otherwise; ``inf`` if the zero set
  does not cross ``bounds²``.
  """
  lines = zero_level_set(fn, bounds, resolution)
  dist = distance_to_polylines(x, lines)
  side = np.where(np.asarray(fn(jnp.asarray(x, jnp.float32))) > 0, 1.0, -1.0)
  return dist * side * np.asarray(y)

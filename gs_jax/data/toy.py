"""Toy data: two-moons (Figure 1, Appendix B; docs/protocols.md §3.1), and the problems of
Theorem 2 and Figure 5 (§1, §3.2): two label-+1 clusters, and the two-feature NTRF
``Φ0 = Y U(δ) S V^T`` of eq 15."""

from __future__ import annotations

import numpy as np


def make_moons(n_samples: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's ``make_moons(n_samples, noise=noise, random_state=seed)`` (shuffled), in
  NumPy: the same draws from ``np.random.RandomState(seed)`` (checked against scikit-learn in
  the tests). Importing scikit-learn takes ~1.2 s here, more than training Figure 1's nets.

  Returns ``x`` (n, 2) float64 and labels ``y`` ∈ {0, 1}: the upper moon (0) and the lower (1).
  """
  rng = np.random.RandomState(seed)
  n_out = n_samples // 2
  n_in = n_samples - n_out
  t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
  x = np.stack(
    [np.append(np.cos(t_out), 1 - np.cos(t_in)), np.append(np.sin(t_out), 1 - np.sin(t_in) - 0.5)],
    axis=1,
  )
  y = np.append(np.zeros(n_out, np.intp), np.ones(n_in, np.intp))
  order = np.arange(n_samples)
  rng.shuffle(order)
  return x[order] + rng.normal(scale=noise, size=x.shape), y[order]


def two_moons(
  seed: int, delta: float, *, n_samples: int = 300, noise: float = 0.1, rotation_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
  """The released code's two-moons construction, deterministic per ``seed``.

  Starting from ``make_moons(n_samples, noise, random_state=seed)`` (:func:`make_moons`) with
  labels y ∈ {0,1}:
  subtract 0.5 from x₁ and ``0.3·(2y−1)`` from x₂; centre x₂; multiply it by
  ``sign(−x₂·(2y−1))`` (so class +1 lies at x₂ ≤ 0 and class −1 at x₂ ≥ 0); subtract
  ``(2y−1)·Δ`` (a gap of 2Δ between the classes for Δ > 0, an overlap for Δ < 0); then swap
  the coordinates, so the separating direction is horizontal. Optionally rotate by
  ``rotation_deg`` *clockwise* (Appendix B: 45°), as the released code does with row vectors:
  ``X ← X R``, ``R = [[cos θ, −sin θ], [sin θ, cos θ]]`` (docs/protocols.md §3.1).

  Returns:
    ``x`` of shape (n, 2), float32, and labels ``y`` ∈ {−1,+1}, float32.
  """
  x, y01 = make_moons(n_samples, noise, seed)
  s = 2.0 * y01 - 1.0
  x[:, 0] -= 0.5
  x[:, 1] -= 0.3 * s
  x[:, 1] -= x[:, 1].mean()
  x[:, 1] *= np.sign(-x[:, 1] * s)
  x[:, 1] -= s * delta
  x = x[:, ::-1]
  if rotation_deg:
    a = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    x = x @ rot
  return np.ascontiguousarray(x, np.float32), s.astype(np.float32)


def two_moons_seeds(seeds, delta: float, **kwargs) -> dict[str, np.ndarray]:
  """Stacks :func:`two_moons` for several seeds: ``{"x": (S, n, 2), "y": (S, n)}``."""
  xs, ys = zip(*(two_moons(int(s), delta, **kwargs) for s in seeds))
  return {"x": np.stack(xs), "y": np.stack(ys)}


def clusters(
  c: float, *, n_per_cluster: int = 8, angle_deg: float = 90.0, jitter: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Two clusters of label-+1 points: around ``c·(1, 0)`` and around ``(cos φ, sin φ)``.

  The setting of Theorem 2 / Figure 5 on a network (all labels +1, two features coupled
  through the kernel): with a bias-free ReLU net the NTK is 1-homogeneous in each input, so
  scaling the first cluster by ``c`` multiplies its kernel block by c² and the cross block by
  c — the first feature's strength grows with c while the second cluster is unchanged. The
  jitter (Gaussian, std ``jitter``) is drawn once from ``seed`` and scaled with its cluster.

  Returns:
    ``x`` (2·n_per_cluster, 2) float64 (first cluster first) and ``y`` = 1, float64.
  """
  rng = np.random.default_rng(seed)
  e = jitter * rng.normal(size=(2, n_per_cluster, 2))
  phi = np.deg2rad(angle_deg)
  xa = c * (np.array([1.0, 0.0]) + e[0])
  xb = np.array([np.cos(phi), np.sin(phi)]) + e[1]
  return np.concatenate([xa, xb]), np.ones(2 * n_per_cluster)


def coupled_features(s1, s2: float, *, delta: float, m: int, seed: int = 0) -> dict:
  """The two-example, two-feature problem of Theorem 2 / Figure 5 (eq 15).

  ``y = (+1, +1)``, ``U = U(δ)`` (eq 15, :func:`gs_jax.dual.coupling_matrix`), ``V`` an m×2
  matrix with orthonormal columns (QR of a Gaussian from ``seed``) and, for every strength
  ``s1`` in the sweep, ``Φ0 = Y U diag(s1, s2) V^T`` so that ``YΦ0 = U S V^T`` exactly: the
  NTRF of a linear model ``ŷ = Φ0 θ`` (:class:`gs_jax.models.LinearModel`) whose features
  have strengths ``(s1, s2)`` and coupling δ.

  Returns:
    ``{"phi": (C, 2, m), "y": (2,), "U": (2, 2), "S": (C, 2), "V": (m, 2)}`` (float64 NumPy)
    for the C values of ``s1``.
  """
  from gs_jax.theory import dual  # here, so that importing the two-moons data stays NumPy-only

  if m < 2:
    raise ValueError(f"m must be >= 2 (V is m×2 with orthonormal columns); got {m}")
  s1 = np.atleast_1d(np.asarray(s1, np.float64))
  y = np.ones(2)
  U = np.asarray(dual.coupling_matrix(delta), np.float64)
  V = np.linalg.qr(np.random.default_rng(seed).normal(size=(m, 2)))[0]
  S = np.stack([s1, np.full_like(s1, s2)], axis=1)
  phi = np.stack([np.diag(y) @ U @ np.diag(s) @ V.T for s in S])
  return {"phi": phi, "y": y, "U": U, "S": S, "V": V}

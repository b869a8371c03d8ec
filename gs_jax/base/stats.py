"""Summary statistics used by every table: mean ± sample std and the Wilson interval.

Every summary over seeds/restarts in this codebase uses :func:`mean_std`: the mean and the
*sample* standard deviation (``ddof=1``; 0 for a single value), as the paper's "mean ± std over
runs" is read here.
"""

from __future__ import annotations

import numpy as np

STD_CONVENTION = "sample (ddof=1)"


def mean_std(values) -> dict:
  """``{"mean", "std", "n"}`` of a sequence; std is the sample std (ddof=1), 0 for n = 1."""
  a = np.asarray(values, dtype=np.float64).ravel()
  if a.size == 0:
    raise ValueError("mean_std of an empty sequence")
  std = float(a.std(ddof=1)) if a.size > 1 else 0.0
  return {"mean": float(a.mean()), "std": std, "n": int(a.size)}


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple:
  """Wilson score interval ``(low, high)`` of a proportion ``correct/n`` (95% for the default
  z): ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``; ``(0, 1)`` when n = 0."""
  if n == 0:
    return (0.0, 1.0)
  p = correct / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))

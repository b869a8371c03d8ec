"""Figures of a run: PNG + PDF side by side, headless matplotlib."""

from __future__ import annotations

import os
from pathlib import Path


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
  """Saves ``fig`` as ``stem.png`` (150 dpi) and ``stem.pdf``; returns both paths."""
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  for p in paths:
    fig.savefig(p, dpi=150, bbox_inches="tight")
  return paths


def pyplot():
  """matplotlib's pyplot with the non-interactive Agg backend (runs are headless)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt

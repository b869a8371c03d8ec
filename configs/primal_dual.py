r"""Figure 5: primal vs dual paths of the responses, and spectral decoupling (docs/protocols.md §3.2).

Presets and the commands that run them (``make primal_dual`` = the first):

    python -m experiments.primal_dual                   # paper: s1 = 2…6, 200,000 steps per path
    python -m experiments.primal_dual --preset=quick    # s1 = 2, 4, 6 and 40,000 steps (the tests)

Two examples, ``y = (+1, +1)``, ``YΦ0 = U(δ) diag(s1, s2) V^T`` (eq 15). Expected (``paper``):
primal gradient descent (eq 5, from θ = 0) and dual gradient ascent (eq 8, from α = 1/2) end at
``dual.fixed_point(…, "exact")`` to round-off; the final z2 falls as s1 grows; with SD (eq 17) every
end point is the same. The measured table: docs/experiments/theory.md (generated from
docs/results/).
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("paper", "quick")

# The two-feature problem YΦ0 = U(δ) diag(s1, s2) V^T (eq 15), shared with configs.theorem2.
PROBLEM_HELP = {
  "s1": "strengths s1 of feature 1 (a sweep)",
  "s2": "strength s2 of feature 2",
  "delta": "coupling δ of U(δ), eq 15",
  "m": "number of parameters of the linear model (rows of V)",
  "seed": "seed of the random orthonormal V (m×2)",
}

HELP = {
  **PROBLEM_HELP,
  "steps": "gradient steps of every path (primal and dual)",
  "primal_lr": "primal step size (stable below 2/(s1²/2 + λ))",
  "dual_lr": "dual step size (stable below ~2/(s1²/λ + 1/α*))",
  "every": "keep every this many steps of the paths",
}


def coupled_problem(s1: tuple, m: int) -> dict:
  """The problem of Figure 5 and of the linear Theorem-2 check: δ = 0.5, s2 = 2, λ = 0.01."""
  return dict(s1=s1, s2=2.0, delta=0.5, lam=0.01, m=m, seed=0)


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  cfg = dict(
    **coupled_problem((2.0, 3.0, 4.0, 5.0, 6.0), m=10),
    steps=200_000,
    primal_lr=0.02,
    dual_lr=2e-4,
    every=50,
    run=run_section(out_dir=f"runs/primal_dual/{preset}"),
  )
  if preset == "quick":
    cfg.update(s1=(2.0, 4.0, 6.0), steps=40_000, every=200)
  elif preset != "paper":
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  return ml_collections.ConfigDict(cfg)


def validate_problem(p, prefix: str = "") -> None:
  """Range checks of the fields of :func:`coupled_problem` (flags ``--{prefix}name``)."""
  if p.lam <= 0 or p.s2 <= 0 or not p.s1 or min(p.s1) <= 0:
    raise ValueError(
      f"--{prefix}lam, --{prefix}s1 and --{prefix}s2 must be > 0; got "
      f"lam={p.lam}, s1={p.s1}, s2={p.s2}"
    )
  if not -1 <= p.delta <= 1:
    raise ValueError(f"--{prefix}delta must be in [-1, 1]")
  if p.m < 2:
    raise ValueError(f"--{prefix}m must be >= 2 (V is m×2 with orthonormal columns); got {p.m}")


def validate(cfg: ml_collections.ConfigDict) -> None:
  validate_problem(cfg)
  if cfg.primal_lr <= 0 or cfg.dual_lr <= 0:
    raise ValueError("--primal_lr and --dual_lr must be > 0")
  if not 1 <= cfg.every <= cfg.steps:
    raise ValueError(f"need 1 <= --every <= --steps; got every={cfg.every}, steps={cfg.steps}")

r"""Theorem 2 checked on trained models: a linear model and finite-width nets (docs/protocols.md §1).

Presets and the commands that run them (``make theorem2`` = the first):

    python -m experiments.theorem2                   # paper: both checks, full protocol
    python -m experiments.theorem2 --preset=quick    # a reduced run (about a minute; the tests)

Expected (``paper``): (a) the linear model trained on eq 5 matches ``fixed_point(…, "exact")``
to round-off and z2 falls as s1 grows, while under SD (eq 17) z2 stays put; (b) the relative
error between trained and dual responses falls with the width, and ``dz2/d(s1²) < 0`` for every
seed, in trained nets and dual alike. The measured tables: docs/experiments/theory.md
(generated from docs/results/). ``quick``: the same signs, error < 2e-2 at width
1024.

``--parts=linear`` or ``--parts=network`` runs one check; ``--network.sweep=input`` scales the
first cluster's inputs instead of s1 at fixed U (U then changes too). Started again with the
same command, a run skips what ``out_dir`` already holds for the same settings (the linear
check, finished widths) and continues an unfinished width from its checkpoint;
``--overwrite`` starts afresh.
"""

from __future__ import annotations

import ml_collections

from configs import primal_dual
from configs._run import run_section

PRESETS = ("paper", "quick")
PARTS = ("linear", "network")

HELP = {
  "parts": "which checks to run: linear (eq 3 model, exact) and/or network (finite widths)",
  **{f"linear.{k}": v for k, v in primal_dual.PROBLEM_HELP.items()},
  "linear.lam": "λ of the linear check (eq 5 ridge and eq 17 SD; sums, λ/2)",
  "linear.steps": "full-batch GD steps of the linear check (step 1/L)",
  "network.lam": "λ of the network check (ridge λ/2‖θ−θ0‖², sum loss)",
  "network.widths": "hidden widths of the NTK-parametrised two-layer ReLU nets",
  "network.sweep": "kappa: scale s1 by κ at fixed U (reparametrised net); input: scale the "
  "first cluster's inputs by c (U changes too)",
  "network.kappas": "κ values of the kappa sweep",
  "network.c": "scale of the first cluster in the kappa sweep",
  "network.scales": "first-cluster scales c of the input sweep",
  "network.seeds": "initialisation seeds per width (seeds 0..seeds-1)",
  "network.n_per_cluster": "points per cluster (n = 2·n_per_cluster, all labels +1)",
  "network.angle_deg": "angle φ (degrees) of the second cluster's centre (cos φ, sin φ)",
  "network.jitter": "std of the Gaussian jitter of the cluster points",
  "network.bias_scale": "β of the hidden bias of the NTK-parametrised net (0: no bias)",
  "network.momentum": "heavy-ball momentum of the GD (0: plain GD; same minimiser)",
  "network.steps": "full-batch GD steps per width (step 1/L)",
  "chunk": "GD steps per compiled chunk (progress bar and checkpoint granularity)",
  "checkpoint_seconds": "save a checkpoint at most this often while a width trains",
}


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  linear = dict(
    **primal_dual.coupled_problem((2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0), m=3), steps=100_000
  )
  network = dict(
    lam=0.1,
    widths=(64, 256, 1024, 4096, 8192),
    sweep="kappa",
    kappas=(1.0, 1.25, 1.5, 1.75, 2.0),
    c=1.5,
    scales=(1.5, 1.75, 2.0, 2.25, 2.5),
    seeds=3,
    n_per_cluster=8,
    angle_deg=90.0,
    jitter=0.1,
    bias_scale=0.0,
    momentum=0.0,
    steps=30_000,
  )
  chunk = 5000
  if preset == "quick":
    linear.update(s1=(2.5, 4.0, 6.0), steps=60_000)
    network.update(widths=(32, 1024), kappas=(1.0, 1.5), seeds=1, steps=5000)
    chunk = 1000
  elif preset != "paper":
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  return ml_collections.ConfigDict(
    dict(
      parts=PARTS,
      linear=linear,
      network=network,
      chunk=chunk,
      run=run_section(out_dir=f"runs/theorem2/{preset}", cpu_devices=0, checkpoint_seconds=60.0),
    )
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  unknown = [p for p in cfg.parts if p not in PARTS]
  if unknown or not cfg.parts:
    raise ValueError(f"--parts: choose from {PARTS}; got {list(cfg.parts)}")
  lin, net = cfg.linear, cfg.network
  primal_dual.validate_problem(lin, prefix="linear.")
  if net.lam <= 0:
    raise ValueError("--network.lam must be > 0")
  if lin.steps < 1 or net.steps < 1 or cfg.chunk < 1:
    raise ValueError("--linear.steps, --network.steps and --chunk must be >= 1")
  if net.sweep not in ("kappa", "input"):
    raise ValueError(f"--network.sweep must be kappa or input; got {net.sweep!r}")
  points = net.kappas if net.sweep == "kappa" else net.scales
  if len(points) < 2 or min(points) <= 0:
    raise ValueError("the network sweep needs >= 2 positive values (dz2/d(s1²) by differences)")
  if not net.widths or min(net.widths) < 1 or net.seeds < 1 or net.n_per_cluster < 2:
    raise ValueError("--network.widths, --network.seeds must be >= 1, --network.n_per_cluster >= 2")
  if not 0 <= net.momentum < 1:
    raise ValueError("--network.momentum must be in [0, 1)")
  if cfg.run.cpu_devices < 0:
    raise ValueError("--cpu_devices must be >= 0")

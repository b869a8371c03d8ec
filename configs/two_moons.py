r"""Two-moons: Figure 1 (a–c) and the Appendix-B grid (docs/protocols.md §3.1).

Presets and the commands that run them (``make two_moons`` = the first):

    python -m experiments.two_moons                      # paper: Figure 1 a–c, 10 seeds × 1,000 steps
    python -m experiments.two_moons --preset=published   # Figure 1 a–c as the published figure's script: 10,000 steps, weight decay 2e-4
    python -m experiments.two_moons --preset=released    # Appendix B as released: 1,000 steps (10,000 for "10× longer")
    python -m experiments.two_moons --preset=long        # Appendix B at 10× the released lengths (our earlier runs)

Expected (10 seeds): SD's input-space margin the larger in ``paper`` and ``published``, and
the largest of the ten panels in ``released`` and ``long``. The measured tables:
docs/experiments/two_moons.md (generated from docs/results/).

One full-batch step is one epoch of the released code (300 points, full batch). Panels are data:
``--panels.b_wd.weight_decay=0.02`` changes one; ``--only=fig1b,fig1c`` runs a subset.
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("paper", "published", "released", "long")

HELP = {
  "only": "comma-separated subset of the preset's panels to run (default: all of them)",
  "steps_scale": "multiply every panel's steps (e.g. 0.1 for a quick look)",
  "map_resolution": "grid size of the plotted decision map over [-2,2]^2 (paper: 100)",
  "margin_resolution": "grid size used to trace the zero level set before Newton refinement",
  "plot_only": "redraw the figure from results.json and maps/ in out_dir, without training",
  "figure": "file stem of the figure in out_dir",
  "ncols": "panels per row of the figure",
  "title": "panel title",
  "delta": "Δ of the data construction: -0.1 not linearly separable, +0.1 separable",
  "optimizer": "sgd (momentum 0.9) or adam",
  "rotation_deg": "rotate the data by this angle (degrees)",
  "hidden": "hidden-layer widths of the ReLU MLP",
  "dropout_rate": "dropout between the first layer and its ReLU (0: none)",
  "batch_norm": "batch norm between the first layer and its ReLU",
}


def panel(
  title: str,
  *,
  delta: float = 0.1,
  sd_lambda: float = 0.0,
  weight_decay: float = 0.0,
  optimizer: str = "sgd",
  lr: float = 1e-2,
  steps: int = 1000,
  rotation_deg: float = 0.0,
  hidden: tuple = (500,),
  dropout_rate: float = 0.0,
  batch_norm: bool = False,
) -> ml_collections.ConfigDict:
  """One trained configuration (a panel); defaults are the released Figure-1 settings."""
  return ml_collections.ConfigDict(
    dict(
      title=title,
      delta=delta,
      sd_lambda=sd_lambda,
      weight_decay=weight_decay,
      optimizer=optimizer,
      lr=lr,
      steps=steps,
      rotation_deg=rotation_deg,
      hidden=tuple(hidden),
      dropout_rate=dropout_rate,
      batch_norm=batch_norm,
    )
  )


def figure1_panels(steps: int = 1000, weight_decay: float = 0.0) -> dict:
  """Figure 1 (a–c). ``paper``: 1,000 steps, no weight decay (the arXiv-v1 Figure-1 script's
  length with the grid script's SD panel); ``published``: 10,000 steps and weight decay 2e-4 on
  all three panels, as the script that drew the published figure (docs/protocols.md §3.1)."""
  wd = f", wd {weight_decay:g}" if weight_decay else ""
  kw = dict(steps=steps, weight_decay=weight_decay)
  return {
    "fig1a": panel(f"(a) Δ=−0.1, ERM{wd}", delta=-0.1, **kw),
    "fig1b": panel(f"(b) Δ=+0.1, ERM{wd}", **kw),
    "fig1c": panel(f"(c) Δ=+0.1, SD λ=0.003{wd}", sd_lambda=0.003, **kw),
  }


def appendix_b_panels(steps: int, long_steps: int) -> dict:
  """The ten panels of Appendix B (released ``Figure_3/moon_fig_3.py``), all Δ=+0.1."""
  return {
    "b_none": panel("no regularisation", steps=steps),
    "b_wd": panel("weight decay 0.01", weight_decay=0.01, steps=steps),
    "b_long": panel("10× longer", steps=long_steps),
    "b_adam_1e-4": panel("Adam lr 1e-4", optimizer="adam", lr=1e-4, steps=steps),
    "b_adam_3e-3": panel("Adam lr 3e-3", optimizer="adam", lr=3e-3, steps=steps),
    "b_rot45": panel("data rotated 45°", rotation_deg=45.0, steps=steps),
    "b_dropout": panel("dropout p=0.7", dropout_rate=0.7, steps=steps),
    "b_bn": panel("batch norm", batch_norm=True, steps=steps),
    "b_5layer": panel("five layers", hidden=(500,) * 4, steps=steps),
    "b_sd": panel("SD λ=0.003", sd_lambda=0.003, steps=steps),
  }


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  if preset == "paper":
    panels, figure, ncols = figure1_panels(), "figure1", 3
  elif preset == "published":
    panels, figure, ncols = figure1_panels(10_000, 2e-4), "figure1", 3
  elif preset == "released":
    panels, figure, ncols = appendix_b_panels(1_000, 10_000), "appendix_b", 5
  elif preset == "long":
    panels, figure, ncols = appendix_b_panels(10_000, 100_000), "appendix_b", 5
  else:
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  return ml_collections.ConfigDict(
    dict(
      panels=ml_collections.ConfigDict(panels, sort_keys=False),
      only=(),
      seeds=10,
      steps_scale=1.0,
      figure=figure,
      ncols=ncols,
      map_resolution=100,
      margin_resolution=400,
      run=run_section(
        distributed=True, out_dir=f"runs/two_moons/{preset}", cpu_devices=0, plot_only=False
      ),
    )
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  if cfg.seeds < 1:
    raise ValueError("--seeds must be >= 1")
  if cfg.steps_scale <= 0:
    raise ValueError("--steps_scale must be > 0")
  if cfg.run.cpu_devices < 0:
    raise ValueError("--cpu_devices must be >= 0")
  unknown = [n for n in cfg.only if n and n not in cfg.panels]
  if unknown:
    raise ValueError(f"--only: unknown panel(s) {unknown}; choose from {list(cfg.panels)}")
  for name, p in cfg.panels.items():
    if p.steps < 1:
      raise ValueError(f"--panels.{name}.steps must be >= 1")
    if p.optimizer not in ("sgd", "adam"):
      raise ValueError(f"--panels.{name}.optimizer must be sgd or adam; got {p.optimizer!r}")

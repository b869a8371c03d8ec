r"""Feature dynamics on two-moons: Figure 1(d) (docs/protocols.md §3.2).

Presets and the commands that run them (``make two_moons_dynamics`` = the first):

    python -m experiments.two_moons_dynamics                       # paper: 10 seeds × 10,000 steps
    python -m experiments.two_moons_dynamics --preset=cpu_quick    # 2 seeds × 200 steps, width 100 (under a minute)

Protocol: two-moons data (300 points), the 2 → 500 ReLU → 1 net with PyTorch's default init,
full-batch SGD lr 1e-2 momentum 0.9, weight decay 2e-4 in all three runs, mean logistic loss;
settings Δ=−0.1 ERM, Δ=+0.1 ERM, Δ=+0.1 SD (sd_lambda 0.003). One step = one epoch of the
released code.

Expected (``paper``): separability raises z1 and starves z2, SD lowers z1; in the released
view SD raises column 6's response. Its results file is not committed yet
(docs/experiments/two_moons.md; the earlier numbers are in CHANGELOG.md).
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("paper", "cpu_quick")

HELP = {
  "settings": "the trained configurations (Figure 1(d)'s three curves)",
  "title": "legend label of the setting",
  "delta": "Δ of the data construction: -0.1 not linearly separable, +0.1 separable",
  "style": "matplotlib line style of the setting",
  "width": "hidden units of the 2 → width → 1 ReLU net",
  "momentum": "SGD momentum (PyTorch convention)",
  "num_candidates": "k: z1/z2 are directions in the span of the k strongest singular "
  "features of YΦ0 at init",
  "released_columns": "0-based columns of the NTK Gram's left singular vectors that the "
  "released code plots (Figure_2/moon_fig_2.py: 1 and 6)",
  "grid_resolution": "grid size over [-2,2]^2 of the plotted feature functions",
  "record_every": "stride (steps) of the responses logged to metrics.jsonl",
  "chunk": "training steps per compiled chunk (progress and checkpoint granularity)",
  "checkpoint_every_s": "save a checkpoint at most this often (seconds; 0: every chunk)",
  "figure": "file stem of the figure in out_dir",
}


def setting(
  title: str, *, delta: float, sd_lambda: float = 0.0, style: str = "-"
) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(title=title, delta=delta, sd_lambda=sd_lambda, style=style))


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(
    dict(
      settings={  # line styles as the released code's Figure 1(d)
        "erm_neg": setting("Δ=−0.1 ERM", delta=-0.1, style=":"),
        "erm_pos": setting("Δ=+0.1 ERM", delta=0.1, style="--"),
        "sd_pos": setting("Δ=+0.1 SD", delta=0.1, sd_lambda=0.003, style="-"),
      },
      seeds=10,
      steps=10_000,
      width=500,
      lr=1e-2,
      momentum=0.9,
      weight_decay=2e-4,
      num_candidates=3,
      released_columns=(1, 6),
      grid_resolution=60,
      record_every=10,
      chunk=500,
      figure="figure1d",
      run=run_section(
        out_dir=f"runs/two_moons_dynamics/{preset}", cpu_devices=0, checkpoint_every_s=60.0
      ),
    )
  )
  if preset == "cpu_quick":
    cfg.update(dict(seeds=2, steps=200, width=100, chunk=50, grid_resolution=30))
  elif preset != "paper":
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  return cfg


def validate(cfg: ml_collections.ConfigDict) -> None:
  for name in ("seeds", "steps", "width", "chunk", "record_every", "grid_resolution"):
    if cfg[name] < 1:
      raise ValueError(f"--{name} must be >= 1")
  if cfg.num_candidates < 2:
    raise ValueError("--num_candidates must be >= 2 (z1 and z2 live in that span)")
  if any(c < 0 for c in cfg.released_columns):
    raise ValueError("--released_columns must be >= 0 (0-based)")
  if cfg.run.cpu_devices < 0:
    raise ValueError("--cpu_devices must be >= 0")
  if cfg.run.checkpoint_every_s < 0:
    raise ValueError("--checkpoint_every_s must be >= 0")

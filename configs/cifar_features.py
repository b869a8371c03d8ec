r"""NTK features of the released CIFAR-2 CNN at initialisation and their responses during ERM and
SD training (docs/protocols.md §3.6; issue 12).

Presets and the commands that run them (``make cifar_features_cpu`` = the first):

    python -m experiments.cifar_features                  # cpu: 1,000 training images, 4 epochs, 2 seeds
    python -m experiments.cifar_features --preset=full    # the released protocol: 10,000 images, 40 epochs, 3 seeds
    python -m experiments.cifar_features --preset=coupled # eq 5's ridge (4 λ) and weight decay (4 λ), 3 seeds
    python -m experiments.cifar_features --preset=coupled_cpu --arms=ridge1,ridge10,ridge100,ridge1000
                                                          # the same on 1,000 images (λ/10), CPU-sized
    python -m analysis.cifar_features_figures runs/cifar_features/cpu   # figures and table again

Both presets train :class:`gs_jax.models.NarLeNet` with the released Figure-2 protocol of
``configs/cifar.py`` (CIFAR-10 airplane vs horse, batch size 1, SGD lr 1e-3 momentum 0.9,
constant rate, SD as ``sd_coef·Σ ŷ²``) from the same initialisation for ERM (``sd_coef`` 0) and
SD (``--sd_coef``, 0.1 as Figure 2). For each seed the top ``k_spectrum`` features ``U, S`` of
``YΦ0`` (scalar logit ŷ = f_1 − f_0, :func:`gs_jax.ntk.logit_difference`) are taken at θ0 on the
training set (:func:`gs_jax.ntk.top_features`); the responses ``z_k(t) = U_kᵀ Y (ŷ_t − ŷ_0)`` of
the top ``k`` are recorded every ``response_every`` steps inside the compiled loop
(:func:`gs_jax.train.with_probe`) into metrics.jsonl; the eq-18 prediction (SD,
λ = sd_coef·batch_size, docs/protocols.md §3.6) is stored beside the final responses.

``coupled`` (docs/protocols.md §3.7; issue 21): the full protocol with the arms
``ridge<λ>`` — cross-entropy + ``(λ/2n)‖θ − θ0‖²``, eq 5's coupled regime, eq 5's λ ∈
{10, 100, 1000, 10000} (``COUPLED_LAMBDAS``) — and ``wd<λ>`` (plain weight decay λ/n toward 0,
the same λ), each beside the prediction ``dual.fixed_point(U_20, S_20, λ)`` of the linearised
model. ``make cifar_features_coupled`` runs the ridge arms as two processes, one core each
(λ ≤ 100 and λ ≥ 1000), and merges their tables (``make cifar_features_coupled_wd``: the wd
arms). Cost (docs/protocols.md §3.7): per process the features (≈ 10 min per seed), one
400,000-step batch-1 run per arm and seed (7–9 min on an idle core) and one n = 10,000 dual
solve per λ and seed; measured times and the table: docs/experiments/cifar_features.md.

``coupled_cpu`` (§3.7): the coupled arms on the cpu preset's first 1,000 images, for 40 epochs,
3 seeds, with λ ∈ {1, 10, 100, 1000} (``COUPLED_CPU_LAMBDAS``: the spectrum scales with n, so
these sit where ``coupled``'s λ sit in the n = 10,000 spectrum); ``make
cifar_features_coupled_cpu`` runs the ridge and wd arms as two processes.

Expected: one dominant, label-blind feature, then a slowly decaying bulk; SD's final responses
of features 2–20 close to eq 18 at λ = 0.1 (closer in ``full``, which converges), ERM's a
similar multiple of SD's in every feature group. The measured tables:
docs/experiments/cifar_features.md (generated from docs/results/).
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("cpu", "full", "coupled", "coupled_cpu")
# eq-5 λ of the coupled preset, weak → strong against the full preset's spectrum at θ0
# (s_20² ≈ 55, s_2² ≈ 450–900, s_1² ≈ 3.3e4): below every top-20 s_j², between s_20² and s_2²,
# about s_2², between s_2² and s_1².
COUPLED_LAMBDAS = (10.0, 100.0, 1000.0, 10000.0)
# coupled_cpu: n = 1,000 rather than 10,000. The strengths s_j² of YΦ0 are sums over examples
# (≈ n times a per-example mean), so the same places in the spectrum sit at λ/10.
COUPLED_CPU_LAMBDAS = (1.0, 10.0, 100.0, 1000.0)

HELP = {
  "arms": "what is trained from θ0, comma-separated: erm, sd (sd_coef), ridge<λ> "
  "(cross-entropy + (λ/2n)‖θ − θ0‖², eq 5's coupled regime with λ as eq 5's), "
  "wd<λ> (plain weight decay λ/n, toward 0); docs/protocols.md §3.7",
  "dual_dynamics": "fixed point compared with the ridge/wd arms: exact (eq 9, the optimum "
  "of eq 8) or taylor (eq 10)",
  "classes": "CIFAR-2's two CIFAR-10 class names, labels 0,1 (released code: airplane,horse)",
  "sd_coef": "the SD arm's released-form coefficient: sd_coef·sum(logits^2) over batch and "
  "logits (the ERM arm uses 0); λ of eq 17 = sd_coef·batch_size",
  "batch_size": "training minibatch size (released: 1)",
  "momentum": "SGD momentum",
  "train_limit": "use the first N training images (0: all 10,000); features, training and "
  "responses all use these N",
  "k": "number of top features whose responses are recorded",
  "k_spectrum": "number of top singular values of YΦ0 computed at θ0 (spectrum figure)",
  "feature_method": "matrix_free (block Krylov with JVP/VJP products) or dense "
  "(neural-tangents Gram + eigh): gs_jax.ntk.top_features",
  "feature_passes": "maximum passes over the data of the matrix-free route",
  "feature_tol": "stop the matrix-free route when the top Ritz values move by less (relative)",
  "feature_batch": "examples per chunk in feature and response computations",
  "response_every": "record the responses every N training steps (inside the compiled loop)",
  "response_early": "also record them at this many log-spaced steps below response_every "
  "(the fast first phase; 0: none)",
  "n_images": "top features shown as input-gradient images",
  "chunk": "training steps per compiled scan (progress and metrics.jsonl advance between scans)",
  "checkpoint": "write an orbax checkpoint after every epoch (needed to resume)",
}


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  full = preset in ("full", "coupled")
  lambdas = {"coupled": COUPLED_LAMBDAS, "coupled_cpu": COUPLED_CPU_LAMBDAS}.get(preset, ())
  arms = (
    tuple(f"ridge{v:g}" for v in lambdas) + tuple(f"wd{v:g}" for v in lambdas)
    if lambdas
    else ("erm", "sd")
  )
  # coupled_cpu: the coupled arms on the cpu preset's 1,000 images for the full preset's 40
  # epochs (4e4 steps; the ridge relaxes in 1e5/λ steps, so as in `coupled` the weakest λ
  # has not relaxed fully and the others have), 3 seeds: 24 arm-seeds ≈ 1–2 h on 2 cores.
  small_long = preset == "coupled_cpu"
  return ml_collections.ConfigDict(
    dict(
      arms=arms,
      dual_dynamics="exact",
      classes="airplane,horse",
      sd_coef=0.1,
      seeds=3 if full or small_long else 2,
      epochs=40 if full or small_long else 4,
      batch_size=1,
      lr=1e-3,
      momentum=0.9,
      train_limit=0 if full else 1000,
      k=20,
      k_spectrum=50,
      # n = 1,000: the dense route is ~5× faster than the matrix-free one (benchmark); at
      # n = 10,000 the dense Gram costs 100× more and the matrix-free route 10×.
      feature_method="matrix_free" if full else "dense",
      feature_passes=8,
      feature_tol=1e-5,
      feature_batch=128,
      # full: one probe per 2,000 steps (a probe = 10,000 forward passes, ~1 s on one core)
      # and 20 log-spaced ones in the first 2,000 steps.
      response_every=2000 if full else 1000 if small_long else 100,
      response_early=20 if full or small_long else 0,
      n_images=8,
      chunk=2500 if full else 1000 if small_long else 500,
      # full: batch-1 training as experiments.cifar's released preset runs it (one pinned
      # core, legacy runtime: ~3× faster there); cpu keeps the settings of its committed run.
      run=run_section(
        data=True,
        checkpoint=True,
        cpu=True,
        cpu_runtime="fastest" if full or small_long else "thunk",
        cpu_cores="0" if full else "",
      ),
    )
  )


def parse_arm(name: str) -> tuple[str, float]:
  """``"erm"`` → ("erm", 0), ``"sd"`` → ("sd", 0), ``"ridge100"`` → ("ridge", 100.0),
  ``"wd1e3"`` → ("wd", 1000.0): the kind and eq 5's λ (ValueError otherwise)."""
  if name in ("erm", "sd"):
    return name, 0.0
  for kind in ("ridge", "wd"):
    if name.startswith(kind):
      try:
        lam = float(name[len(kind) :])
      except ValueError:
        break
      if not 0 < lam < float("inf"):
        break
      return kind, lam
  raise ValueError(f"arm {name!r} is none of erm, sd, ridge<λ>, wd<λ> (λ > 0, e.g. ridge100)")


def validate(cfg: ml_collections.ConfigDict) -> None:
  if not cfg.arms or len(set(cfg.arms)) != len(cfg.arms):
    raise ValueError(f"--arms must name at least one arm, each once; got {cfg.arms}")
  for arm in cfg.arms:
    parse_arm(arm)
  if cfg.dual_dynamics not in ("exact", "taylor"):
    raise ValueError(f"--dual_dynamics must be exact or taylor; got {cfg.dual_dynamics!r}")
  if not 0 < cfg.sd_coef < float("inf"):
    raise ValueError(f"--sd_coef must be a finite number > 0 (the SD arm); got {cfg.sd_coef}")
  for name in (
    "seeds",
    "epochs",
    "batch_size",
    "k",
    "k_spectrum",
    "feature_passes",
    "feature_batch",
    "response_every",
    "chunk",
  ):
    if cfg[name] < 1:
      raise ValueError(f"--{name} must be >= 1; got {cfg[name]}")
  if cfg.response_early < 0:
    raise ValueError(f"--response_early must be >= 0; got {cfg.response_early}")
  if cfg.k > cfg.k_spectrum:
    raise ValueError(f"--k={cfg.k} must be <= --k_spectrum={cfg.k_spectrum}")
  if cfg.n_images > cfg.k_spectrum or cfg.n_images < 0:
    raise ValueError(f"--n_images must be in [0, k_spectrum]; got {cfg.n_images}")
  if cfg.feature_method not in ("matrix_free", "dense"):
    raise ValueError(f"--feature_method must be matrix_free or dense; got {cfg.feature_method!r}")
  if cfg.train_limit < 0:
    raise ValueError("--train_limit must be >= 0")

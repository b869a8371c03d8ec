r"""CIFAR-2/10/100 with ERM or spectral decoupling, PGD robustness and margins (Table 1, Figure 2;
docs/protocols.md §3.3).

Presets and the commands that run them (``make cifar`` = the first; one run = one seed):

    python -m experiments.cifar --sd_lambda=0 --seed=0      # cpu: CIFAR-2 ERM, small CNN, 6 epochs
    python -m experiments.cifar --sd_lambda=0.01 --seed=0   # cpu: CIFAR-2 SD λ=0.01
    python -m experiments.cifar --preset=paper --dataset=cifar100 --sd_lambda=0.05   # the VGG, 30 epochs
    python -m experiments.cifar --preset=paper_cifar100 --sd_lambda=0   # CIFAR-100 ERM
    python -m experiments.cifar --preset=paper_cifar100                 # … SD λ=0.05
    make cifar2_cpu                                         # cpu preset, ERM and SD × seeds 0,1,2, then the table
    python -m experiments.cifar --preset=released                 # released Figure-2 protocol, ERM
    python -m experiments.cifar --preset=released --sd_coef=0.1   # released protocol, SD (Figure 2)
    python -m experiments.cifar --preset=released --classes=cat,dog --sd_coef=0.1
    make cifar2_released                                    # ERM / SD 0.1 / SD 0.01, then table + Figure 2

Expected: ``cpu`` — no SD effect in this underfitting regime; ``paper`` (one GPU) — below 100% train
accuracy after 30 epochs; ``released`` (airplane vs horse) — train 100%, SD clearly more robust than
ERM at equal IID accuracy. The measured tables: docs/experiments/cifar.md and
docs/experiments/cifar_released.md (generated from docs/results/). The paper's numbers are in
``gs_jax.paper.TABLE1``.

``paper_cifar100`` is Table 1's CIFAR-100 row with the released architecture family (GS
``table_1/run_ERM.sh``: ``--arch resnet_preact``): :class:`gs_jax.models.PreActResNet`
(PreAct-ResNet-18), SD λ = 0.05, and our training recipe (the release has none): the
``paper`` preset's SGD/augmentation with peak lr 0.1 and 60 epochs (docs/protocols.md §3.3;
timing: docs/experiments/paper_scale.md).

``released`` is the authors' Figure-2 code (docs/protocols.md §3.3): CIFAR-10 airplane vs horse
(``--classes``; the paper's text names cat vs dog), [0,1] pixels scaled to [−1,1] inside the
network, no augmentation, :class:`gs_jax.models.NarLeNet` (PyTorch-default init), SGD lr 1e-3
momentum 0.9, constant learning rate, batch size 1, 40 epochs, trained as compiled scans of
``chunk`` steps. SD in the released form ``sd_coef·Σ ŷ²`` summed over the batch and the
logits (``--sd_coef``; Figure 2: 0 and 0.1). Conversion to our mean form ``sd_lambda·mean(ŷ²)``
(docs/protocols.md §4): at batch size B with C logits, ``Σ ŷ² = B·C·mean(ŷ²)``, so
``sd_lambda = sd_coef·B·C``; at batch 1 with 2 logits sd_coef 0.1 = sd_lambda 0.2 and
sd_coef 0.01 = sd_lambda 0.02 (the same training loss; tests/training/test_objectives.py checks it).
Margins and OOD accuracies come from two attacks, the released-style Foolbox PGD (40 steps of
ε/30 on the cross-entropy, no random start) and a strong one (100 steps of ε/20 on the logit
gap, a clean start plus 3 random starts), with a bisection on ε; both stop an image at its first
misclassified iterate, as Foolbox 2's attack does (``return_early``, gs_jax.nn.attacks.pgd).
results.json holds them in [−1,1] units (the released axis, = 2 × pixel units) and in pixel
units. The preset measures margins on the first 1,000 test images (released attack;
``--margin_n=-1``: all 2,000) and the first 100 (strong attack, ``--strong_n``); each attack's
OOD accuracies use the same images as its margins, IID accuracy the whole test set. Training
runs on one pinned core (``--cpu_cores=0``: XLA then stops splitting the tiny batch-1
operations over threads, ~1.9× faster; give runs side by side different cores, as ``make
cifar2_released`` does), on XLA:CPU's legacy runtime where JAX < 0.6 has it
(``--cpu_runtime=fastest``; ~1.7× faster than the default there) and with Eigen's matrix
products (``--cpu_dots=eigen``, jax >= 0.10). Evaluation runs the same patch network (its
first convolution and pool as one space-to-depth product, faster for input gradients), one
image per compiled attack loop (an image stops when it flips) and 8 images per plain forward
pass; it takes no longer than training (docs/experiments/cifar_released.md).

Data come from ``--data_dir`` (an npz file or a folder), else ``$GS_DATA_DIR/cifar10`` (CIFAR-2
and CIFAR-10), else ``tfds.load``. Started again with the same command, a run continues from its
last epoch checkpoint (a finished one is only re-evaluated); ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("cpu", "paper", "released", "paper_cifar100")
MODELS = ("cpu", "paper", "released", "preact_resnet18")  # gs_jax.models.cifar_model

HELP = {
  "dataset": "cifar2 (two CIFAR-10 classes, --classes), cifar10 or cifar100",
  "classes": "CIFAR-2's two CIFAR-10 class names, labels 0,1 in that order (paper text: "
  "cat,dog; released code: airplane,horse)",
  "sd_coef": "released-form SD: sd_coef·sum(logits^2) over batch and classes (= sd_lambda "
  "sd_coef·B·C in the mean form; batch 1, 2 classes: 0.1 ≙ 0.2)",
  "schedule": "learning rate: cosine (linear warm-up then cosine decay to 0) or constant",
  "model": "network: cpu = small 3-stage CNN (16/32/64 channels), paper = the VGG, "
  "released = the LeNet-style NarLeNet of docs/protocols.md §3.3, "
  "preact_resnet18 = PreAct-ResNet-18 (the released CIFAR-100 architecture family)",
  "sd_lambda": "spectral decoupling coefficient on mean(logits^2) over batch and classes "
  "(0 = ERM; paper: 0.01 for CIFAR-2/10, 0.05 for CIFAR-100); "
  "docs/protocols.md §4",
  "lr": "peak learning rate (linear warm-up, then cosine decay to 0)",
  "warmup_epochs": "length of the linear learning-rate warm-up, in epochs",
  "momentum": "SGD momentum",
  "batch_size": "training minibatch size (the last partial batch of an epoch is dropped)",
  "augment": "random crop (4-pixel zero padding) + horizontal flip, inside the jitted step",
  "out_dir": "run directory: results.json, metrics.jsonl (per epoch), ckpt/ (default: "
  "runs/cifar/<dataset>_<preset>_<erm|sdλ>_s<seed>)",
  "data_dir": "npz file or folder (Keras-style keys, or an already-binary cifar2.npz); "
  "default: $GS_DATA_DIR/cifar10 (CIFAR-2/10), else tfds.load; "
  "docs/protocols.md §5",
  "checkpoint": "write an orbax checkpoint after every epoch (needed to resume)",
  "eval_batch": "batch size of evaluation and PGD",
  "return_early": "released: both attacks stop an image at its first misclassified iterate, "
  "as Foolbox 2 does (default); false: they judge their last iterate only (before issue 18)",
  "margin_n": "per-example L∞ margins on the first N test images (-1: all, 0: none)",
  "margin_eps_max": "upper end of the margin bisection (pixel units)",
  "margin_bisection": "bisection steps of the margin (resolution margin_eps_max / 2**steps)",
  "strong_n": "if > 0: PGD-50 with 5 restarts vs PGD-10 on the first N test images "
  "(attack-strength check); released: the strong attack's margins and OOD "
  "accuracy on the first N test images (-1: all)",
  "train_limit": "use only the first N training images (0: all)",
  "test_limit": "use only the first N test images (0: all)",
  "chunk": "training steps between progress updates (released: steps per compiled scan)",
  "cpu_devices": "CPU devices to shard minibatches over (1: JAX's default single device, "
  "whose convolutions already use every core; 0: one per core); ignored on GPU",
}


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  if preset == "released":
    return ml_collections.ConfigDict(
      dict(
        dataset="cifar2",
        classes="airplane,horse",
        model="released",
        sd_lambda=0.0,
        sd_coef=0.0,
        seed=0,
        epochs=40,
        batch_size=1,
        lr=1e-3,
        schedule="constant",
        warmup_epochs=0.0,
        momentum=0.9,
        weight_decay=0.0,
        augment=False,
        train_limit=0,
        chunk=2500,
        # Evaluation is most of a run's CPU time (PGD per bisection step): margins of the
        # released attack on the first 1,000 test images, the strong attack on 100.
        eval=ml_collections.ConfigDict(
          dict(
            eval_batch=500,
            margin_n=1000,
            margin_eps_max=0.5,
            margin_bisection=10,
            strong_n=100,
            test_limit=0,
            return_early=True,
          )
        ),
        run=run_section(
          data=True,
          checkpoint=True,
          cpu=True,
          cpu_runtime="fastest",
          cpu_cores="0",
          cpu_dots="eigen",  # gs_jax.devices.use_cpu_dots: faster batch-1 products on jax >= 0.10
        ),
      )
    )
  if preset == "paper_cifar100":
    # Table 1's CIFAR-100 row (GS table_1/run_ERM.sh: --dataset CIFAR100 --arch resnet_preact);
    # the released files give no training recipe: these settings are ours (protocols §3.3).
    cfg = get_config("paper")
    cfg.update(dict(dataset="cifar100", model="preact_resnet18", sd_lambda=0.05, epochs=60, lr=0.1))
    return cfg
  return ml_collections.ConfigDict(
    dict(
      dataset="cifar2",
      classes="cat,dog",
      model=preset,
      sd_lambda=0.01,
      sd_coef=0.0,
      schedule="cosine",
      seed=0,
      epochs=6 if preset == "cpu" else 30,
      batch_size=128,
      lr=0.05,
      warmup_epochs=1.0,
      momentum=0.9,
      weight_decay=5e-4,
      augment=True,
      train_limit=0,
      chunk=10,
      # paper: the evaluation of the committed VGG runs (every test image, finer bisection,
      # attack-strength check on 1,000 images).
      eval=ml_collections.ConfigDict(
        dict(
          eval_batch=500,
          margin_n=500 if preset == "cpu" else -1,
          margin_eps_max=0.05,
          margin_bisection=6 if preset == "cpu" else 7,
          strong_n=0 if preset == "cpu" else 1000,
          test_limit=0,
        )
      ),
      run=run_section(data=True, checkpoint=True, cpu=True, distributed=True),
    )
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  if cfg.model not in MODELS:
    raise ValueError(f"--model must be one of {MODELS}; got {cfg.model!r}")
  for name in ("sd_lambda", "sd_coef"):
    if not 0 <= cfg[name] < float("inf"):
      raise ValueError(f"--{name} must be a finite number >= 0; got {cfg[name]}")
  if cfg.sd_lambda and cfg.sd_coef:
    raise ValueError(
      "give SD as --sd_lambda (mean form) or --sd_coef (released sum form), not both"
    )
  if cfg.schedule not in ("cosine", "constant"):
    raise ValueError(f"--schedule must be cosine or constant; got {cfg.schedule!r}")
  for name in ("epochs", "batch_size", "chunk"):
    if cfg[name] < 1:
      raise ValueError(f"--{name} must be >= 1")
  if cfg.eval.eval_batch < 1:
    raise ValueError("--eval_batch must be >= 1")
  if cfg.train_limit < 0 or cfg.eval.test_limit < 0 or cfg.eval.margin_bisection < 0:
    raise ValueError("--train_limit, --test_limit and --margin_bisection must be >= 0")
  if cfg.run.cpu_devices < 0:
    raise ValueError("--cpu_devices must be >= 0")
  if cfg.eval.margin_n < -1 or cfg.eval.strong_n < -1:
    raise ValueError("--margin_n and --strong_n must be >= -1")

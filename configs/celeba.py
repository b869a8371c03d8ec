r"""CelebA, Blond_Hair vs the spurious Male: ERM, SD with per-class targets, Group DRO and LfF
(Table 3; docs/protocols.md §3.5). One run = one method × one seed.

Presets and the commands that run them:

    python -m experiments.celeba --method=erm --seed=0        # cpu: offline copy, 32×32, small ResNet
    python -m experiments.celeba --method=sd --seed=0         # cpu: SD, released targets
    python -m experiments.celeba --preset=paper --method=sd --seed=0 \
        --data_dir=<official layout> --pretrained=<resnet50.msgpack>   # the released protocol
    python -m gs_jax.convert --torchvision resnet50-0676ba61.pth --out resnet50.msgpack
    python -m analysis.celeba_table runs/celeba                # Table 3 (markdown + CSV)

``cpu`` trains the small ResNet (``gs_jax.models.RESNETS["resnet_small"]``) from scratch on
the partial offline copy (``$GS_DATA_DIR/celeba``, 10,000 official-train images, our
``offline10k_stratified`` division: 6,002 / 1,999 / 1,999 images, blond males 49 / 16 / 16) with
Adam for every method, at 32×32 (64 px costs 4× more; 32 px lets 4 methods × 3 seeds run in about an
hour on 2 cores). Expected: SD lifts the blond males well above ERM at the released selection, LfF
and Group DRO stay near ERM; the worst group (16 test blond males per seed) has a Wilson interval
~±20 points, so only large differences between methods are resolvable. The measured table under the
three selections: docs/experiments/celeba.md (generated from docs/results/).

``paper`` is the released protocol: ImageNet-pretrained ResNet-50 (``--pretrained``; from
scratch without it, and results.json says which), crop 178 → 224×224, batch 128, 3 epochs,
lr 1e-5, weight decay 0, ERM with SGD (momentum 0.9) and the other methods with Adam
(``--optimizer=released``), SD ``0.1·mean_{y=1}(ŷ−2.5)² + 0.1·mean_{y=0}(ŷ−0.44)²``, selection
by validation average accuracy; images streamed (``--stream``: the official train split is
22.8 GiB as uint8 at 224 px). The paper's numbers are ``gs_jax.paper.TABLE3``. At scale:
docs/experiments/paper_scale.md.

Started again with the same command, a run continues from its last finished epoch;
``--overwrite`` starts afresh.
"""

from __future__ import annotations

import ml_collections

from configs._run import run_section

PRESETS = ("cpu", "paper")
METHODS = ("erm", "sd", "group_dro", "lff")

HELP = {
  "method": "erm, sd (per-class targets), group_dro (online group weights) or lff "
  "(learning from failure: GCE-biased + reweighted debiased network)",
  "model": "resnet_small (CPU), resnet18 or resnet50 (the released model)",
  "pretrained": "msgpack checkpoint of the model's variables (format: "
  "gs_jax.models.load_pretrained; from torchvision's resnet50-0676ba61.pth "
  "by python -m gs_jax.convert); empty = train from scratch",
  "image_size": "side of the square input after the released centre crop (paper: 224)",
  "optimizer": "adam, sgd, or released (SGD with momentum for erm, Adam for the others, "
  "as GS Table_2/table_2.sh)",
  "lr": "learning rate (constant, as the released code)",
  "momentum": "SGD momentum",
  "batch_size": "training minibatch size (shuffled; the last partial batch is dropped)",
  "sd_lambdas": "SD coefficients (λ_0, λ_1) of the class means of (ŷ − γ_c)² (released 0.1, 0.1)",
  "sd_gammas": "SD targets (γ_0, γ_1) for not-blond / blond (released 0.44, 2.5)",
  "dro_step_size": "Group DRO step size η_q of q ← q·exp(η_q·ℓ_g) (released default 0.01)",
  "dro_adjustment": "Group DRO generalisation adjustment C (ℓ_g + C/√n_g for every group; "
  "0 = none)",
  "gce_q": "LfF: q of the biased model's generalized cross-entropy",
  "ema_alpha": "LfF: EMA coefficient of the per-example losses",
  "limit": "keep the first N images of every split (0: all; smoke tests)",
  "out_dir": "run directory: results.json, metrics.jsonl (per epoch), ckpt/ (default: "
  "runs/celeba/<model>_<image_size>_<method>_s<seed>)",
  "data_dir": "official layout (img_align_celeba/, list_attr_celeba.txt, "
  "list_eval_partition.txt); default: $GS_DATA_DIR/celeba (the offline copy), "
  "else tfds.load('celeb_a'); docs/protocols.md §5",
  "stream": "decode, crop and resize images on demand in background threads (grain; "
  "bounded memory, same batches) instead of reading every split into memory "
  "(paper: on; the official train split is ~24 GB at 224 px)",
  "stream_threads": "--stream: decoding threads",
  "stream_prefetch": "--stream: batches decoded ahead (the memory bound)",
  "checkpoint": "write an orbax checkpoint after every epoch (needed to resume)",
  "eval_batch": "batch size of evaluation",
  "chunk": "training steps between progress updates",
  "cpu_devices": "CPU devices to shard minibatches over (1: JAX's default single device; "
  "with several devices or processes the batch size must be divisible by "
  "the total device count)",
}


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose from {PRESETS}")
  cpu = preset == "cpu"
  return ml_collections.ConfigDict(
    dict(
      method="erm",
      seed=0,
      model="resnet_small" if cpu else "resnet50",
      pretrained="",
      image_size=32 if cpu else 224,
      optimizer="adam" if cpu else "released",
      lr=1e-3 if cpu else 1e-5,
      momentum=0.9,
      weight_decay=0.0,
      epochs=8 if cpu else 3,
      batch_size=128,
      sd_lambdas=(0.1, 0.1),
      sd_gammas=(0.44, 2.5),
      dro_step_size=0.01,
      dro_adjustment=0.0,
      gce_q=0.7,
      ema_alpha=0.7,
      limit=0,
      eval_batch=500,
      chunk=10,
      run=run_section(
        data=True,
        checkpoint=True,
        distributed=True,
        cpu_devices=1,
        stream=not cpu,
        stream_threads=8,
        stream_prefetch=4,
      ),
    )
  )


def validate(cfg: ml_collections.ConfigDict) -> None:
  if cfg.method not in METHODS:
    raise ValueError(f"--method must be one of {METHODS}; got {cfg.method!r}")
  if cfg.optimizer not in ("adam", "sgd", "released"):
    raise ValueError(f"--optimizer must be adam, sgd or released; got {cfg.optimizer!r}")
  if len(cfg.sd_lambdas) != 2 or len(cfg.sd_gammas) != 2:
    raise ValueError("--sd_lambdas and --sd_gammas take two values (class 0, class 1)")
  if not 0 < cfg.gce_q <= 1:
    raise ValueError(f"--gce_q must be in (0, 1]; got {cfg.gce_q}")
  if not 0 <= cfg.ema_alpha < 1:
    raise ValueError(f"--ema_alpha must be in [0, 1); got {cfg.ema_alpha}")
  for name in ("epochs", "batch_size", "eval_batch", "chunk", "image_size"):
    if cfg[name] < 1:
      raise ValueError(f"--{name} must be >= 1")
  for name in ("stream_threads", "stream_prefetch"):
    if cfg.run[name] < 1:
      raise ValueError(f"--{name} must be >= 1")
  if cfg.run.cpu_devices < 0:
    raise ValueError("--cpu_devices must be >= 0")
  for name in ("limit", "dro_adjustment", "dro_step_size", "lr"):
    if cfg[name] < 0:
      raise ValueError(f"--{name} must be >= 0")

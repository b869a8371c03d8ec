"""Prepared GPU check (``make gpu-check``): every paper preset's training step on synthetic data
of the right shape, for a bounded number of steps, with throughput, peak device memory and the
extrapolated wall time of the full paper run (docs/experiments/paper_scale.md).

    python -m benchmarks.gpu_check [--steps=20] [--out_dir=runs/gpu_check]
    python -m benchmarks.gpu_check --tiny        # CPU, seconds: small shapes (CI)

Presets (``name``: model, input, batch, optimiser; full run = steps of one training run):

* ``celeba_paper``: ResNet-50 from *converted random torchvision weights*
  (:func:`gs_jax.convert.random_state_dict` → :func:`gs_jax.convert.convert_state_dict` →
  msgpack → :func:`gs_jax.models.load_pretrained`, the ``--pretrained`` path), 224×224 uint8
  images normalised inside the step, batch 128, SD with Adam (``--celeba_method``); full run 3
  epochs × 1,271 steps (162,770 official training images).
* ``cifar10_vgg``: the ``paper`` VGG, 32×32, crop + flip inside the step, batch 128, SGD; full
  run 30 epochs × 390 steps.
* ``cifar100_preact``: PreAct-ResNet-18 (``paper_cifar100``), 100 classes, batch 128; full run
  60 epochs × 390 steps.
* ``cmnist_full_batch``: the Colored-MNIST MLP (2 × 300, inputs 392), full batch of 50,000 and
  a 10,000-image test pass per step, 10 restarts in one program (preset ``sd``); full run 2,001
  steps.
* ``cifar_released_batch1``: NarLeNet, batch 1, steps as one ``lax.scan`` (the ``released``
  preset); full run 40 epochs × 10,000 steps.

Each preset is compiled and warmed up once (not timed), then ``--steps`` steps (the released
protocol: ``--scan_steps``) are timed. Reported: steps/s, images/s, peak device memory
(``Device.memory_stats()["peak_bytes_in_use"]`` where the backend reports it, else "n/a"; it is
the process's peak so far, so it is cumulative over the presets run in order), and the full
run's training time extrapolated from the timed steps (evaluation and data loading excluded).
The results JSON is written by :class:`gs_jax.results.RunWriter` (config, provenance).
Public JAX API only (runs on jax 0.5 … current).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

PRESETS = (
  "celeba_paper",
  "cifar10_vgg",
  "cifar100_preact",
  "cmnist_full_batch",
  "cifar_released_batch1",
)
# Steps of one full paper run (docs/experiments/paper_scale.md).
FULL_STEPS = {
  "celeba_paper": 3 * (162_770 // 128),
  "cifar10_vgg": 30 * (50_000 // 128),
  "cifar100_preact": 60 * (50_000 // 128),
  "cmnist_full_batch": 2001,
  "cifar_released_batch1": 40 * 10_000,
}


def _peak_memory():
  """Peak bytes in use on device 0, or None where the backend does not report it (CPU)."""
  import jax

  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # some backends raise instead of returning None
    return None
  return (stats or {}).get("peak_bytes_in_use")


def _block(tree):
  import jax

  return jax.block_until_ready(tree)


def celeba(tiny: bool, method: str):
  """``(go(k), images per step)`` for the CelebA paper preset's step."""
  import jax
  import jax.numpy as jnp

  from configs import celeba as configs
  from gs_jax.nn import convert, models
  from gs_jax.tasks import spurious
  from gs_jax import training as train
  from gs_jax.data import celeba as data

  cfg = configs.get_config("paper")
  cfg.method = method
  if tiny:  # the small CPU model at 32 px: the same code path without the 224-px ResNet-50
    cfg.model, cfg.image_size, cfg.batch_size = "resnet_small", 32, 8
  size, b = cfg.image_size, cfg.batch_size
  n = 4 * b
  model = models.resnet(cfg.model)
  key = jax.random.PRNGKey(0)
  x0 = jnp.zeros((2, size, size, 3), jnp.float32)
  variables = None
  if cfg.model in convert.TORCHVISION_ARCHS:  # converted random torchvision weights
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, f"{cfg.model}.msgpack")
      convert.save(convert.convert_state_dict(convert.random_state_dict(cfg.model, 0)), path)
      fresh = jax.jit(lambda k: model.init(k, x0, train=False))(key)
      variables = models.load_pretrained(fresh, path)
  # the released optimisers (experiments.celeba.optimizer): SGD + momentum for ERM, else Adam
  tx = train.make_optimizer(
    "sgd" if method == "erm" else "adam",
    cfg.lr,
    momentum=cfg.momentum,
    weight_decay=cfg.weight_decay,
  )
  rng = np.random.default_rng(0)
  x_all = jnp.asarray(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
  y = rng.integers(0, 2, n).astype(np.int32)
  g = (2 * y + rng.integers(0, 2, n)).astype(np.int32)
  rows = jnp.asarray(np.stack([g, np.arange(n, dtype=np.int32)], 1))
  state = spurious.init_state(
    method, model, tx, jax.random.fold_in(key, 1), x0, n, variables, variables
  )
  step = spurious.make_step(
    method,
    model,
    tx,
    y_train=y,
    train_counts=np.bincount(g, minlength=4),
    sd_lambdas=tuple(cfg.sd_lambdas),
    sd_gammas=tuple(cfg.sd_gammas),
  )
  run = train.make_epoch_runner(step, preprocess=lambda k, xb: data.to_float(xb))
  holder = {"s": state}

  def go(k):
    idx = np.arange(k * b).reshape(k, b) % n
    holder["s"], m = run(holder["s"], x_all, rows, idx, {})
    _block(m)

  return go, b


def cifar(tiny: bool, which: str):
  """The CIFAR ``paper`` VGG (cifar10) or PreAct-ResNet-18 (cifar100) step."""
  import jax
  import jax.numpy as jnp

  from configs import cifar as configs
  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import cifar as data

  cfg = configs.get_config("paper" if which == "cifar10" else "paper_cifar100")
  classes = 10 if which == "cifar10" else 100
  b = 8 if tiny else cfg.batch_size
  if tiny:
    model = (
      models.CifarVGG(models.CNN_CPU_STAGES, classes)
      if which == "cifar10"
      else models.PreActResNet(classes, blocks=(1, 1, 1, 1), widths=(8, 16, 16, 16))
    )
  else:
    model = models.cifar_model(cfg.model, classes)
  tx = train.make_optimizer("sgd", cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
  x0 = jnp.zeros((2, 32, 32, 3), jnp.float32)
  variables = jax.jit(lambda k: model.init(k, x0, train=False))(jax.random.PRNGKey(0))
  state = train.make_state(dict(variables), tx, jax.random.PRNGKey(1))
  n = 4 * b
  rng = np.random.default_rng(0)
  x_all = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
  y_all = jnp.asarray(rng.integers(0, classes, n).astype(np.int32))
  run = train.make_epoch_runner(
    train.make_train_step(model, tx, train.softmax_objective),
    preprocess=lambda k, xb: data.to_float(data.augment(k, xb)),
  )
  hp = {"sd_lambda": jnp.float32(cfg.sd_lambda)}
  holder = {"s": state}

  def go(k):
    idx = np.arange(k * b).reshape(k, b) % n
    holder["s"], m = run(holder["s"], x_all, y_all, idx, hp)
    _block(m)

  return go, b


def cmnist(tiny: bool):
  """Colored MNIST ``sd``: all restarts, full batch, one compiled program per chunk."""
  import jax
  import jax.numpy as jnp

  from configs import colored_mnist as configs
  from gs_jax.tasks import cmnist as cm
  from gs_jax import training as train

  cfg = configs.get_config("sd")
  n, n_test = (256, 64) if tiny else (50_000, 10_000)
  if tiny:
    cfg.hidden, cfg.seeds = 16, 2
  rng = np.random.default_rng(0)
  batch = {
    "x": rng.uniform(size=(n, 392)).astype(np.float32),
    "y": rng.integers(0, 2, n).astype(np.float32),
    "env": np.repeat(np.arange(2, dtype=np.int32), n // 2),
    "test_x": rng.uniform(size=(n_test, 392)).astype(np.float32),
    "test_y": rng.integers(0, 2, n_test).astype(np.float32),
  }
  model, tx = cm.model_of(cfg), cm.optimizer_of(cfg)
  batch = jax.tree_util.tree_map(jnp.asarray, batch)
  states = train.make_seed_init(model, tx, shared_batch=True)(
    cm.init_keys(cfg), {"x": batch["x"][..., :2, :]}
  )
  holder = {"s": states}
  trainers = {}

  def go(k):
    if k not in trainers:
      trainers[k] = train.make_seed_trainer(
        model.apply, tx, cm.make_objective(cfg, model.apply), shared_batch=True, chunk=k
      )
    holder["s"], h = trainers[k](holder["s"], batch, cm.hparams_of(cfg), k, progress=False)
    _block(h)

  return go, n * cfg.seeds


def released(tiny: bool):
  """The released CIFAR-2 protocol: NarLeNet, batch 1, a ``lax.scan`` of steps."""
  import jax
  import jax.numpy as jnp

  from gs_jax.nn import models
  from gs_jax import training as train

  model = models.NarLeNet(2)
  tx = train.make_optimizer("sgd", 1e-3, momentum=0.9)
  x0 = jnp.zeros((1, 32, 32, 3), jnp.float32)
  variables = jax.jit(lambda k: model.init(k, x0))(jax.random.PRNGKey(0))
  state = train.make_state(dict(variables), tx, jax.random.PRNGKey(1))
  n = 256
  rng = np.random.default_rng(0)
  x_all = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
  y_all = jnp.asarray(rng.integers(0, 2, n).astype(np.int32))
  run = train.make_epoch_runner(
    train.make_train_step(model, tx, train.softmax_objective),
    preprocess=lambda k, xb: xb.astype(jnp.float32) / 255.0,
    scan=True,
  )
  hp = {"sd_lambda": jnp.float32(0.2)}
  holder = {"s": state}

  def go(k):
    idx = (np.arange(k) % n).reshape(k, 1)
    holder["s"], m = run(holder["s"], x_all, y_all, idx, hp)
    _block(m)

  return go, 1


def measure(name: str, tiny: bool, steps: int, scan_steps: int, celeba_method: str) -> dict:
  """Builds one preset, warms it up with the timed length (compiles), then times it."""
  t0 = time.perf_counter()
  if name == "celeba_paper":
    go, per_step = celeba(tiny, celeba_method)
  elif name == "cifar10_vgg":
    go, per_step = cifar(tiny, "cifar10")
  elif name == "cifar100_preact":
    go, per_step = cifar(tiny, "cifar100")
  elif name == "cmnist_full_batch":
    go, per_step = cmnist(tiny)
  elif name == "cifar_released_batch1":
    go, per_step = released(tiny)
  else:
    raise ValueError(f"preset must be one of {PRESETS}; got {name!r}")
  k = scan_steps if name == "cifar_released_batch1" else steps
  go(k)  # compile + warm-up (a scan compiles once per length)
  setup_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  go(k)
  dt = time.perf_counter() - t0
  peak = _peak_memory()
  sps = k / dt
  full = FULL_STEPS[name]
  return {
    "steps_timed": k,
    "seconds": dt,
    "steps_per_s": sps,
    "images_per_s": sps * per_step,
    "images_per_step": per_step,
    "setup_and_compile_s": setup_s,
    "peak_device_memory_bytes": peak if peak is not None else "n/a",
    "full_run_steps": full,
    "full_run_train_hours": full / sps / 3600.0,
  }


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    "--tiny",
    action="store_true",
    help="small models and shapes (CPU, seconds): the code paths, not the numbers",
  )
  p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; tiny 2)")
  p.add_argument(
    "--scan_steps",
    type=int,
    default=None,
    help="timed batch-1 steps of the released protocol (default 5000; tiny 20)",
  )
  p.add_argument("--presets", default=",".join(PRESETS), help=f"comma-separated, of {PRESETS}")
  p.add_argument("--celeba_method", default="sd", choices=("erm", "sd", "group_dro", "lff"))
  p.add_argument(
    "--out_dir",
    default="",
    help="folder of results.json (default: runs/gpu_check, tiny: runs/gpu_check_tiny)",
  )
  a = p.parse_args(argv)
  steps = a.steps or (2 if a.tiny else 20)
  scan_steps = a.scan_steps or (20 if a.tiny else 5000)
  names = [s for s in a.presets.split(",") if s]
  bad = [s for s in names if s not in PRESETS]
  if bad:
    raise ValueError(f"--presets: unknown {bad}; choose from {PRESETS}")
  import jax

  from gs_jax.experiment import results

  writer = results.RunWriter(
    a.out_dir or f"runs/gpu_check{'_tiny' if a.tiny else ''}", "gpu_check", vars(a)
  )
  print(
    f"devices: {jax.devices()}"
    + (
      " — tiny: small shapes, code paths only; the numbers and extrapolations mean nothing"
      if a.tiny
      else ""
    ),
    file=sys.stderr,
  )
  rows = {}
  for name in names:
    rows[name] = r = measure(name, a.tiny, steps, scan_steps, a.celeba_method)
    mem = r["peak_device_memory_bytes"]
    print(
      f"{name:22s} {r['steps_per_s']:9.2f} steps/s {r['images_per_s']:11.1f} images/s  "
      f"peak mem {mem / 2**30:.2f} GiB"
      if mem != "n/a"
      else f"{name:22s} {r['steps_per_s']:9.2f} steps/s {r['images_per_s']:11.1f} images/s  "
      "peak mem n/a",
      f"  full run ≈ {r['full_run_train_hours']:.2f} h "
      f"({r['full_run_steps']} steps; compile+setup {r['setup_and_compile_s']:.0f} s)",
    )
    writer.write(
      rows,
      {},
      tiny=a.tiny,
      backend=jax.default_backend(),
      note="training steps only; evaluation and input pipeline excluded",
    )
  print(f"wrote {writer.results_path}", file=sys.stderr)
  return results.read_json(writer.results_path)


if __name__ == "__main__":
  main()

"""Training-step throughput of the CIFAR ``cpu``-preset CNN (or of the ``released`` protocol's
batch-1 NarLeNet): gs-jax vs PyTorch eager.

    python -m benchmarks.cifar_speed [--batch_size=128 --steps=30 --repeats=3]
    python -m benchmarks.cifar_speed --protocol=released [--steps=10000 --repeats=3]

``--protocol=released`` (docs/protocols.md §3.3): the process (both frameworks) pinned to one
core (``--cpu_cores``, as the experiment runs; PyTorch then uses 1 thread), batch size 1,
uint8 image gathered from a resident dataset, scaled to [−1,1], :class:`gs_jax.models.NarLeNet`
(PyTorch: the same layers, :func:`torch_narlenet`), cross-entropy + ``sd_coef·Σ ŷ²``, SGD lr
1e-3 momentum 0.9, no augmentation. gs-jax runs ``--steps`` steps as one compiled ``lax.scan``
(:func:`gs_jax.train.make_epoch_runner` with ``scan=True``, as the experiment does); PyTorch
runs its eager loop. An epoch of CIFAR-2 is 10,000 such steps.

Both sides run the *same* step on the same machine in the same process: random crop (pad 4) +
horizontal flip of a uint8 batch gathered from a resident dataset, conversion to [0,1],
normalisation, the 3-stage conv/BN/ReLU/max-pool CNN (16/32/64 channels, global average
pool, linear head), softmax cross-entropy + ``sd_lambda·mean(ŷ²)``, backward, and SGD with
momentum 0.9 and coupled weight decay 5e-4. gs-jax runs the experiment's compiled step
(:func:`gs_jax.train.make_epoch_runner` with :func:`gs_jax.train.softmax_objective`, as
:func:`gs_jax.train.fit_minibatch` does); PyTorch runs the equivalent eager code. Timings
alternate between the two ``--repeats`` times (the machine is shared; the median is
reported) and exclude compilation / warm-up. Prints images/s for each and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def jax_runner(x_all, y_all, batch_size, sd_lambda):
  import jax
  import jax.numpy as jnp
  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import cifar

  model = models.cifar_model("cpu", 2)
  tx = train.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4)
  state = train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  run = train.make_epoch_runner(
    train.make_train_step(model, tx, train.softmax_objective),
    preprocess=lambda k, xb: cifar.to_float(cifar.augment(k, xb)),
    mesh=train.data_mesh(),
  )
  xa, ya = jnp.asarray(x_all), jnp.asarray(y_all)
  hp = {"sd_lambda": jnp.float32(sd_lambda)}
  holder = {"state": state}

  def go(steps, seed):
    idx = cifar.epoch_permutation(jax.random.PRNGKey(seed), 0, len(x_all), batch_size)[:steps]
    holder["state"], m = run(holder["state"], xa, ya, idx, hp)
    jax.block_until_ready(m)

  return go


def torch_runner(x_all, y_all, batch_size, sd_lambda):
  import torch
  from torch import nn

  from gs_jax.nn import models

  torch.manual_seed(0)
  mean = torch.tensor(models.CIFAR_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(models.CIFAR_STD).view(1, 3, 1, 1)
  layers, c_in = [], 3
  for c in (16, 32, 64):
    layers += [
      nn.Conv2d(c_in, c, 3, padding=1, bias=False),
      nn.BatchNorm2d(c),
      nn.ReLU(),
      nn.MaxPool2d(2),
    ]
    c_in = c
  net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))
  opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  xa = torch.from_numpy(x_all).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW, resident
  ya = torch.from_numpy(y_all.astype(np.int64))
  ar = torch.arange(32)

  def step(ids):
    xb = xa[ids]
    b = xb.shape[0]
    padded = nn.functional.pad(xb, (4, 4, 4, 4))
    off = torch.randint(0, 9, (b, 2))
    rows = (off[:, 0:1] + ar)[:, None, :, None]
    cols = (off[:, 1:2] + ar)[:, None, None, :]
    xb = padded[
      torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(b) < 0.5
    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
    x = (xb.float() / 255.0 - mean) / std
    logits = net(x)
    loss = nn.functional.cross_entropy(logits, ya[ids]) + sd_lambda * logits.pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def go(steps, seed):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x_all), generator=g)
    for i in range(steps):
      step(perm[i * batch_size : (i + 1) * batch_size])

  return go, torch.get_num_threads()


def torch_narlenet(params=None):
  """NAR's ``Net`` (docs/protocols.md §3.3) in PyTorch; with ``params`` (NarLeNet's Flax
  params) its weights are copied from them (kernels HWIO → OIHW, Dense kernels transposed)."""
  import torch
  from torch import nn

  net = nn.Sequential(
    nn.Conv2d(3, 12, 5),
    nn.LeakyReLU(0.01),
    nn.MaxPool2d(2),
    nn.Conv2d(12, 32, 5),
    nn.LeakyReLU(0.01),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(800, 240),
    nn.LeakyReLU(0.01),
    nn.Linear(240, 192),
    nn.LeakyReLU(0.01),
    nn.Linear(192, 2),
  )
  if params is not None:
    p = {k: {n: np.array(v) for n, v in d.items()} for k, d in params.items()}
    with torch.no_grad():
      for name, j, perm in (
        ("conv0", 0, (3, 2, 0, 1)),
        ("conv1", 3, (3, 2, 0, 1)),
        ("fc0", 7, (1, 0)),
        ("fc1", 9, (1, 0)),
        ("fc2", 11, (1, 0)),
      ):
        net[j].weight.copy_(torch.from_numpy(p[name]["kernel"].transpose(perm).copy()))
        net[j].bias.copy_(torch.from_numpy(p[name]["bias"]))
  return net


def released_runners(x_all, y_all, sd_coef):
  """(gs-jax go, PyTorch go, torch threads) for the released protocol's batch-1 step."""
  import jax
  import jax.numpy as jnp
  import optax
  import torch

  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import cifar

  model = models.NarLeNet(2)
  tx = optax.sgd(1e-3, momentum=0.9)
  holder = {"state": train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))}
  run = train.make_epoch_runner(
    train.make_train_step(model, tx, train.softmax_objective),
    preprocess=lambda k, xb: cifar.to_float(xb),
    scan=True,
  )
  xa, ya = jnp.asarray(x_all), jnp.asarray(y_all)
  hp = {"sd_lambda": jnp.float32(0.0), "sd_coef": jnp.float32(sd_coef)}

  def jax_go(steps, seed):
    idx = cifar.epoch_permutation(jax.random.PRNGKey(seed), 0, len(x_all), 1)[:steps]
    holder["state"], m = run(holder["state"], xa, ya, idx, hp)
    jax.block_until_ready(m)

  torch.manual_seed(0)
  net = torch_narlenet()
  opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
  xt = torch.from_numpy(x_all).permute(0, 3, 1, 2).contiguous()
  yt = torch.from_numpy(y_all.astype(np.int64))

  def torch_go(steps, seed):
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
    for i in perm[:steps].tolist():
      out = net(xt[i : i + 1].float() / 127.5 - 1.0)
      loss = torch.nn.functional.cross_entropy(out, yt[i : i + 1]) + sd_coef * out.pow(2).sum()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()

  return jax_go, torch_go, torch.get_num_threads()


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--protocol", choices=("cpu", "released"), default="cpu")
  p.add_argument("--batch_size", type=int, default=128, help="cpu protocol only (released: 1)")
  p.add_argument(
    "--steps",
    type=int,
    default=None,
    help="timed steps per repeat (default 30; released: 10,000 = one CIFAR-2 epoch)",
  )
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--sd_lambda", type=float, default=0.01, help="cpu protocol's SD")
  p.add_argument("--sd_coef", type=float, default=0.1, help="released protocol's SD")
  p.add_argument(
    "--cpu_runtime",
    choices=("thunk", "legacy", "fastest"),
    default=None,
    help="XLA:CPU runtime of the gs-jax side (default: the experiment's — "
    "fastest (legacy where JAX < 0.6 has it) for --protocol=released, "
    "thunk otherwise)",
  )
  p.add_argument(
    "--cpu_cores",
    default=None,
    help="pin the whole process (both frameworks) to these core indices "
    "(gs_jax.devices.use_cpu_cores; default: '0' for --protocol=released, "
    "as the experiment runs; '' = no pinning)",
  )
  p.add_argument(
    "--cpu_dots",
    choices=("xla", "eigen"),
    default=None,
    help="library of XLA:CPU's matrix products on the gs-jax side (gs_jax.devices.use_cpu_dots; "
    "default: the experiment's — eigen for --protocol=released, xla otherwise)",
  )
  p.add_argument(
    "--torch_threads", type=int, default=0, help="PyTorch intra-op threads (0: PyTorch's default)"
  )
  p.add_argument("--json", default="", help="also write the numbers (with provenance) here")
  args = p.parse_args(argv)
  released = args.protocol == "released"
  from gs_jax.base import devices  # before JAX starts: the runtime is chosen at backend start

  cores = args.cpu_cores if args.cpu_cores is not None else ("0" if released else "")
  cpus = devices.use_cpu_cores(cores)
  runtime = devices.use_cpu_runtime(args.cpu_runtime or ("fastest" if released else "thunk"))
  default_dots = "xla"
  if released:
    from configs import cifar as configs

    default_dots = configs.get_config("released").run.cpu_dots
  cpu_dots = devices.use_cpu_dots(args.cpu_dots or default_dots)
  from gs_jax.experiment import results

  # The code that runs, recorded before anything is written (after the runtime is chosen:
  # provenance lists the devices, which starts JAX's backends).
  started = results.provenance_at_start()
  if args.torch_threads:
    import torch

    torch.set_num_threads(args.torch_threads)
  if released:
    args.batch_size = 1
  args.steps = args.steps or (10_000 if released else 30)
  rng = np.random.default_rng(0)
  n = 10_000  # CIFAR-2 training size
  x_all = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y_all = rng.integers(0, 2, n).astype(np.int32)
  if released:
    jax_go, torch_go, threads = released_runners(x_all, y_all, args.sd_coef)
    warm = args.steps  # the scan compiles once per length: warm up with the timed length
  else:
    jax_go = jax_runner(x_all, y_all, args.batch_size, args.sd_lambda)
    torch_go, threads = torch_runner(x_all, y_all, args.batch_size, args.sd_lambda)
    warm = 3
  t = time.perf_counter()
  jax_go(warm, 99)  # compile + warm-up
  compile_s = time.perf_counter() - t
  torch_go(min(warm, 50), 99)
  rates = {"gs-jax": [], "pytorch-eager": []}
  for r in range(args.repeats):
    for name, go in (("gs-jax", jax_go), ("pytorch-eager", torch_go)):
      t = time.perf_counter()
      go(args.steps, r)
      rates[name].append(args.steps * args.batch_size / (time.perf_counter() - t))
  med = {k: float(np.median(v)) for k, v in rates.items()}
  print(
    f"CIFAR {args.protocol}-protocol train step, batch {args.batch_size}, {args.steps} "
    f"steps × {args.repeats} alternating repeats (torch threads: {threads}; "
    f"XLA:CPU runtime: {runtime}; process on CPUs {cpus}"
    f"{' (pinned)' if cores else ''}); "
    f"gs-jax compile+{warm} warm-up steps: {compile_s:.1f} s"
  )
  for k, v in rates.items():
    print(
      f"  {k:14s} median {med[k]:8.1f} images/s   (runs: " + ", ".join(f"{x:.0f}" for x in v) + ")"
    )
  ratios = [a / b for a, b in zip(rates["gs-jax"], rates["pytorch-eager"])]
  print(
    f"  ratio gs-jax / pytorch-eager: {med['gs-jax'] / med['pytorch-eager']:.2f}× "
    f"(per repeat {min(ratios):.2f}–{max(ratios):.2f}×)"
  )
  if args.json:
    import os

    import jax

    from gs_jax.experiment import results

    results.write_measurement(
      args.json,
      {
        "protocol": args.protocol,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "jax": jax.__version__,
        "xla_cpu_runtime": runtime,
        "cpu_dots": cpu_dots,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpus": cpus,
        "torch_threads": threads,
        "compile_s": compile_s,
        "images_per_s": rates,
        "median": med,
        "ratio": med["gs-jax"] / med["pytorch-eager"],
        "ratio_per_repeat": ratios,
      },
      started,
    )


if __name__ == "__main__":
  main()

"""Figure-1 job (10 seeds × 3 configurations × 1,000 epochs): gs-jax vs PyTorch eager.

    python -m benchmarks.two_moons_speed            # needs the torch extra: pip install torch==2.13.0

Prints, for the same machine and the same process launch:
  1. training only (compile included, imports and plotting excluded): gs-jax's vmapped
     ``make_seed_trainer`` vs a straightforward PyTorch eager loop over seeds (the released
     code's structure), their ratio, and the achieved GFLOP/s of the JAX training loop (FLOPs
     from XLA's cost analysis of the compiled program);
  2. the whole job end to end, each as a fresh subprocess (imports, data, training, decision
     maps, figure): ``python -m experiments.two_moons`` vs the PyTorch script below
     (``--torch_job``), which trains the same nets and draws the same three decision maps
     (it computes no margins, so the comparison favours PyTorch).
Each side runs ``--repeats`` times, alternating, and the medians are compared (timings on a
shared VM vary by ±30%). gs-jax runs as its CLI does: one JAX CPU device per core, the seeds
split over them; PyTorch uses its default intra-op threads (one per core).
Targets (issue 2): training ≥ 10×, end to end ≥ 3×.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FIG1 = ((-0.1, 0.0), (0.1, 0.0), (0.1, 0.003))  # (Δ, sd_lambda) of Figure 1 a, b, c


def torch_train(seeds, epochs, delta, sd_lambda, init=None):
  """The released code's structure: one seed after another, PyTorch eager, full batch.

  ``init(seed)``, if given, returns flax-layout parameters (``dense_0``/``head`` kernel and
  bias) to start from instead of PyTorch's own draw (used to check the protocols agree).
  """
  import torch
  from gs_jax.data import toy

  nets = []
  for seed in seeds:
    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in toy.two_moons(seed, delta))
    net = torch.nn.Sequential(torch.nn.Linear(2, 500), torch.nn.ReLU(), torch.nn.Linear(500, 1))
    if init is not None:
      p = init(seed)
      with torch.no_grad():
        for layer, name in ((net[0], "dense_0"), (net[2], "head")):
          layer.weight.copy_(torch.from_numpy(np.asarray(p[name]["kernel"]).T.copy()))
          layer.bias.copy_(torch.from_numpy(np.array(p[name]["bias"])))
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    for _ in range(epochs):
      opt.zero_grad()
      out = net(x)[:, 0]
      loss = torch.nn.functional.softplus(-y * out).mean() + sd_lambda * (out**2).mean()
      loss.backward()
      opt.step()
    nets.append(net)
  return nets


def figure1_panels(epochs):
  """Figure 1's panels at ``epochs`` full-batch steps (the ``paper`` preset otherwise)."""
  from configs import two_moons as configs

  panels = configs.get_config("paper").panels
  for p in panels.values():
    p.steps = epochs
  return panels


def jax_train(seeds, epochs):
  """gs-jax's Figure-1 training: one compiled vmapped program, reused for the 3 panels."""
  import jax
  from gs_jax.tasks import moons

  trainers, states = {}, None
  for panel in figure1_panels(epochs).values():
    states, _, _ = moons.train_panel(panel, seeds, trainers=trainers, progress=False)
    jax.block_until_ready(states)
  return states


def jax_training_flops(seeds, epochs):
  """FLOPs of one configuration's training, from XLA's cost analysis of the chunk program."""
  import jax
  import jax.numpy as jnp
  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import toy

  model = models.two_layer_relu()
  tx = train.make_optimizer("sgd", 1e-2, momentum=0.9)
  step = train.make_train_step(model, tx, train.binary_objective)
  data = {k: jnp.asarray(v) for k, v in toy.two_moons_seeds(seeds, 0.1).items()}
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  states = jax.vmap(lambda k: train.init_state(model, tx, k, data["x"][0]))(keys)
  one = jax.jit(jax.vmap(lambda s, b: step(s, b, {"sd_lambda": 0.003})))
  cost = one.lower(states, data).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) * epochs


def torch_job(out_png):
  """End-to-end PyTorch job: train Figure 1's nets and draw the three decision maps."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import torch
  from gs_jax.data import toy

  xs = np.linspace(-2, 2, 100)
  grid = torch.from_numpy(np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2).astype(np.float32))
  fig, axes = plt.subplots(1, 3, figsize=(9, 3))
  for ax, (delta, sd) in zip(axes, FIG1):
    nets = torch_train(range(10), 1000, delta, sd)
    with torch.no_grad():
      z = torch.stack([n(grid)[:, 0] for n in nets]).mean(0).numpy().reshape(100, 100)
    ax.contourf(xs, xs, z, levels=21, cmap="RdBu_r")
    ax.contour(xs, xs, z, levels=[0.0], colors="k")
    x, y = toy.two_moons(0, delta)
    ax.scatter(x[:, 0], x[:, 1], c=y, s=4)
  fig.savefig(out_png)


def _timed_subprocess(cmd):
  t0 = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return time.perf_counter() - t0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--seeds",
    type=int,
    default=10,
    help="seeds per configuration (training part; the end-to-end jobs always run "
    "the full protocol)",
  )
  p.add_argument(
    "--epochs", type=int, default=1000, help="full-batch epochs (training part, as --seeds)"
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=3,
    help="timed repetitions of each side, alternating; medians are reported "
    "(every gs-jax repetition compiles afresh)",
  )
  p.add_argument("--skip_end_to_end", action="store_true", help="only time training")
  p.add_argument("--json", metavar="PATH", help="also write every timing and ratio to PATH")
  p.add_argument("--torch_job", metavar="PNG", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.torch_job:
    torch_job(args.torch_job)
    return
  try:
    import torch
  except ImportError:
    sys.exit("PyTorch is needed for the baseline: pip install torch==2.13.0 (or make bench-deps)")
  from gs_jax.base import devices
  from gs_jax.experiment import results

  devices.use_cpu_devices()  # as experiments.two_moons does: one JAX CPU device per core
  import jax

  started = results.provenance_at_start()  # the code that runs, before anything is written

  seeds = list(range(args.seeds))
  machine = (
    f"{jax.devices()[0].platform} × {len(jax.devices())} devices (os.cpu_count() = "
    f"{os.cpu_count()}), torch threads {torch.get_num_threads()}"
  )
  print(
    f"machine: {machine}; {args.seeds} seeds × 3 configurations × {args.epochs} epochs, "
    f"{args.repeats} repeats"
  )

  runs = {"training": {"gs_jax_s": [], "torch_s": []}}
  for _ in range(args.repeats):
    jax.clear_caches()
    t0 = time.perf_counter()
    jax_train(seeds, args.epochs)
    runs["training"]["gs_jax_s"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for delta, sd in FIG1:
      torch_train(seeds, args.epochs, delta, sd)
    runs["training"]["torch_s"].append(time.perf_counter() - t0)
  t_jax, t_torch = _report("training  ", runs["training"], "compile included", 10)
  flops = 3 * jax_training_flops(seeds, args.epochs)
  runs["training"]["gflop"] = flops / 1e9
  print(
    f"           gs-jax training loop: {flops / 1e9:.1f} GFLOP in {t_jax:.2f} s = "
    f"{flops / 1e9 / t_jax:.1f} GFLOP/s (XLA cost analysis)"
  )

  if not args.skip_end_to_end:
    runs["end_to_end"] = {"gs_jax_s": [], "torch_s": []}
    with tempfile.TemporaryDirectory() as tmp:
      for _ in range(args.repeats):
        runs["end_to_end"]["gs_jax_s"].append(
          _timed_subprocess(
            [
              sys.executable,
              "-m",
              "experiments.two_moons",
              f"--out_dir={tmp}/jax",
              "--no_progress",
              "--overwrite",
            ]
          )
        )  # a subprocess: benchmarks import no experiment
        runs["end_to_end"]["torch_s"].append(
          _timed_subprocess(
            [sys.executable, "-m", "benchmarks.two_moons_speed", f"--torch_job={tmp}/torch.png"]
          )
        )
    _report("end to end", runs["end_to_end"], "fresh processes", 3)
  if args.json:
    results.write_measurement(args.json, {"machine": machine, **vars(args), **runs}, started)
    print("wrote", args.json)


def _report(name, times, what, target):
  """Prints the medians, their ratio and the range of the per-repeat ratios; returns medians."""
  ours, theirs = np.asarray(times["gs_jax_s"]), np.asarray(times["torch_s"])
  med_ours, med_theirs = float(np.median(ours)), float(np.median(theirs))
  times["speed_up_of_medians"] = med_theirs / med_ours
  ratios = theirs / ours
  print(
    f"{name} gs-jax {med_ours:6.2f} s ({what})   PyTorch eager {med_theirs:6.2f} s   "
    f"speed-up {med_theirs / med_ours:5.1f}x   (target >= {target}x; per repeat "
    f"{ratios.min():.1f}-{ratios.max():.1f}x)"
  )
  return med_ours, med_theirs


if __name__ == "__main__":
  main()

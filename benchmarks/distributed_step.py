"""Cost of the cross-process collectives: CIFAR training step time of 1 process × 2 CPU
devices against 2 processes × 1 CPU device (the same global mesh of 2 devices, the same
global batch; gloo all-reduces between the processes).

    python -m benchmarks.distributed_step                 # batch 64, 20 timed steps
    python -m benchmarks.distributed_step --batch=128 --steps=30

Each configuration runs the code path of :func:`gs_jax.train.fit_minibatch`: one process keeps
the dataset on its devices and gathers each batch inside the compiled step; several processes
feed their own rows of each global batch from the host
(:func:`gs_jax.distributed.feed_batch`). Prints the median step time of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from gs_jax.base import distributed


def worker(nproc: int, pid: int, port: int, devices: int, batch: int, steps: int) -> None:
  import jax
  import jax.numpy as jnp

  from gs_jax.base import devices as devs
  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import cifar

  if nproc > 1:  # before use_cpu_devices, which may start JAX's backends
    distributed.initialize(f"127.0.0.1:{port}", nproc, pid, timeout_s=30, verbose=False)
  devs.use_cpu_devices(devices)
  rng = np.random.default_rng(0)
  n = batch * 4
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = (np.arange(n) % 2).astype(np.int32)
  tx = train.make_optimizer("sgd", 0.05, momentum=0.9)
  model = models.cifar_model("cpu", 2)
  state = train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  mesh = train.data_mesh()
  state = distributed.to_global(state, train.replicated(mesh))
  if nproc == 1:
    x, y = jax.device_put((x, y), train.replicated(mesh))
  run = train.make_epoch_runner(
    train.make_train_step(model, tx, train.softmax_objective),
    preprocess=lambda k, xb: cifar.to_float(xb),
    mesh=mesh,
  )
  hp = {"sd_lambda": jnp.float32(0.0)}
  idx = np.stack([rng.permutation(n)[:batch] for _ in range(steps + 3)])
  state, _ = run(state, x, y, idx[:3], hp)  # compile and warm up
  jax.block_until_ready(state)
  times = []
  for ids in idx[3:]:
    t0 = time.perf_counter()
    state, m = run(state, x, y, ids[None], hp)
    jax.block_until_ready((state, m))
    times.append(time.perf_counter() - t0)
  if distributed.is_main():
    print(f"RESULT {np.median(times) * 1e3:.2f}", flush=True)


def measure(nproc: int, devices: int, batch: int, steps: int) -> float:
  """Median step time (ms) of ``nproc`` processes with ``devices`` CPU devices each."""
  port = distributed.free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "benchmarks.distributed_step",
        "--worker",
        str(nproc),
        str(i),
        str(port),
        str(devices),
        f"--batch={batch}",
        f"--steps={steps}",
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(nproc)
  ]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    if p.returncode != 0:
      raise RuntimeError(f"a benchmark process failed ({p.returncode}):\n{out[-3000:]}")
  return float(next(line.split()[1] for line in outs[0].splitlines() if line.startswith("RESULT")))


def main(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--batch", type=int, default=64, help="global batch size")
  p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
  p.add_argument(
    "--worker",
    nargs=4,
    type=int,
    metavar=("NPROC", "PID", "PORT", "DEVICES"),
    help=argparse.SUPPRESS,
  )
  a = p.parse_args(argv)
  if a.worker:
    return worker(*a.worker, batch=a.batch, steps=a.steps)
  one = measure(1, 2, a.batch, a.steps)
  two = measure(2, 1, a.batch, a.steps)
  print(f"CIFAR cpu CNN, global batch {a.batch}, median of {a.steps} steps:")
  print(f"  1 process  × 2 devices: {one:8.2f} ms/step")
  print(f"  2 processes × 1 device: {two:8.2f} ms/step")
  print(f"  ratio (2 processes / 1 process): {two / one:.2f}")


if __name__ == "__main__":
  main()

"""One process of the multi-process tests (tests/base/test_distributed.py): started as
``python -m tests.base.distributed_worker TASK OUT NPROC PID PORT DEVICES [--die_after=E]``.

Tasks: ``cifar`` (the cpu CIFAR CNN, minibatch SGD with SD over one global data mesh, tiny
generated data, orbax checkpoint per epoch), ``moons`` (a two-moons panel, 8 vmapped seeds
over all processes' devices), ``wait`` (a collective in a loop, to be killed). Process 0
writes ``OUT/params.npz``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import jax
import numpy as np


def flat(tree) -> dict:
  return {
    jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def cifar_task(out, die_after):
  import jax.numpy as jnp
  from gs_jax.experiment import checkpoint
  from gs_jax.nn import models
  from gs_jax import training as train
  from gs_jax.data import cifar

  rng = np.random.default_rng(0)
  n, batch = 64, 16
  data = {
    "x": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
    "y": (np.arange(n) % 2).astype(np.int32),
  }
  tx = train.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4)
  model = models.cifar_model("cpu", 2)
  state = train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  key = jax.random.PRNGKey(1)

  def on_epoch(record):
    if record["epoch"] == die_after:  # the whole job is killed after this epoch's checkpoint
      os.kill(os.getpid(), signal.SIGKILL)

  state, history = train.fit_minibatch(
    model,
    tx,
    train.softmax_objective,
    state,
    data,
    lambda e: cifar.epoch_permutation(key, e, n, batch),
    3,
    {"sd_lambda": jnp.float32(0.01)},
    preprocess=lambda k, xb: cifar.to_float(cifar.augment(k, xb)),
    mesh=train.data_mesh(),
    checkpoint=checkpoint.Checkpointer(os.path.join(out, "ckpt"), every_seconds=0.0),
    loop=train.LoopOptions(progress=False),
    callbacks=train.Callbacks(on_epoch=on_epoch),
  )
  from gs_jax.base import distributed

  return flat(distributed.to_host(state.params)), history[-1]["loss"]


def moons_task(out, die_after):
  from configs import two_moons
  from gs_jax.tasks import moons

  panel = two_moons.panel("test", sd_lambda=0.003, steps=30, hidden=(32,))
  states, history, _ = moons.train_panel(panel, list(range(8)), progress=False)
  return flat(states.params), float(np.mean(history["loss"][:, -1]))


def wait_task(out, die_after):
  import jax.numpy as jnp
  from gs_jax import training as train

  mesh = train.data_mesh()
  x = jax.device_put(jnp.ones(jax.device_count()), train.batch_sharded(mesh))
  step = jax.jit(lambda x: x * 0 + jnp.sum(x) / x.size, out_shardings=train.batch_sharded(mesh))
  for i in range(10**9):
    x = step(x).block_until_ready()
    if i == 10:
      print("collectives running", flush=True)
  return {}, 0.0


def main():
  p = argparse.ArgumentParser()
  for name in ("task", "out", "nproc", "pid", "port", "devices"):
    p.add_argument(name)
  p.add_argument("--die_after", type=int, default=0)
  p.add_argument("--timeout_s", type=int, default=60)
  a = p.parse_args()
  from gs_jax.base import devices, distributed

  if int(a.nproc) > 1:  # before use_cpu_devices, which may start JAX's backends
    distributed.initialize(
      f"127.0.0.1:{a.port}", int(a.nproc), int(a.pid), timeout_s=a.timeout_s, init_timeout_s=60
    )
  devices.use_cpu_devices(int(a.devices))
  t0 = time.perf_counter()
  params, loss = {"cifar": cifar_task, "moons": moons_task, "wait": wait_task}[a.task](
    a.out, a.die_after
  )
  if distributed.is_main():
    np.savez(os.path.join(a.out, "params.npz"), **params)
    print(f"done loss={loss:.6f} time={time.perf_counter() - t0:.2f}s", flush=True)


if __name__ == "__main__":
  sys.exit(main())

r"""Colored-MNIST training-step speed: gs-jax vs a PyTorch eager step, measured in the same run.

    python -m benchmarks.cmnist_speed [--n=50000] [--steps=5] [--methods=sd,irm] [--data_dir=…]

One full-batch training step of the 392 → h → h → 1 ReLU MLP with Adam on n examples:
``sd`` (h = 300: forward, BCE + SD term, backward, Adam; the ERM/SD step of DESIGN §3.4) and
``irm`` (h = 390: per-environment risks, IRMv1 penalty through a second-order gradient, L2 on
the loss). gs-jax times (a) one jitted ``train_step`` called from Python per step and (b) the
same steps as one compiled ``lax.scan`` (how ``experiments.colored_mnist`` trains). PyTorch
times the released code's eager loop (``zero_grad``/``backward``/``step``, ``autograd.grad``
with ``create_graph`` for IRM). Prints ms/step for each and the speed-up of gs-jax (scan) over
PyTorch. Median over ``--steps`` timed steps after ``--warmup`` untimed ones.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def make_data(n: int, data_dir: str | None, seed: int = 0):
  """``x`` (n, 392) float32, ``y`` (n,) ∈ {0,1}, ``env`` (n,) — Colored MNIST if ``data_dir``
  is given, otherwise random inputs with MNIST-like sparsity (about 90% zeros)."""
  if data_dir:
    from gs_jax.data import colored_mnist as cm
    b = cm.train_batch(cm.colored_mnist(seed, data_dir, with_variants=False))
    reps = int(np.ceil(n / len(b["y"])))
    return tuple(np.concatenate([b[k]] * reps)[:n] for k in ("x", "y", "env"))
  rng = np.random.default_rng(seed)
  x = rng.random((n, 392), dtype=np.float32) * (rng.random((n, 392)) < 0.1)
  y = rng.integers(0, 2, n).astype(np.float32)
  env = (np.arange(n) >= n // 2).astype(np.int32)
  return x, y, env


def time_calls(fn, warmup: int, steps: int) -> float:
  """Median seconds per call of ``fn`` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_jax(method: str, x, y, env, warmup: int, steps: int) -> dict:
  import jax
  import jax.numpy as jnp

  from experiments import colored_mnist as exp
  from gs_jax import models, train

  cfg = exp.Config.for_method(method, restarts=1)
  model = models.MLP(hidden=(cfg.hidden, cfg.hidden), num_outputs=1, kernel_init="xavier")
  tx = train.make_optimizer("adam", cfg.lr)
  objective = exp.make_objective(cfg, model)
  hp = {"sd_coef": jnp.float32(cfg.sd_coef), "anneal_steps": jnp.int32(0),  # penalty active
        "penalty_weight": jnp.float32(cfg.penalty_weight), "l2_weight": jnp.float32(cfg.l2_weight)}
  # The benchmark times the training step only: no per-step test evaluation.
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "env": jnp.asarray(env),
           "test_x": jnp.asarray(x[:1]), "test_y": jnp.asarray(y[:1])}
  step_fn = jax.jit(train.make_train_step(model, tx, objective))
  state = train.init_state(model, tx, jax.random.PRNGKey(0), batch["x"][:2])
  box = {"s": state}

  def one():
    box["s"], m = step_fn(box["s"], batch, hp)
    jax.block_until_ready(m["loss"])

  per_call = time_calls(one, warmup, steps)
  k = steps
  fit = jax.jit(lambda s: train.fit(train.make_train_step(model, tx, objective), s, batch, hp, k))

  def scan():
    s, h = fit(box["s"])
    jax.block_until_ready(h["loss"])

  per_scan_step = time_calls(scan, 1, 3) / k
  return {"jit_step_ms": 1e3 * per_call, "scan_step_ms": 1e3 * per_scan_step,
          "hidden": cfg.hidden}


def bench_torch(method: str, x, y, env, warmup: int, steps: int) -> dict:
  import torch
  from torch import autograd, nn

  from experiments import colored_mnist as exp

  cfg = exp.Config.for_method(method, restarts=1)
  torch.manual_seed(0)
  lins = [nn.Linear(392, cfg.hidden), nn.Linear(cfg.hidden, cfg.hidden), nn.Linear(cfg.hidden, 1)]
  for lin in lins:
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
  mlp = nn.Sequential(lins[0], nn.ReLU(True), lins[1], nn.ReLU(True), lins[2])
  opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
  half = len(y) // 2
  bce = nn.functional.binary_cross_entropy_with_logits

  def penalty(logits, yy):
    scale = torch.tensor(1.0, requires_grad=True)
    g = autograd.grad(bce(logits * scale, yy), [scale], create_graph=True)[0]
    return torch.sum(g ** 2)

  def one():
    logits = mlp(xt)
    if method.startswith("sd"):
      nll = bce(logits, yt)
      loss = cfg.sd_coef * ((logits ** 2).mean() + nll)
    else:
      l0, l1 = logits[:half], logits[half:]
      nll = torch.stack([bce(l0, yt[:half]), bce(l1, yt[half:])]).mean()
      pen = torch.stack([penalty(l0, yt[:half]), penalty(l1, yt[half:])]).mean()
      wn = sum(w.norm().pow(2) for w in mlp.parameters())
      loss = (nll + cfg.l2_weight * wn + cfg.penalty_weight * pen) / cfg.penalty_weight
    opt.zero_grad()
    loss.backward()
    opt.step()

  return {"step_ms": 1e3 * time_calls(one, warmup, steps), "threads": torch.get_num_threads(),
          "version": torch.__version__}


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m benchmarks.cmnist_speed",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=50_000, help="examples in the full batch")
  p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps (incl. compilation)")
  p.add_argument("--methods", default="sd,irm", help="comma-separated: sd (=ERM step + SD), irm")
  p.add_argument("--data_dir", default=None, help="use real Colored MNIST from mnist.npz here")
  args = p.parse_args(argv)
  import jax

  x, y, env = make_data(args.n, args.data_dir)
  print(f"Colored-MNIST full-batch step, n={args.n} x 392, Adam; jax {jax.__version__} on "
        f"{jax.devices()[0]}, {os.cpu_count()} CPUs visible")
  rows = []
  for method in args.methods.split(","):
    j = bench_jax(method, x, y, env, args.warmup, args.steps)
    try:
      t = bench_torch(method, x, y, env, args.warmup, args.steps)
    except ImportError:
      t = None
    ratio = t["step_ms"] / j["scan_step_ms"] if t else float("nan")
    rows.append((method, j, t, ratio))
    torch_s = f"{t['step_ms']:9.1f}" if t else "   (none)"
    print(f"{method:4s} h={j['hidden']}: gs-jax jit step {j['jit_step_ms']:8.1f} ms | "
          f"gs-jax scan {j['scan_step_ms']:8.1f} ms/step | PyTorch eager {torch_s} ms "
          f"({t['threads'] if t else '-'} threads, torch {t['version'] if t else '-'}) | "
          f"speed-up {ratio:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())

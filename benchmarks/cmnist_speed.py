r"""Colored-MNIST training-step speed: gs-jax vs a PyTorch eager step, measured in the same run.

    python -m benchmarks.cmnist_speed [--n=50000] [--steps=5] [--methods=sd,irm] [--data_dir=…]

One full-batch training step of the 392 → h → h → 1 ReLU MLP with Adam on n examples:
``sd`` (h = 300: forward, BCE + SD term, backward, Adam; the ERM/SD step of docs/protocols.md §3.4) and
``irm`` (h = 390: per-environment risks, IRMv1 penalty through a second-order gradient, L2 on
the loss). gs-jax times (a) one jitted ``train_step`` called from Python per step and (b) the
same steps as one compiled ``lax.scan`` (how ``gs_jax.cmnist`` trains every restart). PyTorch
times the released code's eager loop (``zero_grad``/``backward``/``step``, ``autograd.grad``
with ``create_graph`` for IRM). Prints ms/step for each and the speed-up of gs-jax (scan) over
PyTorch. The frameworks alternate in ``--rounds`` rounds (so that load from other processes on
a shared machine hits both alike); medians over rounds.

Beside the ratio it prints this machine's **matmul floor** for the step: the step's matrix
products alone (forward ``X W1``, ``H1 W2``, ``H2 w3``; backward, for each layer, the weight
gradient ``Hᵀ G`` and — except the first layer — the input gradient ``G Wᵀ``), jitted as one
float32 program and timed the same way: no step that does those products can run faster, so
``step / floor`` says how much is left above the machine's sgemm. ``--json`` writes everything
with provenance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def make_data(n: int, data_dir: str | None, seed: int = 0):
  """``x`` (n, 392) float32, ``y`` (n,) ∈ {0,1}, ``env`` (n,) — Colored MNIST when a local copy
  is found (``--data_dir`` or ``$GS_DATA_DIR/mnist``), otherwise random inputs with MNIST-like
  sparsity (about 90% zeros)."""
  from gs_jax.data import colored_mnist as cm, paths

  data_dir = paths.resolve(data_dir, "mnist")
  if data_dir:
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


def build_jax(method: str, x, y, env, k: int):
  """Callables for one jitted step and for ``k`` steps as one ``lax.scan`` (both blocking)."""
  import jax
  import jax.numpy as jnp

  from configs import colored_mnist as configs
  from gs_jax.tasks import cmnist
  from gs_jax import training as train

  cfg = configs.get_config(method)
  model, tx = cmnist.model_of(cfg), cmnist.optimizer_of(cfg)
  objective = cmnist.make_objective(cfg, model.apply)
  hp = {**cmnist.hparams_of(cfg), "anneal_steps": jnp.int32(0)}  # penalty / SD switch active
  # The benchmark times the training step only: no per-step test evaluation.
  batch = {
    "x": jnp.asarray(x),
    "y": jnp.asarray(y),
    "env": jnp.asarray(env),
    "test_x": jnp.asarray(x[:1]),
    "test_y": jnp.asarray(y[:1]),
  }
  step_fn = jax.jit(train.make_train_step(model, tx, objective))
  state = train.init_state(model, tx, jax.random.PRNGKey(0), batch["x"][:2])
  box = {"s": state}

  def one():
    box["s"], m = step_fn(box["s"], batch, hp)
    jax.block_until_ready(m["loss"])

  fit = jax.jit(lambda s: train.fit(train.make_train_step(model, tx, objective), s, batch, hp, k))

  def scan():
    box["s"], h = fit(box["s"])
    jax.block_until_ready(h["loss"])

  return one, scan, cfg.hidden


def build_torch(method: str, x, y, env):
  """The released code's eager step as a callable."""
  import torch
  from torch import autograd, nn

  from configs import colored_mnist as configs

  cfg = configs.get_config(method)
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
    return torch.sum(g**2)

  def one():
    logits = mlp(xt)
    if method.startswith("sd"):
      nll = bce(logits, yt)
      loss = cfg.sd_lambda * ((logits**2).mean() + nll)
    else:
      l0, l1 = logits[:half], logits[half:]
      nll = torch.stack([bce(l0, yt[:half]), bce(l1, yt[half:])]).mean()
      pen = torch.stack([penalty(l0, yt[:half]), penalty(l1, yt[half:])]).mean()
      wn = sum(w.norm().pow(2) for w in mlp.parameters())
      loss = (nll + cfg.l2_weight * wn + cfg.penalty_weight * pen) / cfg.penalty_weight
    opt.zero_grad()
    loss.backward()
    opt.step()

  return one, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def matmul_floor(n: int, dims, rounds: int = 3):
  """(ms, GFLOP, GFLOP/s) of the matrix products of one forward+backward pass of an MLP with
  layer sizes ``dims`` (e.g. (392, 300, 300, 1)) on ``n`` examples, float32, one jitted call."""
  import jax
  import jax.numpy as jnp

  keys = jax.random.split(jax.random.PRNGKey(0), len(dims))
  x = jax.random.normal(keys[0], (n, dims[0]), jnp.float32)
  ws = [
    jax.random.normal(k, (a, b), jnp.float32) * 0.05
    for k, a, b in zip(keys[1:], dims[:-1], dims[1:])
  ]

  @jax.jit
  def products(x, ws):
    hs = [x]
    for w in ws:  # forward: H_{l+1} = H_l W_l
      hs.append(hs[-1] @ w)
    g, grads = hs[-1], []
    for l in range(len(ws) - 1, -1, -1):  # backward: H_lᵀ G and G W_lᵀ
      grads.append(hs[l].T @ g)
      if l:
        g = g @ ws[l].T
    return grads

  flop = (
    2 * n * sum(a * b for a, b in zip(dims[:-1], dims[1:])) * 3 - 2 * n * dims[0] * dims[1]
  )  # no input gradient for the first layer
  jax.block_until_ready(products(x, ws))
  t = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    jax.block_until_ready(products(x, ws))
    t.append(time.perf_counter() - t0)
  sec = statistics.median(t)
  return 1e3 * sec, flop / 1e9, flop / 1e9 / sec


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.cmnist_speed", description=__doc__.split("\n\n")[0]
  )
  p.add_argument("--n", type=int, default=50_000, help="examples in the full batch")
  p.add_argument(
    "--steps",
    type=int,
    default=3,
    help="steps per timed round: gs-jax scans this many, PyTorch runs this many",
  )
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
  p.add_argument("--warmup", type=int, default=1, help="untimed rounds (incl. compilation)")
  p.add_argument("--methods", default="sd,irm", help="comma-separated: sd (=ERM step + SD), irm")
  p.add_argument(
    "--torch_threads",
    type=int,
    default=0,
    help="torch.set_num_threads (0 = PyTorch's default, one per core)",
  )
  p.add_argument("--json", default="", help="also write the numbers (with provenance) here")
  p.add_argument(
    "--data_dir",
    default=None,
    help="folder with mnist.npz (default: $GS_DATA_DIR/mnist; random inputs when neither exists)",
  )
  p.add_argument(
    "--cpu_dots",
    choices=("xla", "eigen"),
    default=None,
    help="library of XLA:CPU's matrix products (gs_jax.devices.use_cpu_dots; default: the "
    "Colored MNIST experiment's, configs/colored_mnist.py)",
  )
  args = p.parse_args(argv)
  from configs import colored_mnist as configs
  from gs_jax.base import devices

  # Before JAX starts (provenance lists the devices): the experiment's dot library.
  cpu_dots = devices.use_cpu_dots(args.cpu_dots or configs.get_config("sd").run.cpu_dots)
  from gs_jax.experiment import results

  started = results.provenance_at_start()  # the code that runs, before anything is written
  import jax

  if args.torch_threads:
    try:
      import torch

      torch.set_num_threads(args.torch_threads)
    except ImportError:
      pass
  x, y, env = make_data(args.n, args.data_dir)
  print(
    f"Colored-MNIST full-batch step, n={args.n} x 392, Adam; jax {jax.__version__} on "
    f"{jax.devices()[0]}, {os.cpu_count()} CPUs visible; dots: {cpu_dots}"
  )
  out = {
    "n": args.n,
    "steps": args.steps,
    "rounds": args.rounds,
    "jax": jax.__version__,
    "cpu_dots": cpu_dots,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "methods": {},
  }
  for method in args.methods.split(","):
    jax_step, jax_scan, hidden = build_jax(method, x, y, env, args.steps)
    try:
      torch_step, torch_info = build_torch(method, x, y, env)
    except ImportError:
      torch_step, torch_info = None, "PyTorch not installed"
    for _ in range(args.warmup):  # compilation and first-touch costs
      jax_step(), jax_scan()
      if torch_step:
        torch_step()
    # Interleaved rounds, so that load from other processes hits both sides alike.
    t_jit, t_scan, t_torch = [], [], []
    for _ in range(args.rounds):
      t_jit.append(time_calls(jax_step, 0, 1))
      t_scan.append(time_calls(jax_scan, 0, 1) / args.steps)
      if torch_step:
        t_torch.append(time_calls(torch_step, 0, args.steps))
    ms = lambda t: 1e3 * statistics.median(t)
    torch_ms = ms(t_torch) if t_torch else float("nan")
    print(
      f"{method:4s} h={hidden}: gs-jax jit step {ms(t_jit):8.1f} ms | gs-jax scan "
      f"{ms(t_scan):8.1f} ms/step | PyTorch eager {torch_ms:8.1f} ms/step ({torch_info}) | "
      f"speed-up (PyTorch / gs-jax scan) {torch_ms / ms(t_scan):.2f}x"
    )
    floor_ms, gflop, rate = matmul_floor(args.n, (392, hidden, hidden, 1), args.rounds)
    print(
      f"     matmul floor {floor_ms:8.1f} ms ({gflop:.1f} GFLOP at {rate:.0f} GFLOP/s) | "
      f"gs-jax scan / floor {ms(t_scan) / floor_ms:.2f}x"
    )
    out["methods"][method] = {
      "hidden": hidden,
      "jit_ms": ms(t_jit),
      "scan_ms": ms(t_scan),
      "torch_ms": torch_ms,
      "torch": torch_info,
      "speedup": torch_ms / ms(t_scan),
      "floor_ms": floor_ms,
      "floor_gflop": gflop,
      "floor_gflops": rate,
      "scan_over_floor": ms(t_scan) / floor_ms,
    }
  if args.json:
    from gs_jax.experiment import results

    results.write_measurement(args.json, out, started)
  return 0


if __name__ == "__main__":
  sys.exit(main())

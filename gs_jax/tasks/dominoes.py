"""Library logic of the MNIST–CIFAR dominoes experiment (docs/protocols.md §3.8; Shah et al.
2020's construction in :mod:`gs_jax.data.dominoes`): logits over padded chunks, the top-k NTK
features at θ0 with each feature's MNIST-half share, the grouped responses and the summary over
seeds. The experiment (``experiments/dominoes.py``) trains the arms and writes what these
return."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax import training as train
from gs_jax.base import batching, stats
from gs_jax.data import dominoes
from gs_jax.theory import ntk

MNIST_HALF = np.arange(dominoes.HEIGHT)[:, None, None] < dominoes.SPLIT_ROW


def logits_of(fn, params, x, batch: int) -> np.ndarray:
  """``fn(params, xb)`` over chunks of ``batch`` rows, concatenated (the last chunk padded, so
  every split runs one compiled shape: :func:`gs_jax.base.batching.batched`)."""
  run = batching.batched(lambda xb, yb, key: fn(params, xb), batch)
  return np.asarray(run(x, np.zeros(len(x), np.int32), jax.random.PRNGKey(0)))


def scalar_logits(f, params, x, batch: int) -> np.ndarray:
  """(n,) scalar logits ``f(params, x)`` (float inputs) over padded chunks of ``batch``."""
  return logits_of(jax.jit(f), params, x, batch)


def seed_features(
  f,
  params,
  x,
  y,
  path: Path,
  *,
  k: int,
  method: str,
  batch_size: int,
  passes: int,
  tol: float,
  attr_examples: int,
) -> dict:
  """Top-k features at θ0 on ``x`` (float inputs), ŷ_0, and each feature's MNIST-half share
  (:func:`gs_jax.theory.ntk.feature_region_shares`); cached in ``path``."""
  if path.exists():
    with np.load(path) as z:
      return dict(z)
  t0 = time.perf_counter()
  mf = method == "matrix_free"
  U, S = ntk.top_features(
    f,
    params,
    x,
    y,
    k,
    method=method,
    batch_size=batch_size,
    **({"max_passes": passes, "tol": tol} if mf else {}),
  )[:2]
  V = ntk.feature_directions(f, params, x, y, U, S, batch_size=batch_size)
  shares = ntk.feature_region_shares(f, params, x, U, V, MNIST_HALF, per_feature=attr_examples)
  logits0 = scalar_logits(f, params, x, batch_size)
  out = {
    "U": U,
    "S": S,
    "logits0": logits0,
    "mnist_share": shares,
    "seconds": time.perf_counter() - t0,
  }
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **out)
  return out


def init(model, tx, key):
  """:func:`gs_jax.train.init_state` on a 64×32 input as one program at XLA's lowest
  optimisation level (as :func:`gs_jax.train.make_seed_init`: the PRNG code of the
  PyTorch-default init otherwise compiles for ~10 s, op by op or whole)."""
  x = jnp.zeros((2, dominoes.HEIGHT, dominoes.WIDTH, 3), jnp.float32)
  fn = jax.jit(
    lambda k: train.init_state(model, tx, k, x),
    compiler_options={"xla_backend_optimization_level": 0},
  )
  return fn(key)


def group_responses(z, shares) -> dict:
  """Sums of the responses over MNIST-half features (share ≥ 1/2) and CIFAR-half ones."""
  z, m = np.asarray(z), np.asarray(shares) >= 0.5
  return {
    "z_mnist": float(z[m].sum()),
    "z_cifar": float(z[~m].sum()),
    "n_mnist": int(m.sum()),
    "n_cifar": int((~m).sum()),
  }


def summarise(per_run: dict, sweep: bool) -> dict:
  """Mean ± sample std over seeds, per method: accuracies and grouped responses (or, for the
  sweep, held-out accuracies and the chosen sd_lambda)."""
  out = {}
  for arm in dict.fromkeys(v["method"] for v in per_run.values()):
    runs = [v for v in per_run.values() if v["method"] == arm]
    if sweep:
      out[arm] = {
        k: stats.mean_std([r["val_acc"][k] for r in runs]) for k in ("intact", "mnist_random")
      }
      out[arm]["sd_lambda"] = runs[0]["sd_lambda"]
      continue
    out[arm] = {
      "train_acc": stats.mean_std([r["train_acc"] for r in runs]),
      **{f"test_{k}": stats.mean_std([r["test_acc"][k] for r in runs]) for k in dominoes.VARIANTS},
      **{k: stats.mean_std([r[k] for r in runs]) for k in ("z_mnist", "z_cifar")},
      "seeds": len(runs),
    }
  if sweep and out:
    # Ties are real: a network that reads only the digit scores the same on the randomised
    # split whatever its λ. Among ties the larger λ is SD's stronger form (eq 17 shrinks every
    # response), which the held-out split cannot tell from the weaker one.
    best = max(
      out,
      key=lambda k: (
        out[k]["mnist_random"]["mean"],
        out[k]["intact"]["mean"],
        out[k]["sd_lambda"],
      ),
    )
    out["sd_choice"] = {
      "sd_lambda": out[best]["sd_lambda"],
      "rule": "largest held-out accuracy with the MNIST half randomised; ties: larger intact "
      "held-out accuracy, then the larger sd_lambda",
    }
  return out

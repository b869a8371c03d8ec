"""Library logic of the CIFAR NTK-feature experiment (docs/protocols.md §3.6–3.7): the eq-17/18
SD prediction, the linearised model's dual prediction for eq 5's λ, relative errors per feature
group, the per-seed features at θ0 (cached) and the summary over seeds. The experiment
(``experiments/cifar_features.py``) trains the arms and writes what these return."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from gs_jax.base import batching, stats
from gs_jax.theory import dual, ntk


def eq17_lambda(sd_coef: float, batch_size: int) -> float:
  """λ of eq 17 for the released SD term ``sd_coef·Σ_{batch,logits} ŷ²`` (§3.6): over an
  epoch the objective is ``(1/n)[Σ_i CE_i + B·sd_coef Σ_i (ŷ_i0² + ŷ_i1²)]``; with the logit
  sum driven to 0, ``ŷ_i0² + ŷ_i1² = d_i²/2`` for ``d = ŷ_1 − ŷ_0``, so ``λ = B·sd_coef``."""
  return sd_coef * batch_size


def sd_prediction(U, lam: float) -> np.ndarray:
  """eq 18: every ``α_i*`` solves ``log((1−a)/a) = a/λ`` (no U, no S), ``z* = U^T α*/λ``."""
  a = float(dual.fixed_point(np.ones((1, 1)), np.ones(1), lam, dynamics="sd")[0])
  return a / lam * np.asarray(U).sum(axis=0)


def dual_prediction(U, S, lam: float, dynamics: str = "exact") -> np.ndarray:
  """Responses at the fixed point of the linearised model's dual (eq 8–11) for eq 5's λ:
  ``z* = S² Uᵀ α*/λ`` with ``α* = dual.fixed_point(U, S, λ)`` on the top-k features (the
  strengths beyond k taken as 0)."""
  alpha = dual.fixed_point(U, S, lam, dynamics=dynamics, orth_tol=None)
  return np.asarray(dual.responses_at(U, S, lam, alpha, dynamics))


def relative_errors(z, pred) -> dict:
  """``‖z − z*‖/‖z*‖`` over features 1–k and 2–k (feature 1: the label-blind constant
  direction of §3.6)."""
  z, pred = np.asarray(z), np.asarray(pred)
  return {
    "all": float(np.linalg.norm(z - pred) / np.linalg.norm(pred)),
    "j2plus": float(np.linalg.norm(z[1:] - pred[1:]) / np.linalg.norm(pred[1:])),
  }


def batched_logits(model, params, x, batch_size: int) -> np.ndarray:
  """(n, 2) logits of ``model`` at ``params`` in chunks of ``batch_size`` rows (bounded memory;
  the last chunk padded, so the function compiles once: :func:`gs_jax.base.batching.batched`)."""
  apply = jax.jit(lambda p, xb: model.apply({"params": p}, xb))
  run = batching.batched(lambda xb, yb, key: apply(params, xb), batch_size)
  return np.asarray(run(x, np.zeros(x.shape[0], np.int32), jax.random.PRNGKey(0)))


def seed_features(
  model,
  f,
  params,
  x,
  y,
  path: Path,
  *,
  k_spectrum: int,
  method: str,
  batch_size: int,
  passes: int,
  tol: float,
  n_images: int,
) -> dict:
  """Top ``k_spectrum`` features of ``YΦ0`` at θ0 (:func:`gs_jax.theory.ntk.top_features`),
  logits ŷ_0 and the input gradients of the top ``n_images`` features; cached in ``path``."""
  if path.exists():
    with np.load(path) as z:
      return dict(z)
  mf = method == "matrix_free"
  t0 = time.perf_counter()
  res = ntk.top_features(
    f,
    params,
    x,
    y,
    k_spectrum,
    method=method,
    batch_size=batch_size,
    **({"max_passes": passes, "tol": tol, "return_info": True} if mf else {}),
  )
  seconds = time.perf_counter() - t0
  U, S, info = res[0], res[1], (res[2] if mf else {})
  logits = batched_logits(model, params, x, batch_size)
  logits0 = logits[:, 1] - logits[:, 0]
  out = {
    "U": U,
    "S": S,
    "logits0": logits0,
    "seconds": seconds,
    "passes": info.get("passes", 0),
    "ritz_change": info.get("ritz_change", 0.0),
  }
  if n_images:
    j = np.arange(n_images)
    V = ntk.feature_directions(f, params, x, y, U[:, j], S[j], batch_size=batch_size)
    idx = np.argmax(np.abs(U[:, j]), axis=0)  # the example each feature weighs most
    out.update(
      image_index=idx,
      images=np.asarray(x[idx]),
      input_grads=np.asarray(ntk.feature_input_gradients(f, params, x[idx], V)),
    )
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **out)
  return out


def summarise(per_run: dict, arms) -> dict:
  """Means ± sample std over seeds of train accuracy and of the final responses of each arm."""
  out = {}
  for arm in arms:
    runs = [v for v in per_run.values() if v["arm"] == arm]
    if not runs:
      continue
    z = np.stack([np.asarray(v["z_final"]) for v in runs])
    out[arm] = {
      "train_acc": stats.mean_std([v["train_acc"] for v in runs]),
      "z_final_mean": z.mean(axis=0),
      "seeds": len(runs),
    }
    if "rel_err_dual" in runs[0]:
      out[arm].update(
        eq5_lambda=runs[0]["eq5_lambda"],
        **{
          f"rel_err_dual_{g}": stats.mean_std([v["rel_err_dual"][g] for v in runs])
          for g in ("all", "j2plus")
        },
      )
    if arm == "sd":
      pred = np.stack([np.asarray(v["z_eq18"]) for v in runs])
      out[arm]["z_eq18_mean"] = pred.mean(axis=0)
      out[arm]["rel_gap_to_eq18"] = float(np.linalg.norm(z - pred) / np.linalg.norm(pred))
      # feature 1 is the label-blind constant direction (README): the gap without it
      out[arm]["rel_gap_to_eq18_j2plus"] = float(
        np.linalg.norm(z[:, 1:] - pred[:, 1:]) / np.linalg.norm(pred[:, 1:])
      )
  return out

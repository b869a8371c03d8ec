"""gs_jax.tasks.cifar_features: the eq-17 λ and SD prediction, arm names and the dual prediction,
and ridge training of a linear model reaching the dual prediction."""

import numpy as np
import pytest

from configs import cifar_features as configs
from gs_jax.experiment import cli
from gs_jax.theory import dual


def test_eq17_lambda_and_sd_prediction():
  cfg = cli.parse(configs, [], prog="t")
  from gs_jax.tasks import cifar_features as lib

  assert lib.eq17_lambda(cfg.sd_coef, cfg.batch_size) == pytest.approx(0.1)  # batch 1, sd_coef 0.1
  assert lib.eq17_lambda(cfg.sd_coef, 4) == pytest.approx(0.4)
  U = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 3)))[0]
  z = lib.sd_prediction(U, 0.1)
  a = 0.1 * z[0] / U[:, 0].sum()
  np.testing.assert_allclose(np.log((1 - a) / a), a / 0.1, rtol=1e-10)  # eq 18 fixed point
  alpha = dual.fixed_point(U, np.ones(3), 0.1, dynamics="sd")
  np.testing.assert_allclose(z, dual.responses_at(U, np.ones(3), 0.1, alpha, "sd"), rtol=1e-10)


def test_arm_names_and_dual_prediction():
  assert configs.parse_arm("ridge100") == ("ridge", 100.0)
  assert configs.parse_arm("wd1e3") == ("wd", 1000.0)
  assert configs.parse_arm("sd") == ("sd", 0.0)
  for bad in ("ridge", "ridge-1", "wdx", "l2"):
    with pytest.raises(ValueError, match="none of"):
      configs.parse_arm(bad)
  cfg = cli.parse(configs, ["--preset=coupled"], prog="t")
  assert cfg.arms == (
    "ridge10",
    "ridge100",
    "ridge1000",
    "ridge10000",
    "wd10",
    "wd100",
    "wd1000",
    "wd10000",
  )
  assert cfg.train_limit == 0 and cfg.epochs == 40 and cfg.batch_size == 1 and cfg.seeds == 3
  with pytest.raises(SystemExit):
    cli.parse(configs, ["--arms=erm,erm"], prog="t")
  from gs_jax.tasks import cifar_features as lib

  U = np.linalg.qr(np.random.default_rng(1).normal(size=(30, 4)))[0]
  S = np.array([20.0, 5.0, 2.0, 1.0])
  for lam in (1.0, 1e3):
    z = lib.dual_prediction(U, S, lam)
    alpha = 1.0 / (1.0 + np.exp(U @ z))  # eq 9 at the fixed point: α = σ(−U z)
    np.testing.assert_allclose(z, S**2 * (U.T @ alpha) / lam, rtol=1e-8)
  e = lib.relative_errors([2.0, 1.0, 1.0], [1.0, 1.0, 2.0])
  assert e["all"] == pytest.approx(np.sqrt(2 / 6)) and e["j2plus"] == pytest.approx(np.sqrt(1 / 5))


def test_ridge_training_of_a_linear_model_reaches_the_dual_prediction():
  """Where the network *is* its linearisation (logits linear in θ, ŷ0 = 0 at θ0), minimising
  the training objective mean CE + (c/2)‖θ − θ0‖² with c = eq5_coefficient(λ, n) lands on the
  responses experiments.cifar_features predicts, S² Uᵀ α*/λ with α* = dual.fixed_point (all
  features of YΦ0 kept): the whole §3.7 chain — λ mapping, two-logit CE as eq 5's logistic loss
  on f_1 − f_0, features, responses, fixed point — agrees to the optimiser's tolerance."""
  import jax
  import jax.numpy as jnp
  import scipy.optimize
  from jax.flatten_util import ravel_pytree

  from gs_jax.tasks import cifar_features as lib
  from gs_jax.nn import losses
  from gs_jax.theory import ntk
  from gs_jax import training as train

  rng = np.random.default_rng(3)
  n, d, lam = 10, 3, 2.0
  x = rng.normal(size=(n, d))
  c01 = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int32)
  w0 = rng.normal(size=(d, 1))
  params0 = {"w": np.concatenate([w0, w0], axis=1), "b": np.array([0.3, 0.3])}  # ŷ0 = 0
  apply = lambda p, xx: xx @ p["w"] + p["b"]
  c = losses.eq5_coefficient(lam, n)
  with dual.enable_x64():  # jax.experimental.enable_x64 or jax.enable_x64, by version
    flat0, unravel = ravel_pytree(jax.tree_util.tree_map(jnp.asarray, params0))

    def objective(w):
      p = unravel(w)
      return train.softmax_ridge_objective(
        apply(p, x),
        {"y": jnp.asarray(c01)},
        p,
        0,
        {"sd_lambda": 0.0, "ridge": c, "params0": unravel(flat0)},
      )[0]

    fun = jax.jit(jax.value_and_grad(objective))
    sol = scipy.optimize.minimize(
      lambda w: tuple(np.asarray(v) for v in fun(w)),
      np.asarray(flat0),
      jac=True,
      method="L-BFGS-B",
      options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
    )
    f = ntk.logit_difference(lambda p, xx: apply(p, xx))
    phi = np.asarray(ntk.ntrf(f, unravel(flat0), x))
    logits = np.asarray(f(unravel(jnp.asarray(sol.x)), x))
  K = phi @ phi.T
  rank = int(np.sum(np.linalg.eigvalsh(K) > 1e-9 * np.abs(K).max()))
  U, S = ntk.features_from_kernel(K, c01, rank)
  z = np.asarray(ntk.responses(U, c01, logits))
  pred = lib.dual_prediction(U, S, lam)
  np.testing.assert_allclose(z, pred, rtol=1e-5, atol=1e-7)
  assert np.linalg.norm(pred) > 0.1  # not a trivial agreement at zero

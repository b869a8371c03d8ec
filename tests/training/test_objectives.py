"""gs_jax.training.objectives: the softmax objective with SD against its definition, the released
SD form's conversion to sd_lambda, and eq 5's coefficient mapping the training objective onto
eq 5."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax import training as train


def test_sd_objective_matches_its_definition():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 3)).astype(np.float32) * 3
  y = rng.integers(0, 3, 7)
  batch = {"y": jnp.asarray(y)}
  lse = np.log(np.exp(logits).sum(1))
  ce = np.mean(lse - logits[np.arange(7), y])
  for lam in (0.0, 0.01, 0.05):
    loss, metrics = train.softmax_objective(jnp.asarray(logits), batch, None, 0, {"sd_lambda": lam})
    # docs/protocols.md §3.3/§4: sd_lambda · mean over batch *and classes* of ŷ²
    np.testing.assert_allclose(loss, ce + lam * np.sum(logits**2) / logits.size, rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"], ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == y), rtol=1e-6)


def test_released_sd_form_converts_to_sd_lambda():
  """sd_coef·Σ ŷ² (batch B, C logits) equals sd_lambda·mean(ŷ²) with sd_lambda = sd_coef·B·C;
  at B = 1, C = 2: sd_coef 0.1 = sd_lambda 0.2 (configs/cifar.py docstring)."""
  logits = jnp.array([[1.5, -2.0]])
  batch = {"y": jnp.array([1])}
  a, _ = train.softmax_objective(
    logits, batch, None, 0, {"sd_lambda": 0.0, "sd_coef": jnp.float32(0.1)}
  )
  b, _ = train.softmax_objective(logits, batch, None, 0, {"sd_lambda": jnp.float32(0.2)})
  np.testing.assert_allclose(a, b, rtol=1e-6)
  ce = -jax.nn.log_softmax(logits)[0, 1]
  np.testing.assert_allclose(a, ce + 0.1 * (1.5**2 + 2.0**2), rtol=1e-6)
  logits4 = jnp.arange(8.0).reshape(4, 2) / 4
  a4, _ = train.softmax_objective(
    logits4, {"y": jnp.zeros(4, int)}, None, 0, {"sd_lambda": 0.0, "sd_coef": 0.1}
  )
  b4, _ = train.softmax_objective(
    logits4, {"y": jnp.zeros(4, int)}, None, 0, {"sd_lambda": 0.1 * 4 * 2}
  )
  np.testing.assert_allclose(a4, b4, rtol=1e-6)


def test_eq5_coefficient_maps_the_training_objective_onto_eq5():
  """The λ mapping of docs/protocols.md §3.7: at c = eq5_coefficient(λ, n) = λ/n,
  n·∇[mean CE + (c/2)‖θ − θ0‖²] = ∇[Σ_i log(1 + exp(−y_i ŷ_i)) + (λ/2)‖θ − θ0‖²] (eq 5 on the
  logit difference ŷ = f_1 − f_0), batch-B steps summed over an epoch give (n/B)× that mean-form
  gradient whatever B, and coupled weight decay c is the same with θ0 = 0."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from gs_jax.nn import losses
  from gs_jax import training as train

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(jnp.tanh(nn.Dense(5)(x)))

  net, n, lam = Net(), 6, 3.0
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)
  c01 = jnp.asarray([0, 1, 1, 0, 1, 0])
  params = net.init(jax.random.PRNGKey(1), x)["params"]
  params0 = net.init(jax.random.PRNGKey(2), x)["params"]
  c = losses.eq5_coefficient(lam, n)
  assert c == pytest.approx(lam / n)

  @jax.jit
  def _train_grad(p, xb, yb, p0):
    hp = {"sd_lambda": 0.0, "ridge": c, "params0": p0}
    return jax.grad(
      lambda q: train.softmax_ridge_objective(net.apply({"params": q}, xb), {"y": yb}, q, 0, hp)[0]
    )(p)

  def train_grad(p, idx, p0=params0):
    return _train_grad(p, x[idx], c01[idx], p0)

  @jax.jit
  def eq5_grad(p, p0=params0):
    def obj(q):
      out = net.apply({"params": q}, x)
      return losses.theory_objective(
        out[:, 1] - out[:, 0],
        {"y": 2.0 * c01 - 1.0, "params0": p0},
        q,
        0,
        {"ridge": lam, "sd": 0.0},
      )[0]

    return jax.grad(obj)(p)

  flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)])
  full = flat(train_grad(params, np.arange(n)))
  np.testing.assert_allclose(n * full, flat(eq5_grad(params)), rtol=2e-5, atol=1e-6)
  for B in (1, 2, 3):  # an epoch of batch-B steps at a fixed θ: (n/B)·the mean-form gradient
    summed = sum(flat(train_grad(params, np.arange(i, i + B))) for i in range(0, n, B))
    np.testing.assert_allclose(summed, (n / B) * full, rtol=2e-5, atol=1e-6)
  # plain coupled weight decay c: the gradient of the mean CE + c·θ = eq 5 with θ0 = 0, / n
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  g_ce = jax.jit(
    jax.grad(
      lambda q: train.softmax_objective(
        net.apply({"params": q}, x), {"y": c01}, q, 0, {"sd_lambda": 0.0}
      )[0]
    )
  )(params)
  tx = train.make_optimizer("sgd", 1.0, momentum=0.0, weight_decay=c)
  upd, _ = tx.update(g_ce, tx.init(params), params)
  np.testing.assert_allclose(-n * flat(upd), flat(eq5_grad(params, zero)), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(
    flat(train_grad(params, np.arange(n), zero)), -flat(upd), rtol=2e-5, atol=1e-7
  )
  with pytest.raises(ValueError):
    losses.eq5_coefficient(1.0, 0)

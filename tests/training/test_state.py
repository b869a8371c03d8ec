"""gs_jax.training.state: the train step is pure, dropout masks change per step, optimizer
argument checks, and coupled weight decay equals PyTorch's SGD update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gs_jax.nn import losses, models
from gs_jax import training as train

from tests._helpers import two_moons_batches as _data


def test_coupled_weight_decay_matches_pytorch_sgd_update():
  """Two SGD steps with momentum and weight decay, by PyTorch's formulas."""
  lr, mu, wd = 0.1, 0.9, 0.05
  theta = np.array([1.0, -2.0])
  grad_fn = lambda th: np.array([2 * th[0], 3.0])  # gradient of a toy loss
  tx = train.make_optimizer("sgd", lr, momentum=mu, weight_decay=wd)
  p, s = jnp.asarray(theta), None
  s = tx.init(p)
  v = np.zeros(2)
  th = theta.copy()
  for _ in range(2):
    d = grad_fn(th) + wd * th  # torch: d_p = grad + wd * p
    v = mu * v + d  # buf = momentum * buf + d_p
    th = th - lr * v
    upd, s = tx.update(jnp.asarray(grad_fn(np.asarray(p))), s, p)
    p = optax.apply_updates(p, upd)
  np.testing.assert_allclose(p, th, rtol=1e-6)
  # and the same update is the gradient of loss + l2_penalty
  g = jax.grad(lambda q: losses.l2_penalty({"w": q}, wd))(jnp.asarray(theta))
  np.testing.assert_allclose(g, wd * theta, rtol=1e-6)


def test_train_step_is_pure_and_dropout_masks_change_per_step():
  model = models.MLP(hidden=(64,), dropout_rate=0.5)
  tx = train.make_optimizer("sgd", 0.0)  # lr 0: parameters stay, only the masks move
  batch = {k: v[0] for k, v in _data([0]).items()}
  st = train.init_state(model, tx, jax.random.PRNGKey(0), batch["x"])
  step = jax.jit(train.make_train_step(model, tx, train.binary_objective))
  a, ma = step(st, batch, {"sd_lambda": 0.0})
  b, mb = step(st, batch, {"sd_lambda": 0.0})
  assert float(ma["loss"]) == float(mb["loss"])
  _, mc = step(a, batch, {"sd_lambda": 0.0})
  assert float(mc["loss"]) != float(ma["loss"])


def test_bad_optimizer_arguments():
  with pytest.raises(ValueError, match="optimizer"):
    train.make_optimizer("rmsprop")
  with pytest.raises(ValueError, match="weight_decay"):
    train.make_optimizer("sgd", weight_decay=-1.0)

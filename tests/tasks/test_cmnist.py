"""gs_jax.tasks.cmnist: the objective's gradient equals the released PyTorch losses' for every
method (docs/protocols.md §3.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import colored_mnist as configs
from gs_jax.experiment import cli
from gs_jax.tasks import cmnist


@pytest.mark.parametrize(
  "method,step",
  [("irm", 2), ("irm", 5), ("rex", 2), ("rex", 5), ("sd", 2), ("sd", 5), ("oracle", 2)],
)
def test_gradient_matches_released_pytorch_loss(method, step):
  torch = pytest.importorskip("torch")
  from tests._torch_reference import cmnist_released_loss

  rng = np.random.default_rng(1)
  n, d, hdim = 40, 12, 7
  x = rng.random((n, d)).astype(np.float32)
  y = rng.integers(0, 2, n).astype(np.float32)
  env = np.repeat([0, 1], n // 2).astype(np.int32)
  cfg = cli.overrides(configs.get_config(method), hidden=hdim)
  if method in ("irm", "rex"):
    cfg.penalty_weight, cfg.anneal_steps = 300.0, 4
  if method == "sd":
    cfg.sd_lambda, cfg.anneal_steps = 0.05, 4
  model = cmnist.model_of(cfg)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  # non-zero biases so that the L2 term's bias part is exercised
  params = jax.tree_util.tree_map(lambda p: p + 0.1 if p.ndim == 1 else p, params)
  hp = cmnist.hparams_of(cfg)
  objective = cmnist.make_objective(cfg, model.apply)
  batch = {"x": x, "y": y, "env": env, "test_x": x[:5], "test_y": y[:5]}

  def loss_fn(p):
    logits = model.apply({"params": p}, x)
    return objective(logits, batch, p, jnp.int32(step), hp)[0]

  loss, grads = jax.value_and_grad(loss_fn)(params)
  layers = ["dense_0", "dense_1", "head"]
  tw = [
    (
      torch.tensor(
        np.asarray(params[l]["kernel"]).T.copy(), dtype=torch.float64, requires_grad=True
      ),
      torch.tensor(np.asarray(params[l]["bias"]), dtype=torch.float64, requires_grad=True),
    )
    for l in layers
  ]
  hp_torch = {k: float(v) for k, v in hp.items()}
  tl = cmnist_released_loss(
    tw,
    torch.tensor(x, dtype=torch.float64),
    torch.tensor(y, dtype=torch.float64),
    torch.tensor(env),
    method,
    step,
    hp_torch,
  )
  tl.backward()
  np.testing.assert_allclose(float(loss), tl.item(), rtol=1e-5)
  for l, (w, b) in zip(layers, tw):
    scale = float(np.abs(w.grad.numpy()).max()) + 1e-12
    np.testing.assert_allclose(
      np.asarray(grads[l]["kernel"]), w.grad.numpy().T, rtol=1e-3, atol=1e-4 * scale
    )
    np.testing.assert_allclose(
      np.asarray(grads[l]["bias"]), b.grad.numpy(), rtol=1e-3, atol=1e-4 * scale
    )

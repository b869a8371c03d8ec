"""The speed benchmark compares like with like: its PyTorch baseline is gs-jax's protocol."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import two_moons_speed
from gs_jax.tasks import moons


@pytest.mark.parametrize("name", ["fig1a", "fig1c"])  # Figure 1 (a) ERM and (c) SD
def test_torch_baseline_trains_the_same_nets_as_gs_jax(name):
  pytest.importorskip("torch")
  panel = two_moons_speed.figure1_panels(30)[name]
  seeds = [0, 1]
  states, history, _ = moons.train_panel(panel, seeds, progress=False)
  params = jax.device_get(states.params)
  # The same starting point: gs-jax's initial parameters (PyTorch's init law, JAX's draws).
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  model = moons.model_of(panel)
  init = jax.vmap(lambda k: model.init(jax.random.split(k)[0], jnp.zeros((1, 2)))["params"])(keys)
  init = jax.device_get(init)
  nets = two_moons_speed.torch_train(
    seeds,
    panel.steps,
    panel.delta,
    panel.sd_lambda,
    init=lambda s: jax.tree_util.tree_map(lambda a: a[s], init),
  )
  for s, net in enumerate(nets):
    np.testing.assert_allclose(
      net[0].weight.detach().numpy().T, params["dense_0"]["kernel"][s], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
      net[2].weight.detach().numpy()[0], params["head"]["kernel"][s, :, 0], rtol=1e-4, atol=1e-5
    )

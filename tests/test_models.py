"""The fused two-layer ReLU net (models.relu_net) against plain autodiff of its definition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import models


def _reference(x, w1, b1, w2, b2):
  return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def _args(dtype, n=9, d=2, h=7, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  return (
    jax.random.normal(k[0], (n, d), dtype),
    jax.random.normal(k[1], (d, h), dtype),
    jax.random.normal(k[2], (h,), dtype),
    jax.random.normal(k[3], (h,), dtype),
    jax.random.normal(k[4], (), dtype),
  )


@pytest.fixture
def x64():
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_relu_net_value_gradients_and_jvp_equal_autodiff_of_the_definition(x64, d):
  args = _args(jnp.float64, d=d)
  np.testing.assert_allclose(models.relu_net(*args), _reference(*args), rtol=1e-13)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  got = jax.grad(loss(models.relu_net), argnums=range(5))(*args)
  want = jax.grad(loss(_reference), argnums=range(5))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
  tangents = _args(jnp.float64, d=d, seed=1)
  np.testing.assert_allclose(
    jax.jvp(models.relu_net, args, tangents)[1],
    jax.jvp(_reference, args, tangents)[1],
    rtol=1e-12,
    atol=1e-13,
  )


def test_relu_net_partial_derivatives_and_vmap(x64):
  """Only some inputs differentiated (symbolic-zero tangents): w.r.t. x (boundary Newton
  steps), w.r.t. the parameters (training); and under vmap (seeds)."""
  x, *params = _args(jnp.float64)
  fx = lambda f: jax.vmap(jax.grad(lambda p: f(p[None], *params)[0]))(x)
  np.testing.assert_allclose(fx(models.relu_net), fx(_reference), rtol=1e-12, atol=1e-13)
  fp = lambda f: jax.grad(
    lambda w2, b1: jnp.sum(f(x, params[0], b1, w2, params[3]) ** 2), argnums=(0, 1)
  )(params[2], params[1])
  for g, w in zip(fp(models.relu_net), fp(_reference)):
    np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
  batched = [jnp.stack([a, 2 * a]) for a in _args(jnp.float64)]
  np.testing.assert_allclose(
    jax.vmap(models.relu_net)(*batched), jax.vmap(_reference)(*batched), rtol=1e-13
  )


class _Layered(nn.Module):
  """The layer-by-layer net with flax's nn.Dense: what MLP computed before fusing."""

  width: int
  kernel_init: str

  @nn.compact
  def __call__(self, x, train=False):
    k1, b1 = models._inits(self.kernel_init, x.shape[-1])
    k2, b2 = models._inits(self.kernel_init, self.width)
    h = nn.relu(nn.Dense(self.width, kernel_init=k1, bias_init=b1, name="dense_0")(x))
    return nn.Dense(1, kernel_init=k2, bias_init=b2, name="head")(h)[:, 0]


@pytest.mark.parametrize("init", models.INITS)
def test_fused_mlp_has_the_parameters_values_and_gradients_of_the_layered_net(init):
  x = jax.random.normal(jax.random.PRNGKey(3), (11, 2))
  fused, layered = models.MLP(hidden=(6,), kernel_init=init), _Layered(6, init)
  pf = fused.init(jax.random.PRNGKey(0), x)
  pl = layered.init(jax.random.PRNGKey(0), x)
  assert jax.tree_util.tree_structure(pf) == jax.tree_util.tree_structure(pl)
  for a, b in zip(jax.tree_util.tree_leaves(pf), jax.tree_util.tree_leaves(pl)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(fused.apply(pf, x), layered.apply(pl, x), rtol=1e-5, atol=1e-6)
  loss = lambda m: lambda p: jnp.mean(jax.nn.softplus(-m.apply(p, x)))
  for a, b in zip(
    jax.tree_util.tree_leaves(jax.grad(loss(fused))(pf)),
    jax.tree_util.tree_leaves(jax.grad(loss(layered))(pl)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_variants_keep_the_layered_path():
  """Dropout, BN, depth and wide inputs are not fused, and still train-mode differentiable."""
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  for m in (
    models.MLP(hidden=(6,), dropout_rate=0.5),
    models.MLP(hidden=(6, 6)),
    models.MLP(hidden=(6,), batch_norm=True),
  ):
    v = m.init(jax.random.PRNGKey(0), x)
    out = m.apply(
      v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"]
    )[0]
    assert out.shape == (8,)
  wide = models.MLP(hidden=(6,)).init(jax.random.PRNGKey(0), jnp.zeros((3, 10)))
  assert wide["params"]["dense_0"]["kernel"].shape == (10, 6)


def test_resnets_have_torchvision_parameter_counts_and_pretrained_loading(tmp_path):
  from flax import serialization

  x = jnp.zeros((2, 64, 64, 3))
  counts = {}
  for name in ("resnet50", "resnet18", "resnet_small"):
    v = jax.eval_shape(lambda: models.resnet(name).init(jax.random.PRNGKey(0), x))
    counts[name] = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(v["params"]))
  # torchvision: 25,557,032 (resnet50) and 11,689,512 (resnet18) with a 1000-way fc;
  # with fc → Linear(·, 1): minus 2048·999 + 999, resp. 512·999 + 999
  assert counts["resnet50"] == 25557032 - 2048 * 999 - 999
  assert counts["resnet18"] == 11689512 - 512 * 999 - 999
  model = models.resnet("resnet_small")
  v0 = model.init(jax.random.PRNGKey(0), x)
  v1 = model.init(jax.random.PRNGKey(1), x)
  path = tmp_path / "w.msgpack"
  ckpt = jax.tree_util.tree_map(np.asarray, dict(v1))
  ckpt["params"] = dict(ckpt["params"])
  ckpt["params"]["head"] = {"kernel": np.zeros((64, 1000)), "bias": np.zeros(1000)}  # ImageNet fc
  path.write_bytes(serialization.msgpack_serialize(ckpt))
  v = models.load_pretrained(v0, str(path))
  np.testing.assert_array_equal(v["params"]["conv1"]["kernel"], v1["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(v["params"]["head"]["kernel"], v0["params"]["head"]["kernel"])
  out = model.apply(v, jnp.ones((3, 64, 64, 3)), train=False)
  assert out.shape == (3,)
  del ckpt["params"]["conv1"]
  path.write_bytes(serialization.msgpack_serialize(ckpt))
  with pytest.raises(ValueError, match="missing params/conv1/kernel"):
    models.load_pretrained(v0, str(path))

"""gs_jax.nn.models: the fused two-layer ReLU net (relu_net) against plain autodiff of its
definition, the fused MLP against a layered one, PyTorch-default initialisation and the
small-fan-in dense layer, the CIFAR VGG, NarLeNet (against a PyTorch forward), the
PreAct-ResNet-18 of Table 1's CIFAR-100 row, the feature-scaled net of Theorem 2 and the
torchvision-layout ResNets."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import models
from gs_jax import training as train
from gs_jax.theory import ntk
from gs_jax.base._compat import enable_x64
from gs_jax.data import toy


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


def _net_and_params(seed=0):
  net = models.NarLeNet(2)
  return net, net.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


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


def test_torch_default_init_bounds():
  model = models.MLP(hidden=(500,), kernel_init="torch")
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]
  w1, b1 = params["dense_0"]["kernel"], params["dense_0"]["bias"]
  w2 = params["head"]["kernel"]
  assert np.abs(w1).max() <= 1 / np.sqrt(2) and np.abs(b1).max() <= 1 / np.sqrt(2)
  assert np.abs(w2).max() <= 1 / np.sqrt(500)
  # U(-b, b) has std b/sqrt(3)
  np.testing.assert_allclose(np.std(w1), (1 / np.sqrt(2)) / np.sqrt(3), rtol=0.1)


def test_small_fan_in_dense_equals_matmul():
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
  model = models.MLP(hidden=(5,), kernel_init="lecun")
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  h = jax.nn.relu(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"])
  ref = (h @ params["head"]["kernel"] + params["head"]["bias"])[:, 0]
  np.testing.assert_allclose(model.apply({"params": params}, x), ref, rtol=1e-5, atol=1e-6)


def test_small_fan_in_dense_gradients_equal_matmul_gradients():
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
  w = jax.random.normal(jax.random.PRNGKey(2), (2, 5))
  f = lambda x, w: jnp.sum(jnp.sin(models.small_fan_in_dot_general(x, w, (((1,), (0,)), ((), ())))))
  g = lambda x, w: jnp.sum(jnp.sin(x @ w))
  for a, b in zip(jax.grad(f, (0, 1))(x, w), jax.grad(g, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_narlenet_on_dominoes_widens_only_its_first_dense_layer():
  from gs_jax.nn import models

  net = models.NarLeNet(2)
  v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 32, 3)))["params"]
  assert v["fc0"]["kernel"].shape == (2080, 240)  # 32 · 13 · 5
  assert v["conv0"]["kernel"].shape == (5, 5, 3, 12) and v["fc1"]["kernel"].shape == (240, 192)
  bound = 1 / np.sqrt(2080)  # PyTorch default U(±1/√fan_in)
  assert float(jnp.abs(v["fc0"]["kernel"]).max()) <= bound
  assert float(jnp.abs(v["fc0"]["kernel"]).max()) > 0.98 * bound
  x = jnp.asarray(np.random.default_rng(0).random((3, 64, 32, 3)), jnp.float32)
  out = net.apply({"params": v}, x)
  assert out.shape == (3, 2)
  np.testing.assert_allclose(
    out, models.NarLeNet(2, patches=False).apply({"params": v}, x), rtol=1e-4, atol=1e-5
  )


@pytest.mark.parametrize("config, convs", [("cpu", 3), ("paper", 13)])
def test_model_shapes_and_batch_stats(config, convs):
  model = models.cifar_model(config, 10)
  tx = train.make_optimizer("sgd", 0.01)
  state = train.init_state(model, tx, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))
  assert sum(k.startswith("conv") for k in state.params) == convs
  assert "batch_stats" in state.model_state
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3))
  logits, new_ms = train.apply_model(model, state, x, train=True)
  assert logits.shape == (4, 10)
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), state.model_state, new_ms)
  assert any(jax.tree_util.tree_leaves(changed))  # BN running stats updated in train mode
  if config == "paper":
    widths = [
      state.params[f"conv{s}_{j}"]["kernel"].shape[-1]
      for s, n in enumerate((2, 2, 3, 3, 3))
      for j in range(n)
    ]
    assert widths == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6


def test_normalisation_inside_the_model():
  """Feeding [0,1] pixels equals feeding normalised pixels to a model with mean 0, std 1."""
  m1 = models.CifarVGG(models.CNN_CPU_STAGES, 2)
  m0 = models.CifarVGG(models.CNN_CPU_STAGES, 2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  v = m1.init(jax.random.PRNGKey(1), x)
  xn = (x - jnp.asarray(models.CIFAR_MEAN)) / jnp.asarray(models.CIFAR_STD)
  np.testing.assert_allclose(m1.apply(v, x), m0.apply(v, xn), rtol=1e-5, atol=1e-5)


def test_narlenet_shapes_and_parameter_count():
  net, v = _net_and_params()
  shapes = {f"{a}/{b}": v["params"][a][b].shape for a in v["params"] for b in v["params"][a]}
  assert shapes == {
    "conv0/kernel": (5, 5, 3, 12),
    "conv0/bias": (12,),
    "conv1/kernel": (5, 5, 12, 32),
    "conv1/bias": (32,),
    "fc0/kernel": (800, 240),
    "fc0/bias": (240,),
    "fc1/kernel": (240, 192),
    "fc1/bias": (192,),
    "fc2/kernel": (192, 2),
    "fc2/bias": (2,),
  }
  assert net.apply(v, jnp.zeros((7, 32, 32, 3))).shape == (7, 2)
  assert models.cifar_model("released", 10).apply(
    models.cifar_model("released", 10).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))),
    jnp.zeros((3, 32, 32, 3)),
  ).shape == (3, 10)


def test_narlenet_init_is_pytorch_default_uniform():
  """Every weight and bias ~ U(±1/√fan_in): every entry of every tensor inside the bound (the
  2- and 12-entry biases included); for tensors of ≥ 100 entries the largest within 2% of it
  (a U draw misses that with probability 0.98^n ≤ 13%; the seed is fixed); for tensors of
  ≥ 900 entries the std within 10% of bound/√3 (relative std error ≈ 0.9/√n ≤ 3%)."""
  _, v = _net_and_params(3)
  p = v["params"]
  fan_in = {"conv0": 75, "conv1": 300, "fc0": 800, "fc1": 240, "fc2": 192}
  for layer, f in fan_in.items():
    bound = 1 / np.sqrt(f)
    for name in ("kernel", "bias"):
      w = np.asarray(p[layer][name]).ravel()
      assert 0 < np.abs(w).max() <= bound, (layer, name)
      if w.size >= 100:
        assert np.abs(w).max() > 0.98 * bound, (layer, name)
      if w.size >= 900:
        assert abs(w.std() / (bound / np.sqrt(3)) - 1) < 0.1, (layer, name)


def test_narlenet_equals_a_torch_forward_with_copied_weights():
  torch = pytest.importorskip("torch")
  from benchmarks.cifar_speed import torch_narlenet

  net, v = _net_and_params(1)
  t = torch_narlenet(v["params"])
  with torch.no_grad():
    x = np.random.default_rng(0).random((5, 32, 32, 3), np.float32)
    ref = t(torch.from_numpy(2 * x.transpose(0, 3, 1, 2) - 1)).numpy()
  out = np.asarray(net.apply(v, jnp.asarray(x)))
  # float32 sums of ≤ 800 terms of size ~0.1: differences of order 1e-6 from summation order.
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_xla_convolutions_give_the_patch_network_on_the_same_parameters():
  """``patches=False`` (evaluation) must be the same function of the same parameters: logits
  and input gradients agree up to float32 summation order (sums of ≤ 300 products of size
  ≤ 1: ~1e-6 relative)."""
  net, v = _net_and_params(2)
  xla = models.NarLeNet(2, patches=False)
  x = jax.random.uniform(jax.random.PRNGKey(5), (6, 32, 32, 3))
  np.testing.assert_allclose(xla.apply(v, x), net.apply(v, x), rtol=1e-5, atol=1e-6)
  grad = lambda m: jax.grad(lambda xa: m.apply(v, xa)[:, 0].sum() - m.apply(v, xa)[:, 1].sum())(x)
  g_xla, g_patch = grad(xla), grad(net)
  np.testing.assert_allclose(g_xla, g_patch, rtol=1e-4, atol=1e-5 * float(jnp.abs(g_patch).max()))
  # Parameter gradients (the patch form's kernel gradient is the unit-batch-axis dot) and a
  # forward-mode derivative (NTK features use jvp): same up to summation order.
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply({"params": p}, x)))
  gp_xla, gp_patch = jax.grad(loss(xla))(v["params"]), jax.grad(loss(net))(v["params"])
  for a, b in zip(jax.tree.leaves(gp_xla), jax.tree.leaves(gp_patch)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()))
  t = jax.tree.map(jnp.ones_like, v["params"])
  jvp = lambda m: jax.jvp(loss(m), (v["params"],), (t,))[1]
  np.testing.assert_allclose(jvp(net), jvp(xla), rtol=1e-4)


def test_patch_convolution_in_one_or_two_stages_is_the_same_function():
  """The two patch layouts (k² slices at once, or k row shifts then k column shifts; the
  default depends on the stack) build the same patch matrix: the forward is bitwise equal, and
  input and kernel gradients differ only by the order of their sums (float32: ~1e-6)."""
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, 12, 10, 3))
  one, two = models._PatchConv(4, two_stage=False), models._PatchConv(4, two_stage=True)
  v = one.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(one.apply(v, x), two.apply(v, x))
  w = jax.random.normal(jax.random.PRNGKey(1), one.apply(v, x).shape)
  for argnums in (0, 1):
    g1, g2 = (
      jax.grad(lambda p, xa: jnp.sum(w * m.apply(p, xa)), argnums)(v, x) for m in (one, two)
    )
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))


@pytest.mark.parametrize(
  "k,shape,c_out", [(5, (2, 32, 32, 3), 12), (5, (1, 14, 10, 4), 6), (3, (2, 8, 12, 2), 5)]
)
def test_space_to_depth_conv_pool_is_conv_then_max_pool(k, shape, c_out):
  """:func:`models._s2d_conv_pool` against XLA's convolution and a 2×2 max-pool written out
  (independent of the kernel gather): the same sums of ≤ k²·c_in float32 products of size ≤ 1,
  in another order plus exact zeros (~1e-6 absolute)."""
  x = jax.random.uniform(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], c_out)) / k
  bias = jax.random.normal(jax.random.PRNGKey(2), (c_out,))
  z = jax.lax.conv_general_dilated(
    x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  z = z + bias
  ref = jnp.maximum(
    jnp.maximum(z[:, 0::2, 0::2], z[:, 0::2, 1::2]), jnp.maximum(z[:, 1::2, 0::2], z[:, 1::2, 1::2])
  )
  np.testing.assert_allclose(models._s2d_conv_pool(x, kernel, bias), ref, rtol=1e-5, atol=2e-6)
  # Every kernel entry appears once per pool offset (a, b) in the gathered matrix, and the rest
  # are zeros: 4 copies of the kernel's sum of squares.
  big = models.s2d_pool_kernel(kernel)
  np.testing.assert_allclose(jnp.sum(big**2), 4 * jnp.sum(kernel**2), rtol=1e-5)
  with pytest.raises(ValueError, match="even H, W"):
    models._s2d_conv_pool(x[:, :-1], kernel, bias)


def test_space_to_depth_first_layer_is_the_same_network():
  """``NarLeNet(s2d_first=True)`` (evaluation's attack loops) is the patch network on the same
  parameters: logits and input gradients agree up to float32 summation order (~1e-6
  relative; the max-pool's ties split the gradient alike, since leaky ReLU is monotone)."""
  net, v = _net_and_params(2)
  s2d = models.NarLeNet(2, s2d_first=True)
  assert jax.tree.structure(s2d.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))) == (
    jax.tree.structure(v)
  )
  x = jax.random.uniform(jax.random.PRNGKey(5), (6, 32, 32, 3))
  np.testing.assert_allclose(s2d.apply(v, x), net.apply(v, x), rtol=1e-5, atol=1e-6)
  grad = lambda m: jax.grad(lambda xa: m.apply(v, xa)[:, 0].sum() - m.apply(v, xa)[:, 1].sum())(x)
  g_s2d, g_patch = grad(s2d), grad(net)
  np.testing.assert_allclose(g_s2d, g_patch, rtol=1e-4, atol=1e-5 * float(jnp.abs(g_patch).max()))
  # A flat image (CIFAR has flat regions): the pool windows tie exactly in both forms.
  flat = jnp.full((1, 32, 32, 3), 0.5)
  g_flat = [jax.grad(lambda xa, m=m: m.apply(v, xa)[0, 0])(flat) for m in (s2d, net)]
  np.testing.assert_allclose(*g_flat, rtol=1e-4, atol=1e-5 * float(jnp.abs(g_flat[1]).max()))


def test_preact_resnet18_layout_and_parameter_count():
  x = jnp.zeros((2, 32, 32, 3))
  # kuangliu/pytorch-cifar PreActResNet18 (no final BN) has 11,171,146 parameters (10 classes)
  m = models.PreActResNet(10, final_bn=False)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x))
  assert _n_params(v["params"]) == 11_171_146
  m = models.cifar_model("preact_resnet18", 100)
  v = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x))
  p = v["params"]
  assert _n_params(p) == 11_171_146 + 90 * 513 + 2 * 512  # 100-class head, final BN
  assert sorted(k for k in p if k.startswith("layer")) == [
    f"layer{k}_{j}" for k in range(1, 5) for j in range(2)
  ]
  assert [k for k in p if "shortcut_conv" in p[k]] == ["layer2_0", "layer3_0", "layer4_0"]
  assert p["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  out = jax.eval_shape(lambda v: m.apply(v, x, train=False), v)
  assert out.shape == (2, 100)


def test_preact_block_is_preactivated():
  """The residual branch starts with BN + ReLU: with BN the identity (eval mode, fresh
  statistics), a block maps a negative input x to x (relu kills the branch; identity shortcut)."""
  blk = models.PreActBlock(8)
  x = -jnp.abs(jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 8))) - 0.1
  v = jax.jit(blk.init)(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(jax.jit(blk.apply)(v, x), x, atol=1e-6)


def test_reduced_width_preact_resnet_fits_synthetic_100_class_batch():
  """CI-sized: a PreActResNet of one block per stage, widths (8, 16, 16, 16), memorises 16
  random images of 100 classes with the preset's objective and optimiser (SGD momentum,
  SD λ = 0.05). (The full-size preset end to end: the slow tests of
  tests/experiments/test_cifar.py.)"""
  from gs_jax import training as train

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(16, 32, 32, 3)), jnp.float32)
  y = jnp.asarray(rng.permutation(100)[:16], jnp.int32)
  model = models.PreActResNet(100, blocks=(1, 1, 1, 1), widths=(8, 16, 16, 16))
  tx = train.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4)
  variables = jax.jit(lambda k: model.init(k, x[:2]))(jax.random.PRNGKey(0))  # jit: eager
  state = train.make_state(dict(variables), tx, jax.random.PRNGKey(1))  # init is slow
  step = jax.jit(train.make_train_step(model, tx, train.softmax_objective))
  losses = []
  for _ in range(30):
    state, m = step(state, {"x": x, "y": y}, {"sd_lambda": jnp.float32(0.05)})
    losses.append(float(m["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.5 * losses[0], losses  # log(100) ≈ 4.6 at the start


def test_feature_scaled_net_scales_only_s1():
  """Explicit NTRF of the reparametrised net: YΦ0P = U diag(κ s1, s2, …) V^T."""
  with enable_x64():
    x, y = toy.clusters(1.5, n_per_cluster=3)
    x = jnp.asarray(x)
    model = models.NTKTwoLayerReLU(width=16, bias_scale=0.0)
    f = lambda p, xx: model.apply({"params": p}, xx)
    p0 = model.init(jax.random.PRNGKey(0), x)["params"]
    flat0, unravel = jax.flatten_util.ravel_pytree(p0)
    _, S_all = ntk.features(f, p0, x, y)
    k = int(np.sum(S_all > 1e-6 * S_all[0]))  # bias-free ReLU: Φ0 is rank deficient
    U, S, V = ntk.features(f, p0, x, y, k=k, return_v=True)
    net = models.FeatureScaledNet(f, unravel)
    kappa = 1.7
    variables = models.FeatureScaledNet.variables(flat0, V[:, 0], kappa)
    np.testing.assert_array_equal(net.apply(variables, x), f(p0, x))  # ω = 0 is θ0
    g = lambda w, xx: net.apply({**variables, "params": {"omega": w}}, xx)
    phi = np.asarray(ntk.ntrf(g, jnp.zeros_like(flat0), x))
    s_ref = np.linalg.svd(np.diag(y) @ phi, compute_uv=False)
    np.testing.assert_allclose(
      s_ref[: len(S)], np.sort(np.r_[kappa * S[0], S[1:]])[::-1], rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(
      np.diag(y) @ phi, U @ np.diag(np.r_[kappa * S[0], S[1:]]) @ V.T, atol=1e-9
    )

"""torchvision ResNet → Flax conversion (gs_jax.convert) against a plain-PyTorch copy of
torchvision's ResNet (tests/_torch_reference.py) with random weights and random BN
statistics: eval-mode logits and pooled features agree on random 224×224 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import convert, models

torch = pytest.importorskip("torch")
from tests import _torch_reference  # noqa: E402  (needs torch)

# torchvision's published layout: state_dict entries (with num_batches_tracked) and parameters.
PUBLISHED = {"resnet18": (122, 11_689_512), "resnet50": (320, 25_557_032)}
SHAPES = {
  "resnet50": {
    "conv1.weight": (64, 3, 7, 7),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "fc.weight": (1000, 2048),
  },
  "resnet18": {
    "layer1.1.conv2.weight": (64, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer4.1.bn2.running_var": (512,),
    "fc.weight": (1000, 512),
  },
}
# float32 on XLA:CPU vs PyTorch CPU, different summation orders through 18/50 layers:
# |Δ| relative to the largest logit / feature magnitude.
RTOL = 1e-4


def _torch_model(name, seed):
  torch.manual_seed(seed)
  net = getattr(_torch_reference, name)()
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():  # random BN affine and running statistics: BN is not the identity
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + 0.5 * torch.rand(c, generator=g))
        m.bias.copy_(0.1 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
  return net.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_reference_has_torchvisions_published_layout(name):
  sd = _torch_model(name, 0).state_dict()
  n_entries, n_params = PUBLISHED[name]
  assert len(sd) == n_entries
  assert (
    sum(
      p.numel()
      for k, p in sd.items()
      if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    == n_params
  )
  for k, shape in SHAPES[name].items():
    assert tuple(sd[k].shape) == shape, k
  # random_state_dict (no PyTorch) has the same keys and shapes
  rnd = convert.random_state_dict(name, 0)
  assert {k: tuple(v.shape) for k, v in rnd.items()} == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_converted_logits_and_features_equal_pytorch(name):
  net = _torch_model(name, 1)
  variables = convert.convert_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
  x = np.random.default_rng(2).normal(size=(2, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    want_f = net.features(xt).numpy()
    want = net.fc(torch.from_numpy(want_f)).numpy()
  model = models.resnet(name, num_outputs=1000)
  got, got_f = jax.jit(lambda v, x: model.apply(v, x, train=False, return_features=True))(
    variables, jnp.asarray(x)
  )
  d_logit = float(np.max(np.abs(np.asarray(got) - want)))
  d_feat = float(np.max(np.abs(np.asarray(got_f) - want_f)))
  print(
    f"{name}: max|Δlogit| {d_logit:.3g} (max|logit| {np.abs(want).max():.3g}), "
    f"max|Δfeature| {d_feat:.3g} (max|feature| {np.abs(want_f).max():.3g})"
  )
  assert d_feat <= RTOL * np.abs(want_f).max()
  assert d_logit <= RTOL * np.abs(want).max()
  assert np.abs(want).max() > 0.1  # not a degenerate (all-zero) comparison


def test_bad_state_dicts_are_refused_by_name():
  sd = convert.random_state_dict("resnet18", 0)
  missing = dict(sd)
  del missing["layer3.1.bn1.running_var"]
  with pytest.raises(ValueError, match="layer3.1.bn1.running_var"):
    convert.convert_state_dict(missing, "resnet18")
  with pytest.raises(ValueError, match="unexpected keys.*extra.weight"):
    convert.convert_state_dict({**sd, "extra.weight": np.zeros(3)}, "resnet18")
  bad = {**sd, "layer1.0.conv1.weight": np.zeros((64, 64, 5, 5), np.float32)}
  with pytest.raises(ValueError, match="layer1_0/conv1/kernel"):
    convert.convert_state_dict(bad, "resnet18")
  with pytest.raises(ValueError, match="not a torchvision"):
    convert.infer_arch({"layer1.0.conv1.weight": 0})


def test_cli_writes_a_checkpoint_that_load_pretrained_accepts(tmp_path):
  net = _torch_model("resnet18", 3)
  pth = tmp_path / "resnet18.pth"
  torch.save({"module." + k: v for k, v in net.state_dict().items()}, pth)  # DataParallel
  out = tmp_path / "resnet18.msgpack"
  assert convert.main(["--torchvision", str(pth), "--out", str(out)]) == 0
  model = models.resnet("resnet18")  # one logit: the ImageNet head is not loaded
  rng = np.random.default_rng(4)  # a stand-in for a fresh init (XLA:CPU compiles init slowly)
  fresh = jax.tree_util.tree_map(
    lambda s: rng.normal(size=s.shape).astype(np.float32),
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))),
  )
  loaded = models.load_pretrained(fresh, str(out))
  np.testing.assert_array_equal(
    loaded["params"]["layer2_0"]["downsample_conv"]["kernel"],
    net.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(loaded["batch_stats"]["bn1"]["var"], net.bn1.running_var.numpy())
  np.testing.assert_array_equal(
    loaded["params"]["head"]["kernel"], fresh["params"]["head"]["kernel"]
  )


def test_cli_user_errors_end_with_a_message_not_a_traceback(tmp_path, capsys):
  pytest.importorskip("torch")
  for path, words in (
    (tmp_path / "missing.pth", "no such file"),
    (tmp_path / "junk.pth", "not a PyTorch state_dict"),
  ):
    if "junk" in path.name:
      path.write_text("not a torch file")
    with pytest.raises(SystemExit) as e:
      convert.main(["--torchvision", str(path), "--out", str(tmp_path / "o.msgpack")])
    assert e.value.code == 2
    assert words in capsys.readouterr().err

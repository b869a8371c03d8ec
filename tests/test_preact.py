"""PreAct-ResNet-18 (Table 1's CIFAR-100 row, docs/protocols.md §3.3): architecture, and the
``paper_cifar100`` preset end to end at reduced size on synthetic 100-class data and on the
offline CIFAR-10 copy."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar as configs
from gs_jax.nn import models
from tests.conftest import real_data


def _n_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


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


def test_paper_cifar100_preset():
  cfg = configs.get_config("paper_cifar100")
  assert (cfg.dataset, cfg.model, cfg.sd_lambda) == ("cifar100", "preact_resnet18", 0.05)
  configs.validate(cfg)
  cfg.model = "resnet"
  with pytest.raises(ValueError, match="--model must be one of"):
    configs.validate(cfg)


# Reduced size: a few steps, few test images, a short margin bisection, no strong attack.
SMALL = [
  "--preset=paper_cifar100",
  "--epochs=1",
  "--batch_size=8",
  "--train_limit=16",
  "--test_limit=8",
  "--margin_n=4",
  "--margin_bisection=1",
  "--strong_n=0",
  "--eval_batch=8",
  "--chunk=2",
  "--no_progress",
  "--seed=0",
]


def _check(out_dir, n_classes):
  r = json.loads((out_dir / "results.json").read_text())
  assert r["config"]["model"] == "preact_resnet18" and r["config"]["preset"] == "paper_cifar100"
  assert r["metrics"]["steps"] == 2 and np.isfinite(r["metrics"]["final_train_loss"])
  # cross-entropy at init of a 100-class (or 10-class) softmax: about log(classes)
  assert abs(r["metrics"]["final_train_loss"] - np.log(n_classes)) < 0.5 * np.log(n_classes)
  assert 0 <= r["metrics"]["test_iid_acc"]["full"] <= 1
  return r


def test_reduced_width_preact_resnet_fits_synthetic_100_class_batch():
  """CI-sized: a PreActResNet of one block per stage, widths (8, 16, 16, 16), memorises 16
  random images of 100 classes with the preset's objective and optimiser (SGD momentum,
  SD λ = 0.05). (The full-size preset end to end: the slow tests below.)"""
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


@pytest.mark.slow
def test_paper_cifar100_end_to_end_on_synthetic_100_classes(tmp_path):
  from experiments import cifar as exp

  rng = np.random.default_rng(0)
  np.savez(
    tmp_path / "cifar100.npz",
    x_train=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
    y_train=np.arange(32) % 100 * 3 % 100,
    x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
    y_test=np.arange(16) * 7 % 100,
  )
  exp.main(SMALL + [f"--data_dir={tmp_path / 'cifar100.npz'}", f"--out_dir={tmp_path / 'run'}"])
  r = _check(tmp_path / "run", 100)
  assert r["data"]["n_train"] == 16 and r["data"]["n_test"] == 8


@pytest.mark.slow
def test_paper_cifar100_preset_on_offline_cifar10(tmp_path):
  from experiments import cifar as exp

  npz = real_data("cifar10", "cifar10.npz")
  exp.main(
    SMALL
    + ["--dataset=cifar10", "--sd_lambda=0", f"--data_dir={npz}", f"--out_dir={tmp_path / 'run'}"]
  )
  r = _check(tmp_path / "run", 10)
  assert r["method"] == "ERM"

"""gs_jax.data.colored_mnist (docs/protocols.md §3.4): rates, shapes, channels, subsampling,
variants, and loader errors naming the file."""

import numpy as np
import pytest

from gs_jax.data import colored_mnist as cm
from gs_jax.base import errors

from tests._helpers import fake_mnist, malformed_npz as _malformed_npz


@pytest.fixture(scope="module")
def mnist():
  return fake_mnist()


@pytest.fixture(scope="module")
def envs(mnist):
  return cm.colored_mnist(seed=3, mnist=mnist)


def within_binomial(k_hits, n, p, z=5.0):
  """|p̂ − p| within z binomial standard deviations."""
  return abs(k_hits / n - p) <= z * np.sqrt(p * (1 - p) / n)


def test_shapes_and_ranges(envs):
  assert set(envs) == {"train0", "train1", "test", *cm.VARIANTS}
  for name, n in (("train0", 25_000), ("train1", 25_000), ("test", 10_000)):
    e = envs[name]
    assert e.x.shape == (n, 2, 14, 14) and e.x.dtype == np.float32
    assert e.y.shape == e.color.shape == e.digit.shape == (n,)
    assert set(np.unique(e.y)) <= {0.0, 1.0} and set(np.unique(e.color)) <= {0, 1}
    assert e.x.min() >= 0.0 and e.x.max() <= 1.0


@pytest.mark.parametrize("name,flip", [("train0", 0.2), ("train1", 0.1), ("test", 0.9)])
def test_label_noise_and_colour_flip_rates(envs, name, flip):
  e = envs[name]
  n = len(e.y)
  clean = (e.digit < 5).astype(np.float32)
  assert within_binomial(np.sum(e.y != clean), n, 0.25)
  assert within_binomial(np.sum(e.color != e.y), n, flip)
  # and the colour predicts the *clean* label with the composed rate
  p_agree = 0.75 * (1 - flip) + 0.25 * flip
  assert within_binomial(np.sum(e.color == clean), n, p_agree)


def test_subsampling_and_channel_zeroing(mnist, envs):
  images, digits = mnist
  e = envs["test"]  # the test pool is the last 10,000 in file order: checkable pixel by pixel
  expected = images[50_000:, ::2, ::2].astype(np.float32) / 255.0
  idx = np.arange(len(e.y))
  np.testing.assert_allclose(e.x[idx, e.color], expected, rtol=0, atol=1e-7)
  assert np.all(e.x[idx, 1 - e.color] == 0.0)
  np.testing.assert_array_equal(e.digit, digits[50_000:])


def test_training_pool_is_a_permutation_of_the_first_50000(mnist, envs):
  images, digits = mnist
  tr = np.concatenate([envs["train0"].digit, envs["train1"].digit])
  np.testing.assert_array_equal(
    np.bincount(tr, minlength=10), np.bincount(digits[:50_000], minlength=10)
  )
  # each training image is a subsampled, coloured copy of some image of the pool
  e = envs["train0"]
  pool = images[:50_000, ::2, ::2].reshape(50_000, -1).astype(np.float32) / 255.0
  lookup = {row.tobytes(): i for i, row in enumerate(pool)}
  for i in range(20):
    key = e.x[i, e.color[i]].reshape(-1).tobytes()
    j = lookup[key]
    assert digits[j] == e.digit[i]
  # shuffled: not in file order
  assert not np.array_equal(e.digit[:100], digits[:200:2][:100])


def test_deterministic_given_seed(mnist):
  a = cm.colored_mnist(seed=5, mnist=mnist, with_variants=False)
  b = cm.colored_mnist(seed=5, mnist=mnist, with_variants=False)
  c = cm.colored_mnist(seed=6, mnist=mnist, with_variants=False)
  for name in a:
    for u, v in zip(a[name], b[name]):
      np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a["train0"].y, c["train0"].y)


def test_variants(mnist, envs):
  images, _ = mnist
  test, n = envs["test"], len(envs["test"].y)
  gray = images[50_000:, ::2, ::2].astype(np.float32)
  idx = np.arange(n)
  # same labels and colours everywhere
  for name in cm.VARIANTS:
    np.testing.assert_array_equal(envs[name].y, test.y)
    np.testing.assert_array_equal(envs[name].color, test.color)
  assert envs["color_digits"].x is test.x
  gd = envs["gray_digits"].x
  np.testing.assert_allclose(gd[:, 0], gray / 2 / 255, atol=1e-7)
  np.testing.assert_allclose(gd[:, 1], gray / 2 / 255, atol=1e-7)
  mean = gray.mean()
  gb, cb = envs["gray_blank"].x, envs["color_blank"].x
  np.testing.assert_allclose(gb, mean / 2 / 255, rtol=1e-5)
  np.testing.assert_allclose(cb[idx, test.color], mean / 255, rtol=1e-5)
  assert np.all(cb[idx, 1 - test.color] == 0.0)
  # the oracle's grayscale view of coloured and of grayscale digits is the same image
  np.testing.assert_allclose(cm.to_grayscale(test.x), cm.to_grayscale(gd), atol=1e-6)
  np.testing.assert_allclose(cm.to_grayscale(test.x), gray.reshape(n, -1) / 255, atol=1e-6)


def test_train_batch(envs):
  b = cm.train_batch(envs)
  assert b["x"].shape == (50_000, 392) and b["y"].shape == (50_000,)
  np.testing.assert_array_equal(np.bincount(b["env"]), [25_000, 25_000])
  # channel-major flattening, as input.view(n, 2*14*14)
  np.testing.assert_array_equal(b["x"][0], envs["train0"].x[0].reshape(-1))
  g = cm.train_batch(envs, grayscale=True)
  assert g["x"].shape == (50_000, 196)


def test_bad_inputs(tmp_path, mnist):
  with pytest.raises(FileNotFoundError, match="--data_dir"):  # a user error (gs_jax.base.errors)
    cm.load_mnist_train(str(tmp_path))
  with pytest.raises(ValueError, match="variant"):
    cm.variant(
      cm.colored_mnist(0, mnist=fake_mnist(60, 1))["test"], np.zeros((10, 14, 14)), "sepia"
    )
  bad = tmp_path / "mnist.npz"
  np.savez(bad, x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.zeros(10, np.uint8))
  with pytest.raises(ValueError, match="60000"):
    cm.load_mnist_train(str(tmp_path))


def test_subset_and_model_inputs(envs):
  small = cm.subset(envs, n_train=101, n_test=30)
  assert len(small["train0"].y) == len(small["train1"].y) == 50
  assert all(len(small[name].y) == 30 for name in ("test",) + cm.VARIANTS)
  np.testing.assert_array_equal(small["train1"].x, envs["train1"].x[:50])
  assert all(cm.subset(envs)[k] is envs[k] for k in envs)  # 0: everything, no copies
  batch, variants = cm.model_inputs(small)
  assert batch["x"].shape == (100, 392) and batch["test_x"].shape == (30, 392)
  np.testing.assert_array_equal(batch["test_y"], small["test"].y)
  np.testing.assert_array_equal(variants["gray_blank"][0], cm.flat_inputs(small["gray_blank"]))
  batch, variants = cm.model_inputs(small, grayscale=True)
  assert batch["test_x"].shape == (30, 196) and variants["color_blank"][0].shape == (30, 196)


def test_real_mnist_rates(mnist_dir):
  envs = cm.colored_mnist(seed=0, data_dir=mnist_dir, with_variants=False)
  e = envs["train1"]
  assert within_binomial(np.sum(e.color != e.y), len(e.y), 0.1)
  # the test pool is MNIST-train 50,000..59,999 in file order (the released code's split)
  images, digits = cm.load_mnist_train(mnist_dir)
  np.testing.assert_array_equal(envs["test"].digit, digits[50_000:])
  # MNIST digits ≥ 5 are ~49% of the data: P(y=1) = 0.75·P(d<5) + 0.25·P(d≥5) ≈ 0.5
  assert abs(envs["test"].y.mean() - 0.5) < 0.03


def test_colored_mnist_loader_names_the_file_and_the_problem(tmp_path):
  with pytest.raises(errors.MissingDataError, match="no MNIST file"):
    cm.load_mnist_train(str(tmp_path))
  for case, path in _malformed_npz(tmp_path, ("x_train", "y_train")).items():
    with pytest.raises(errors.BadFileError) as e:
      cm.load_mnist_train(str(path))
    assert str(path) in str(e.value), case
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.zeros(10, np.uint8))
  with pytest.raises(errors.BadFileError, match="60000") as e:
    cm.load_mnist_train(str(tmp_path))
  assert str(path) in str(e.value)

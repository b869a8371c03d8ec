"""gs_jax.data.dominoes (MNIST–CIFAR dominoes, docs/protocols.md §3.8): the builder on generated
arrays and on the offline copies, determinism, input checks and the contrast."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.data import cifar, dominoes

from tests._helpers import real_data


def _fake_sources(n_mnist=400, n_cifar=120, n_test_m=80, n_test_c=60, seed=0):
  """MNIST-like digits 0–9 and a two-class CIFAR whose pixels encode their own index, so that
  every image can be identified after pairing."""
  rng = np.random.default_rng(seed)

  def digits_of(n):
    y = rng.integers(0, 10, n)
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    x[:, 5:20, 10:18] = (100 + 15 * y)[:, None, None]  # the digit's "stroke"
    return x, y

  def cifar_of(n):
    y = np.repeat([0, 1], n // 2)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 0, 1] = np.arange(n) // 256
    return x, y.astype(np.int32)

  xm, ym = digits_of(n_mnist)
  xmt, ymt = digits_of(n_test_m)
  xc, yc = cifar_of(n_cifar)
  xct, yct = cifar_of(n_test_c)
  c2 = cifar.CifarData(xc, yc, xct, yct, np.arange(n_test_c) < 10, 2, "cifar2", "fake")
  return (xm, ym, xmt, ymt), c2


def _ids(d):
  """(MNIST id, CIFAR id) of every pair, read back from the pixels."""
  m = d.x[:, 2, 2, 0].astype(int) + 256 * d.x[:, 2, 3, 0].astype(int)  # padded by 2
  c = d.x[:, 32, 0, 0].astype(int) + 256 * d.x[:, 32, 0, 1].astype(int)
  return m, c


def _agreement_bound(n, sigmas=4.0):
  """|k/n − 1/2| for k ~ Binomial(n, 1/2) (a permutation's hypergeometric count varies less)
  exceeds sigmas·0.5/√n with probability < 1e-4 at 4σ."""
  return sigmas * 0.5 / np.sqrt(n)


def test_builder_shapes_pairing_and_holdout():
  mnist, c2 = _fake_sources()
  s = dominoes.build(3, mnist, c2, n_val=20)
  assert set(s) == {
    "train",
    "val",
    "val_mnist_random",
    "test",
    "test_mnist_random",
    "test_cifar_random",
  }
  n_per = min(np.sum(mnist[1] == 0), np.sum(mnist[1] == 1), 60) - 10  # 10 per class held out
  assert len(s["train"]) == 2 * min(n_per, 50)
  assert len(s["test"]) == 2 * min(np.sum(mnist[3] == 0), np.sum(mnist[3] == 1), 30)
  for name, d in s.items():
    assert d.x.shape == (len(d), 64, 32, 3) and d.x.dtype == np.uint8, name
    assert d.y.dtype == np.int32 and set(np.unique(d.y)) <= {0, 1}
    assert np.sum(d.y == 0) == np.sum(d.y == 1), name  # balanced
    # the MNIST half is the zero-padded digit in all three channels
    assert np.all(d.x[:, :2] == 0) and np.all(d.x[:, 30:32] == 0)
    assert np.all(d.x[:, :32, :, 0] == d.x[:, :32, :, 2])
  for name in ("train", "val", "test"):
    d = s[name]
    assert np.all(d.digit == np.asarray(dominoes.DIGITS)[d.y]), name  # intact: both halves
    assert np.all(d.cifar_class == d.y), name  # predict the label
  # the CIFAR half is the CIFAR image itself
  m_id, c_id = _ids(s["test"])
  np.testing.assert_array_equal(s["test"].x[:, 32:], c2.x_test[c_id])
  np.testing.assert_array_equal(s["test"].x[:, 2:30, 2:30, 0], mnist[2][m_id])
  np.testing.assert_array_equal(s["test"].cifar_lossless, c2.test_is_lossless[c_id])
  # validation pairs never reuse a training image; no image twice within a split
  tm, tc = _ids(s["train"])
  vm, vc = _ids(s["val"])
  assert not set(tm) & set(vm) and not set(tc) & set(vc)
  assert len(set(tm)) == len(tm) and len(set(tc)) == len(tc)
  # randomised variants: same images, the other half untouched
  for half, other in (("mnist", slice(32, 64)), ("cifar", slice(0, 32))):
    r = s[f"test_{half}_random"]
    np.testing.assert_array_equal(r.x[:, other], s["test"].x[:, other])
    np.testing.assert_array_equal(r.y, s["test"].y)
    key = slice(0, 32) if half == "mnist" else slice(32, 64)
    a = np.sort(s["test"].x[:, key].reshape(len(r), -1), axis=0)
    np.testing.assert_array_equal(np.sort(r.x[:, key].reshape(len(r), -1), axis=0), a)


def test_builder_is_deterministic_per_seed():
  mnist, c2 = _fake_sources()
  a, b, c = (dominoes.build(s, mnist, c2, n_val=10) for s in (5, 5, 6))
  for name in a:
    np.testing.assert_array_equal(a[name].x, b[name].x)
  assert not np.array_equal(a["train"].x, c["train"].x)


def test_builder_rejects_bad_input():
  mnist, c2 = _fake_sources()
  with pytest.raises(ValueError, match="even"):
    dominoes.build(0, mnist, c2, n_val=3)
  with pytest.raises(ValueError, match="two different"):
    dominoes.build(0, mnist, c2, digits=(1, 1))
  with pytest.raises(ValueError, match="exceeds"):
    dominoes.build(0, mnist, c2, n_val=2000)
  with pytest.raises(ValueError, match="mnist"):
    dominoes.randomise(dominoes.build(0, mnist, c2)["test"], "top", np.random.default_rng(0))
  with pytest.raises(ValueError, match="shape"):
    dominoes.to_float(np.zeros((2, 32, 32, 3), np.uint8), 1.0)


def test_contrast_scales_the_mnist_half_only():
  x = np.random.default_rng(0).integers(0, 256, (3, 64, 32, 3)).astype(np.uint8)
  f = {a: np.asarray(dominoes.to_float(x, a)) for a in (0.0, 0.25, 1.0)}
  for v in f.values():
    assert v.dtype == np.float32 and v.shape == x.shape
    assert v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_allclose(v[:, 32:], x[:, 32:] / 255.0, rtol=1e-6)  # CIFAR untouched
  np.testing.assert_allclose(f[1.0][:, :32], x[:, :32] / 255.0, rtol=1e-6)
  np.testing.assert_allclose(f[0.25][:, :32], 0.25 * x[:, :32] / 255.0, rtol=1e-6)
  assert np.all(f[0.0][:, :32] == 0.0)  # blank at a = 0
  g = np.asarray(dominoes.to_float(x, 0.0, background=0.5))
  assert np.all(g[:, :32] == 0.5)  # = the background
  # linear in a: the digit's differences from the background scale by a
  h = np.asarray(dominoes.to_float(x, 0.5, background=0.5))
  np.testing.assert_allclose(h[:, :32] - 0.5, 0.5 * (x[:, :32] / 255.0 - 0.5), atol=1e-6)
  # traceable: a as a traced scalar inside jit
  out = jax.jit(dominoes.to_float)(jnp.asarray(x), jnp.float32(0.25))
  np.testing.assert_allclose(np.asarray(out), f[0.25], rtol=1e-6)


def test_randomised_half_is_independent_of_the_label_real_data():
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  s, sources = dominoes.load(0, n_val=1000)
  assert sources["mnist"].startswith("$GS_DATA_DIR") and "cifar10" in sources["cifar"]
  test = s["test"]
  assert len(test) == 2 * 980 and test.x.shape == (1960, 64, 32, 3)  # MNIST has 980 zeros
  assert len(s["train"]) == 2 * 4500 and len(s["val"]) == 1000
  assert np.all(test.digit == test.y) and np.all(test.cifar_class == test.y)
  for name, agree in (
    ("test_mnist_random", lambda d: d.digit == d.y),
    ("test_cifar_random", lambda d: d.cifar_class == d.y),
    ("val_mnist_random", lambda d: d.digit == d.y),
  ):
    d = s[name]
    rate = float(np.mean(agree(d)))
    assert abs(rate - 0.5) < _agreement_bound(len(d)), (name, rate)
    for c in (0, 1):  # within each class too
      rc = float(np.mean(agree(d)[d.y == c]))
      assert abs(rc - 0.5) < _agreement_bound(np.sum(d.y == c)), (name, c, rc)

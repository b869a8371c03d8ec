"""gs_jax.data.cifar: CIFAR-2/10/100 from a Keras-layout npz (fake arrays) and through tfds (mock
data), class selection, augmentation, epoch permutations, head(), loader errors naming the file,
and the npz path never importing TensorFlow; the real airplane/horse selection via GS_DATA_DIR."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.base import errors
from gs_jax.data import cifar

from tests._helpers import (
  fake_cifar10 as _fake_cifar10,
  malformed_npz as _malformed_npz,
  MISSING_DATA_DIR as MISSING,
  REPO,
)


def test_cifar_loader_names_the_file_and_the_problem(tmp_path):
  with pytest.raises(errors.MissingDataError) as e:
    cifar.load("cifar10", MISSING)
  assert MISSING in str(e.value)
  for case, path in _malformed_npz(tmp_path, ("x_train", "y_train", "x_test", "y_test")).items():
    with pytest.raises(errors.BadFileError) as e:
      cifar.load("cifar10", str(path))
    assert str(path) in str(e.value), case
  x = np.zeros((4, 32, 32, 3), np.uint8)
  path = tmp_path / "shape.npz"
  np.savez(path, x_train=x[..., :1], y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int))
  with pytest.raises(errors.BadFileError, match=r"shape.npz: x_train must have shape"):
    cifar.load("cifar10", str(path))
  np.savez(path, x_train=x, y_train=np.full(4, 0.5), x_test=x, y_test=np.zeros(4, int))
  with pytest.raises(errors.BadFileError, match=r"shape.npz: y_train must be integer"):
    cifar.load("cifar10", str(path))


def test_cifar2_selects_cat_and_dog_from_a_keras_npz(tmp_path):
  a = _fake_cifar10(tmp_path / "cifar10.npz")
  d = cifar.load("cifar2", str(tmp_path))  # a folder holding cifar10.npz
  for split in ("train", "test"):
    y10 = a[f"y_{split}"]
    keep = np.flatnonzero((y10 == 3) | (y10 == 5))
    x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
    np.testing.assert_array_equal(x[:, 0, 0, 0], keep)  # the right images, in order
    np.testing.assert_array_equal(y, (y10[keep] == 5).astype(np.int32))  # cat→0, dog→1
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and y.dtype == np.int32
  keep_test = np.flatnonzero((a["y_test"] == 3) | (a["y_test"] == 5))
  np.testing.assert_array_equal(d.test_is_lossless, a["test_is_lossless"][keep_test])
  assert d.num_classes == 2 and set(np.unique(d.y_train)) == {0, 1}
  d10 = cifar.load("cifar10", str(tmp_path / "cifar10.npz"))
  assert d10.x_train.shape == (60, 32, 32, 3) and d10.num_classes == 10


def test_already_binary_cifar2_npz_is_taken_as_is(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
  y = rng.integers(0, 2, 20).astype(np.uint8)
  np.savez(tmp_path / "cifar2.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
  d = cifar.load("cifar2", str(tmp_path))
  np.testing.assert_array_equal(d.y_train, y)
  assert d.test_is_lossless.all() and d.test_is_lossless.shape == (8,)
  # labels 3/5 in an already-restricted file are mapped to 0/1
  np.savez(
    tmp_path / "c35.npz",
    x_train=x,
    y_train=np.where(y == 1, 5, 3),
    x_test=x[:8],
    y_test=np.where(y[:8] == 1, 5, 3),
  )
  np.testing.assert_array_equal(cifar.load("cifar2", str(tmp_path / "c35.npz")).y_train, y)


def test_loader_errors(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    cifar.load("cifar10", str(tmp_path / "nope.npz"))
  msg = str(e.value)
  assert "tensorflow_datasets" in msg and "--data_dir" in msg and "cifar10.npz" in msg
  with pytest.raises(FileNotFoundError, match="no cifar100.npz in folder"):
    cifar.load("cifar100", str(tmp_path))
  with pytest.raises(ValueError, match="dataset must be one of"):
    cifar.load("mnist", str(tmp_path))
  x = np.zeros((4, 32, 32, 3), np.uint8)
  np.savez(
    tmp_path / "bad_dtype.npz",
    x_train=x.astype(np.float32),
    y_train=np.zeros(4, int),
    x_test=x,
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match="x_train must be uint8"):
    cifar.load("cifar10", str(tmp_path / "bad_dtype.npz"))
  np.savez(
    tmp_path / "bad_shape.npz",
    x_train=x,
    y_train=np.zeros(3, int),
    x_test=x,
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match=r"y_train must have shape \(4,\)"):
    cifar.load("cifar10", str(tmp_path / "bad_shape.npz"))
  np.savez(
    tmp_path / "bad_label.npz",
    x_train=x,
    y_train=np.array([0, 1, 12, 3]),
    x_test=x,
    y_test=np.zeros(4, int),
  )
  with pytest.raises(ValueError, match=r"got values \[12\]"):
    cifar.load("cifar10", str(tmp_path / "bad_label.npz"))
  np.savez(tmp_path / "no_keys.npz", images=x)
  with pytest.raises(ValueError, match="lacks keys"):
    cifar.load("cifar10", str(tmp_path / "no_keys.npz"))


@pytest.mark.heavy  # imports TensorFlow (~10 s)
def test_tfds_path_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    d100 = cifar.load("cifar100")
  with tfds.testing.mock_data(num_examples=40):
    d10 = cifar.load("cifar10")
  with tfds.testing.mock_data(num_examples=40):  # same deterministic mock stream
    d2 = cifar.load("cifar2")
  assert d100.source == "tfds:cifar100" and d100.num_classes == 100
  assert d100.x_train.shape == (40, 32, 32, 3) and d100.x_train.dtype == np.uint8
  assert d100.y_train.min() >= 0 and d100.y_train.max() < 100
  x2, y2, _ = cifar.select_cifar2(d10.x_train, d10.y_train)
  assert len(y2) > 0
  np.testing.assert_array_equal(d2.x_train, x2)
  np.testing.assert_array_equal(d2.y_train, y2)


def test_augment_keeps_dtype_range_and_is_a_crop_or_flip():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(1, 256, (6, 32, 32, 3), dtype=np.uint8))
  out = cifar.augment(jax.random.PRNGKey(3), x)
  assert out.dtype == jnp.uint8 and out.shape == x.shape
  f = cifar.to_float(out)
  assert f.dtype == jnp.float32 and float(f.min()) >= 0 and float(f.max()) <= 1
  padded = np.pad(np.asarray(x), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for i in range(6):  # brute force over the 81 offsets × 2 flips
    cands = [padded[i, a : a + 32, b : b + 32] for a in range(9) for b in range(9)]
    cands += [c[:, ::-1] for c in cands]
    assert any(np.array_equal(np.asarray(out[i]), c) for c in cands)
  outs = cifar.augment(jax.random.PRNGKey(4), jnp.repeat(x[:1], 64, 0))
  assert len({np.asarray(o).tobytes() for o in outs}) > 10  # it does randomise


def test_epoch_permutation():
  key = jax.random.PRNGKey(0)
  idx = cifar.epoch_permutation(key, 2, 103, 10)
  assert idx.shape == (10, 10) and len(np.unique(idx)) == 100 and int(idx.max()) < 103
  np.testing.assert_array_equal(idx, cifar.epoch_permutation(key, 2, 103, 10))
  assert not np.array_equal(idx, cifar.epoch_permutation(key, 3, 103, 10))
  with pytest.raises(ValueError, match="exceeds"):
    cifar.epoch_permutation(key, 0, 5, 10)


def test_head_keeps_the_first_images():
  d = cifar.CifarData(
    np.zeros((10, 32, 32, 3), np.uint8),
    np.arange(10, dtype=np.int32),
    np.zeros((6, 32, 32, 3), np.uint8),
    np.arange(6, dtype=np.int32),
    np.arange(6) < 3,
    10,
    "cifar10",
    "test",
  )
  h = cifar.head(d, 4, 0)
  np.testing.assert_array_equal(h.y_train, np.arange(4))
  assert len(h.x_train) == 4 and len(h.y_test) == 6 and h.test_is_lossless.sum() == 3
  h = cifar.head(d, 0, 2)
  assert len(h.y_train) == 10 and len(h.x_test) == 2 and h.test_is_lossless.shape == (2,)


def test_npz_path_never_imports_tensorflow(tmp_path):
  _fake_cifar10(tmp_path / "cifar10.npz")
  code = (
    "import sys; from gs_jax.data import cifar; from experiments import cifar as e; "
    f"d = cifar.load('cifar2', {str(tmp_path)!r}); "
    "assert not any(m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'orbax') "
    "for m in sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:5]; "
    "print(len(d.x_train))"
  )
  r = subprocess.run(
    [sys.executable, "-c", code],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={**os.environ, "PYTHONPATH": REPO},
    timeout=300,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  assert r.stdout.strip() == "12"  # 60 images with labels i % 10: 6 cats + 6 dogs


def test_tfds_load_reaches_the_data_check(tmp_path):
  """The default path without mocks: ``tfds.load`` on an empty data dir with downloads off must
  fail only because the data are missing (mock_data above patches tfds.load away, so it cannot
  catch a missing runtime dependency such as importlib_resources, which tfds 4.9 needs)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  with pytest.raises(AssertionError, match="could not find data"):
    tfds.load("cifar10", data_dir=str(tmp_path), download=False)


def test_real_airplane_horse_selection(cifar10_npz):
  d = cifar.load("cifar2", cifar10_npz, "airplane,horse")
  raw = np.load(cifar10_npz)
  assert len(d.x_train) == 10000 and len(d.x_test) == 2000
  keep = np.isin(raw["y_test"].reshape(-1), (0, 7))
  np.testing.assert_array_equal(d.x_test, raw["x_test"][keep])
  np.testing.assert_array_equal(d.y_test, (raw["y_test"].reshape(-1)[keep] == 7).astype(int))

import os

import pytest

# Tests run on CPU with float32 unless a test enables x64 locally (the x64 fixture).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests._helpers import real_data  # noqa: E402  (after the environment above)


@pytest.fixture
def mnist_dir():
  """Folder with the offline mnist.npz."""
  real_data("mnist", "mnist.npz")
  return real_data("mnist")


@pytest.fixture
def cifar10_npz():
  """The offline cifar10.npz."""
  return real_data("cifar10", "cifar10.npz")


@pytest.fixture
def x64():
  """64-bit JAX for the test's duration (a scope: the global flag is restored afterwards)."""
  from gs_jax.base._compat import enable_x64

  with enable_x64():
    yield


@pytest.fixture(scope="module")
def celeba_official_dir(tmp_path_factory):
  """A small official-layout CelebA folder (tests/_helpers.py: make_official_layout), one per
  test module."""
  from tests._helpers import make_official_layout

  root = tmp_path_factory.mktemp("celeba") / "celeba"
  make_official_layout(str(root), n_per_split=(24, 8, 8))
  return str(root)

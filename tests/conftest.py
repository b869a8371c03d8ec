import os

import pytest

# Tests run on CPU with float32 unless a test enables x64 locally.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_HOW = ("set GS_DATA_DIR to a folder holding mnist/mnist.npz and cifar10/cifar10.npz "
        "(`make test` sets it to ../shared/data when that folder exists; docs/protocols.md §5)")


def real_data(*parts: str) -> str:
  """Path of an offline data copy under $GS_DATA_DIR, or skip the test saying how to enable it."""
  root = os.environ.get("GS_DATA_DIR")
  if not root:
    pytest.skip(f"real-data test: GS_DATA_DIR is not set; {_HOW}")
  path = os.path.join(root, *parts)
  if not os.path.exists(path):
    pytest.skip(f"real-data test: {path} does not exist; {_HOW}")
  return path


@pytest.fixture
def mnist_dir():
  """Folder with the offline mnist.npz."""
  real_data("mnist", "mnist.npz")
  return real_data("mnist")


@pytest.fixture
def cifar10_npz():
  """The offline cifar10.npz."""
  return real_data("cifar10", "cifar10.npz")

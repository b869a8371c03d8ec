import os

import pytest

# Tests run on CPU with float32 unless a test enables x64 locally.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_HOW = (
  "set GS_DATA_DIR to a folder holding mnist/mnist.npz and cifar10/cifar10.npz "
  "(`make test` sets it to ../shared/data when that folder exists; docs/protocols.md §5)"
)


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


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `python -m experiments.<name> ARGS` with a hard kill (no cleanup, like SIGKILL, exit code 3)
# once `step` training steps are done; the hook is the only difference from the plain command.
_KILLED = """
import importlib, os, sys
from gs_jax import training as train
fit = train.fit_minibatch
def killed(*args, **kwargs):
  def hook(step, metrics):
    if step >= {step}:
      os._exit(3)
  return fit(*args, on_chunk=hook, **kwargs)
train.fit_minibatch = killed
importlib.import_module("experiments.{name}").main(sys.argv[1:])
"""


def run_experiment(name: str, args, *, kill_after_step: int | None = None, timeout: int = 600):
  """Runs experiment ``name`` in a fresh CPU process from the repository root (optionally
  killed after ``kill_after_step`` steps); returns the ``subprocess.CompletedProcess``."""
  import subprocess
  import sys

  if kill_after_step is None:
    cmd = ["-m", f"experiments.{name}", *args]
  else:
    cmd = ["-c", _KILLED.format(step=kill_after_step, name=name), *args]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run(
    [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
  )

"""Helpers shared by the test modules (imported by tests/conftest.py, which turns the ones that
need pytest's machinery into fixtures): the offline data copies, the kill hook that runs an
experiment and kills it mid-way, fake datasets and small shared problems.

Test modules import from here (``from tests._helpers import fake_mnist``), never from each
other. Heavy imports (JAX, PIL) stay inside the functions, so that importing this module, as
conftest does at collection, loads neither.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ----------------------------------------------------------------------------- offline data

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


# ----------------------------------------------------------------------------- the kill hook

# `python -m experiments.<name> ARGS` with a hard kill (no cleanup, like SIGKILL, exit code 3)
# once `step` training steps are done; the hook is the only difference from the plain command.
# The experiment's own chunk callback, when it passes one, still runs before the kill.
_KILLED = """
import dataclasses, importlib, os, sys
from gs_jax import training as train
fit = train.fit_minibatch
def killed(*args, callbacks=train.Callbacks(), **kwargs):
  def hook(step, metrics):
    if callbacks.on_chunk is not None:
      callbacks.on_chunk(step, metrics)
    if step >= {step}:
      os._exit(3)
  return fit(*args, callbacks=dataclasses.replace(callbacks, on_chunk=hook), **kwargs)
train.fit_minibatch = killed
importlib.import_module("experiments.{name}").main(sys.argv[1:])
"""


def run_experiment(name: str, args, *, kill_after_step: int | None = None, timeout: int = 600):
  """Runs experiment ``name`` in a fresh CPU process from the repository root (optionally
  killed after ``kill_after_step`` steps); returns the ``subprocess.CompletedProcess``."""
  if kill_after_step is None:
    cmd = ["-m", f"experiments.{name}", *args]
  else:
    cmd = ["-c", _KILLED.format(step=kill_after_step, name=name), *args]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run(
    [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
  )


# ----------------------------------------------------------------------------- fake datasets


def fake_mnist(n=60_000, seed=0):
  """MNIST-shaped random digits: each image is a distinct random pattern."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  digits = rng.integers(0, 10, size=n)
  return images, digits


def fake_cifar10(path, n_train=60, n_test=40, seed=0, lossless=True):
  """Writes a Keras-layout cifar10.npz of random images to ``path``; returns its arrays. Image
  i of each split carries i in its first pixel, so selections can be checked pixel-exactly."""
  rng = np.random.default_rng(seed)
  arrays = {
    "x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
    "y_train": np.arange(n_train, dtype=np.uint8) % 10,
    "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
    "y_test": (np.arange(n_test, dtype=np.uint8) * 7) % 10,
  }
  # Mark each image with its own index so selections can be checked pixel-exactly.
  arrays["x_train"][:, 0, 0, 0] = np.arange(n_train)
  arrays["x_test"][:, 0, 0, 0] = np.arange(n_test)
  if lossless:
    arrays["test_is_lossless"] = np.arange(n_test) < n_test // 2
  np.savez(path, **arrays)
  return arrays


# Attributes in a different order from the official file and with extra columns, so a loader
# that used column numbers instead of names would read the wrong ones.
FIXTURE_ATTRS = ("Smiling", "Male", "Wavy_Hair", "Blond_Hair")


def make_official_layout(root, n_per_split=(24, 8, 8), seed=0, size=(178, 218)):
  """Writes an official-layout CelebA fixture: ``img_align_celeba/*.jpg`` (size = (w, h)),
  ``list_attr_celeba.txt`` (±1, two-space padding, CRLF) and ``list_eval_partition.txt``
  (CRLF). Every group occurs in every split. Returns ``(files, y, a, partition)``."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
  files, ys, as_, part = [], [], [], []
  k = 0
  for split, n in enumerate(n_per_split):
    g = np.arange(n) % 4
    for gi in g:
      k += 1
      f = f"{k:06d}.jpg"
      y, a = int(gi) // 2, int(gi) % 2
      # blond = bright top half, male = dark bottom half: learnable, and a spurious cue
      img = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
      img[: size[1] // 2] += np.uint8(100 * y)
      img[size[1] // 2 :] -= np.uint8(50 * a)
      Image.fromarray(img).save(os.path.join(root, "img_align_celeba", f), quality=90)
      files.append(f)
      ys.append(y)
      as_.append(a)
      part.append(split)
  with open(os.path.join(root, "list_attr_celeba.txt"), "w", newline="") as fh:
    fh.write(f"{len(files)}\r\n" + " ".join(FIXTURE_ATTRS) + " \r\n")
    for f, y, a in zip(files, ys, as_):
      vals = {
        "Smiling": rng.choice([-1, 1]),
        "Male": 2 * a - 1,
        "Wavy_Hair": 1,
        "Blond_Hair": 2 * y - 1,
      }
      fh.write(f + "".join(f" {vals[n]:2d}" for n in FIXTURE_ATTRS) + "\r\n")
  with open(os.path.join(root, "list_eval_partition.txt"), "w", newline="") as fh:
    for f, p in zip(files, part):
      fh.write(f"{f} {p}\r\n")
  return files, np.array(ys), np.array(as_), np.array(part)


# ----------------------------------------------------------------------------- tiny runs

# A tiny CIFAR-10 run of experiments.cifar (cpu preset, SD, 3 epochs on 64 fake images).
CIFAR_TINY = [
  "--dataset=cifar10",
  "--preset=cpu",
  "--sd_lambda=0.01",
  "--seed=1",
  "--epochs=3",
  "--batch_size=16",
  "--chunk=3",
  "--margin_n=8",
  "--margin_bisection=3",
  "--eval_batch=16",
  "--no_progress",
  "--test_limit=24",
]

# A tiny LfF run of experiments.celeba on the make_official_layout fixture.
CELEBA_TINY = [
  "--preset=cpu",
  "--method=lff",
  "--epochs=3",
  "--batch_size=16",
  "--chunk=2",
  "--image_size=32",
  "--eval_batch=16",
  "--no_progress",
]


def tiny_narlenet_problem(n=24):
  """``(net, tx, state, data)``: the released CIFAR-2 NarLeNet, SGD with momentum, its initial
  state and ``n`` random uint8 images with binary labels."""
  import jax
  import jax.numpy as jnp
  import optax

  from gs_jax import training as train
  from gs_jax.nn import models

  rng = np.random.default_rng(0)
  data = {
    "x": jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
    "y": jnp.asarray(rng.integers(0, 2, n).astype(np.int32)),
  }
  net = models.NarLeNet(2)
  tx = optax.sgd(1e-3, momentum=0.9)
  state = train.init_state(net, tx, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  return net, tx, state, data


def two_moons_batches(seeds, n=64):
  """``{"x", "y"}``: one two-moons set per seed (noise 0.1, ``n`` points), stacked, as JAX arrays."""
  import jax.numpy as jnp

  from gs_jax.data import toy

  d = toy.two_moons_seeds(seeds, 0.1, n_samples=n)
  return {k: jnp.asarray(v) for k, v in d.items()}


# ----------------------------------------------------------------------------- bad data files

MISSING_DATA_DIR = "/nonexistent/gs_jax_test_data"


def malformed_npz(tmp_path, keys):
  """``{case: path}``: files that are no valid npz with ``keys``, each of another kind."""
  good = tmp_path / "good.npz"
  np.savez(good, **{k: np.zeros(2) for k in keys})
  data = good.read_bytes()
  cases = {"text": b"not an npz", "empty": b"", "truncated": data[: len(data) // 2]}
  out = {}
  for case, content in cases.items():
    out[case] = tmp_path / f"{case}.npz"
    out[case].write_bytes(content)
  out["npy"] = tmp_path / "npy.npz"
  with open(out["npy"], "wb") as f:
    np.save(f, np.zeros(3))
  out["object"] = tmp_path / "object.npz"
  np.savez(out["object"], **{k: np.array([{}], dtype=object) for k in keys})
  out["keys"] = tmp_path / "keys.npz"
  np.savez(out["keys"], images=np.zeros(2))
  return out


# ----------------------------------------------------------------------------- multi-process jobs

# The survivor's bound: heartbeat timeout + one heartbeat interval + process scheduling slack.
DIST_TIMEOUT_S = 4
DIST_EXIT_BOUND_S = DIST_TIMEOUT_S + 1 + 10


def finish_processes(procs, timeout=240):
  """Waits for every process (SIGKILL after ``timeout``: the runtime ignores SIGTERM); returns
  ``[(returncode, output)]``."""
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      p.kill()
      out, _ = p.communicate()
    outs.append((p.returncode, out))
  return outs

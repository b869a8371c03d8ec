"""gs_jax._compat: each version-dependent branch, on the stack that runs it.

The suite runs on two stacks (README, "Stacks"): the oldest (jax 0.5.3) takes the
private-API branches, the newest (jax 0.10) the public ones; every test here asserts which
branch this stack took, so the pair of CI runs covers both. The multi-process behaviour behind
:func:`distributed_initialize` (heartbeat deadline, survivors stopping) is tested with real
processes in tests/base/test_distributed.py and tests/experiments/test_distributed.py on both
stacks.
"""

import inspect
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import _compat

from tests._helpers import REPO


def test_version_flags_match_the_installed_jax():
  assert _compat.JAX_VERSION == tuple(jax.__version_info__)
  assert _compat.HAS_LEGACY_CPU_RUNTIME == (jax.__version_info__ < (0, 6))
  public = "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters
  assert _compat.PUBLIC_HEARTBEAT == public
  if jax.__version_info__ >= (0, 10):  # the newest stack tested takes the public branch
    assert _compat.PUBLIC_HEARTBEAT
  if jax.__version_info__ < (0, 6):  # the oldest takes the private one
    assert not _compat.PUBLIC_HEARTBEAT


def test_is_tracer_inside_and_outside_transforms():
  seen = []

  def f(x):
    seen.append(_compat.is_tracer(x))
    return x * 2

  jax.jit(f)(jnp.ones(2))
  jax.grad(lambda x: f(x).sum())(jnp.ones(2))
  jax.vmap(f)(jnp.ones(2))
  assert seen == [True, True, True]
  assert not _compat.is_tracer(jnp.ones(2)) and not _compat.is_tracer(np.ones(2))


def test_enable_x64_is_a_scope():
  before = jnp.zeros(1).dtype
  with _compat.enable_x64():
    assert jnp.zeros(1).dtype == jnp.float64
    assert (jnp.ones(1, jnp.float64) + 1e-12).dtype == jnp.float64
  assert jnp.zeros(1).dtype == before


def test_distributed_state_without_jax_distributed():
  state = _compat.distributed_state()
  assert state == _compat.DistributedState(False, 0, 1, None)


_BACKENDS = """
from gs_jax.base import _compat
assert _compat.backends_started() is False
import jax.numpy as jnp
float(jnp.ones(2).sum())
assert _compat.backends_started() is True
print("ok")
"""


def test_backends_started_before_and_after_the_first_computation():
  out = subprocess.run(
    [sys.executable, "-c", _BACKENDS], capture_output=True, text=True, timeout=300, cwd=REPO
  )
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_detected_cluster_is_none_on_a_plain_machine(monkeypatch):
  for var in list(os.environ):
    if var.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "JAX_COORDINATOR", "KUBERNETES_")):
      monkeypatch.delenv(var)
  assert _compat.detected_cluster() is None


def test_no_private_jax_outside_the_compat_module():
  """The rule of issue 18: ``jax._src``, ``jax.interpreters`` and ``jax.core.`` appear in
  gs_jax only in _compat.py."""
  import re

  pattern = re.compile(r"jax\._src|jax\.interpreters|jax\.core\.")
  offenders = []
  root = os.path.join(REPO, "gs_jax")
  for dirpath, _, files in os.walk(root):
    for name in files:
      path = os.path.join(dirpath, name)
      if not name.endswith(".py") or os.path.samefile(path, _compat.__file__):
        continue
      with open(path, encoding="utf-8") as fh:
        offenders += [
          f"{os.path.relpath(path, REPO)}:{i}"
          for i, line in enumerate(fh, 1)
          if pattern.search(line)
        ]
  assert not offenders, offenders

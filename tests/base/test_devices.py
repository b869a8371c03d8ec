"""gs_jax.base.devices, in fresh processes: the CPU runtime switch before the backend starts, and
--cpu_cores pinning by index into the allowed cores."""

import os

from tests._helpers import REPO


_RUNTIME = """
import os, warnings
from gs_jax.base import _compat, devices
with warnings.catch_warnings(record=True) as w:
  warnings.simplefilter("always")
  got = devices.use_cpu_runtime("legacy")
if _compat.HAS_LEGACY_CPU_RUNTIME:
  assert got == "legacy"
  assert "--xla_cpu_use_thunk_runtime=false" in os.environ["XLA_FLAGS"].split()
else:   # jax >= 0.6: no legacy runtime; the default stays, with a warning naming why
  assert got == "thunk", got
  assert any("needs jax < 0.6" in str(x.message) for x in w)
  assert "thunk_runtime" not in os.environ.get("XLA_FLAGS", "")
import jax, jax.numpy as jnp
assert float(jnp.ones(3).sum()) == 3.0          # the backend starts with the flag
with warnings.catch_warnings(record=True) as w:
  warnings.simplefilter("always")
  assert devices.use_cpu_runtime("thunk" if got == "legacy" else "legacy") == got  # too late
assert any("already run" in str(x.message) for x in w)
try:
  devices.use_cpu_runtime("fast")
except ValueError as e:
  assert "cpu_runtime" in str(e)
else:
  raise AssertionError("no error for an unknown runtime")
print("ok")
"""


_FASTEST = """
import os
from gs_jax.base import _compat, devices
got = devices.use_cpu_runtime("fastest")
assert got == ("legacy" if _compat.HAS_LEGACY_CPU_RUNTIME else "thunk"), got
flags = os.environ["XLA_FLAGS"].split()
assert "--xla_cpu_copy_insertion_use_region_analysis=true" in flags, flags
assert ("--xla_cpu_use_thunk_runtime=false" in flags) == (got == "legacy"), flags
assert devices.use_cpu_runtime("fastest") == got and os.environ["XLA_FLAGS"].split() == flags
import jax, jax.numpy as jnp
# A loop that reads its carried array before updating it (the copy the flag removes): exact.
def body(c):
  w, i = c
  return w + jnp.sum(w) * 1e-3, i + 1
w, _ = jax.jit(lambda w: jax.lax.while_loop(lambda c: c[1] < 5, body, (w, 0)))(jnp.arange(4.0))
ref = jnp.arange(4.0)
for _ in range(5):
  ref = ref + jnp.sum(ref) * 1e-3
assert jnp.allclose(w, ref, rtol=1e-6), (w, ref)
print("ok")
"""


_DOTS = """
import os
from gs_jax.base import _compat, devices
flags0 = os.environ.get("XLA_FLAGS", "")
assert devices.use_cpu_dots("xla") == ("xla" if _compat.HAS_YNN_DOTS else "eigen")
got = devices.use_cpu_dots("eigen")
assert got == "eigen"
flag = "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"
# jax < 0.10 neither has YNNPACK dots nor knows the flag (an unknown flag aborts): left alone
assert (flag in os.environ.get("XLA_FLAGS", "").split()) == _compat.HAS_YNN_DOTS
if not _compat.HAS_YNN_DOTS:
  assert os.environ.get("XLA_FLAGS", "") == flags0
try:
  devices.use_cpu_dots("mkl")
except ValueError as e:
  assert "cpu_dots" in str(e)
else:
  raise AssertionError("no error for an unknown dot library")
import jax, jax.numpy as jnp, numpy as np
a = np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32)
np.testing.assert_allclose(jax.jit(lambda a: a.T @ a)(a), a.T @ a, rtol=1e-4, atol=1e-4)
print("ok")
"""


_CORES = """
import os
from gs_jax.base import devices
allowed = sorted(os.sched_getaffinity(0))
assert devices.use_cpu_cores("") == allowed            # empty: affinity left alone
assert devices.use_cpu_cores("0") == [allowed[0]]
assert sorted(os.sched_getaffinity(0)) == [allowed[0]]
for bad, words in ((str(len(allowed)), "out of range"), ("a,b", "comma-separated")):
  try:
    devices.use_cpu_cores(bad)
  except ValueError as e:
    assert words in str(e), e
  else:
    raise AssertionError(f"no error for cpu_cores={bad!r}")
import jax.numpy as jnp
assert float(jnp.ones(3).sum()) == 3.0
print("ok")
"""


def _assert_ok_in_fresh_process(script: str, *, keep_xla_flags: bool = False) -> None:
  """Runs ``script`` in a fresh Python (process-wide settings: XLA flags, pinning), by default
  without the caller's ``XLA_FLAGS``, and checks it printed ``ok``."""
  import subprocess
  import sys

  env = {k: v for k, v in os.environ.items() if keep_xla_flags or k != "XLA_FLAGS"}
  out = subprocess.run(
    [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
  )
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_cpu_runtime_switch_before_the_backend_starts():
  _assert_ok_in_fresh_process(_RUNTIME)


def test_fastest_runtime_adds_region_copy_insertion_on_every_stack():
  """``fastest``: legacy where it exists, else thunk, and the region-analysis copy insertion
  flag on both (a backend starts with it and computes a loop exactly)."""
  _assert_ok_in_fresh_process(_FASTEST)


def test_cpu_dots_eigen_sets_the_flag_only_where_jax_has_ynnpack_dots():
  _assert_ok_in_fresh_process(_DOTS)


def test_cpu_cores_pins_the_process_by_index_into_its_allowed_cores():
  """In a subprocess (pinning is process-wide): index 0 of the allowed cores; clear errors
  for the first index past them (any core count) and for a malformed spec."""
  _assert_ok_in_fresh_process(_CORES, keep_xla_flags=True)

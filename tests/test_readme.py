"""README.md's Python examples run as written: every fenced ```python block (the library in five
minutes, …) is executed as a script in a fresh process, from an empty working directory, with
the repository on the path (as for a user who installed the package). Marked ``integration``: the
five-minute example trains a network end to end (~20 s on 2 loaded cores), so make test runs it
and make test-unit leaves it out."""

import os
import re
import subprocess
import sys

import pytest

from tests._helpers import REPO

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  return [m.group(1) for m in _BLOCK.finditer(text)]


def test_readme_has_python_examples():
  assert _blocks(), "README.md has no ```python block (the library in five minutes)"


@pytest.mark.integration
@pytest.mark.parametrize("i", range(len(_blocks())))
def test_readme_python_block_runs(i, tmp_path):
  code = _blocks()[i]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run(
    [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
  )
  assert r.returncode == 0, f"README block {i} failed:\n{code}\n{r.stderr[-3000:]}"

"""Executes analysis/notebooks/theorem2.ipynb (nbclient, python3 kernel) so it cannot rot."""

import os
import pathlib

import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.notebook  # starts a Jupyter kernel (`make test-unit` leaves it out)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_theorem2_notebook_runs():
  path = ROOT / "analysis" / "notebooks" / "theorem2.ipynb"
  nb = nbformat.read(path, as_version=4)
  os.environ.setdefault("MPLBACKEND", "Agg")
  # cwd = repo root, so the kernel imports this checkout's gs_jax.
  client = nbclient.NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
  )
  client.execute()
  outputs = "".join(
    o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
  )
  assert "relative error over all" in outputs
  rel = float(outputs.split("relative error over all")[1].split(":")[1].split()[0])
  assert rel < 0.05, rel  # trained width-512 net vs dual prediction
  # Some pair of the top-5 features starves (a negative entry of dz_j*/d(s_i²)) ...
  assert "strongest starvation among the top 5" in outputs
  assert float(outputs.split("strongest starvation")[1].split("= ")[1].split()[0]) < 0
  # ... and none survives spectral decoupling.
  assert float(outputs.split("max |off-diagonal| under SD:")[1].split()[0]) < 1e-10
  assert float(outputs.split("final |z(t) - z*| =")[1].split()[0]) < 1e-6

"""experiments.cifar_features end to end on a tiny CIFAR-2 slice: a killed run resumes to the
numbers of an uninterrupted one, and the coupled arms (subprocesses)."""

import json
import os

import numpy as np
import pytest

from analysis import cifar_features_figures

from tests._helpers import real_data, run_experiment


TINY = [
  "--train_limit=24",
  "--epochs=2",
  "--seeds=1",
  "--k=3",
  "--k_spectrum=4",
  "--n_images=2",
  "--response_every=4",
  "--chunk=8",
  "--feature_passes=3",
  "--feature_batch=12",
  "--no_progress",
]


def _run(args, kill_after=None):
  """The experiment in a fresh process (killed after ``kill_after`` training steps: the kill
  hook of tests/_helpers.py, which keeps the experiment's own chunk callback)."""
  return run_experiment("cifar_features", args, kill_after_step=kill_after, timeout=900)


def _z_lines(out_dir):
  z = {}
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if r["kind"] == "z":
        z[(r["arm"], r["step"])] = r["z"]  # a redone step keeps its last line
  return z


@pytest.mark.integration
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_responses(tmp_path):
  """1.4–5 minutes on 2 shared cores (three subprocesses compile the batch-1 scan)."""
  real_data("cifar10", "cifar10.npz")
  whole = _run(TINY + [f"--out_dir={tmp_path / 'whole'}"])
  assert whole.returncode == 0, whole.stderr[-3000:]
  killed = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"], kill_after=32)  # ERM, in epoch 2
  assert killed.returncode == 3, killed.stderr[-3000:]
  again = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"])
  assert again.returncode == 0, again.stderr[-3000:]
  a = json.load(open(tmp_path / "whole" / "results.json"))
  b = json.load(open(tmp_path / "resumed" / "results.json"))
  for key in ("erm_s0", "sd_s0"):
    np.testing.assert_array_equal(a["per_seed"][key]["z_final"], b["per_seed"][key]["z_final"])
    assert a["per_seed"][key]["train_acc"] == b["per_seed"][key]["train_acc"]
  za, zb = _z_lines(tmp_path / "whole"), _z_lines(tmp_path / "resumed")
  assert set(za) == set(zb) and len(za) == 2 * 12  # 48 steps / 4, both arms
  for k in za:
    np.testing.assert_array_equal(za[k], zb[k])
  # the z recorded at the last step is the final response computed outside the loop
  np.testing.assert_allclose(
    za[("sd", 48)], a["per_seed"]["sd_s0"]["z_final"], rtol=1e-4, atol=1e-5
  )
  for name in ("spectrum", "features", "responses", "final"):
    assert (tmp_path / "whole" / f"{name}.png").exists()
  assert "eq-18" in cifar_features_figures.report(tmp_path / "whole")


@pytest.mark.integration
def test_coupled_arms_end_to_end(tmp_path):
  """CI-sized (~1.5 min on 2 shared cores): ERM, eq 5's ridge and weight decay on 24 images."""
  real_data("cifar10", "cifar10.npz")
  out = tmp_path / "coupled"
  r = _run(TINY + ["--arms=erm,ridge10,wd10", "--feature_method=matrix_free", f"--out_dir={out}"])
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  from gs_jax.tasks import cifar_features as lib

  with np.load(out / "features" / "s0.npz") as f:
    U, S = f["U"][:, :3], f["S"][:3]
  pred = lib.dual_prediction(U, S, 10.0)
  for arm in ("ridge10", "wd10"):
    rec = res["per_seed"][f"{arm}_s0"]
    assert rec["eq5_lambda"] == 10.0 and rec["coefficient"] == pytest.approx(10.0 / 24)
    np.testing.assert_allclose(rec["z_dual"], pred, rtol=1e-8)
    assert rec["rel_err_dual"] == pytest.approx(lib.relative_errors(rec["z_final"], pred))
    assert "rel_err_dual_j2plus" in res["metrics"][arm]
  # the ridge pulls toward θ0: its responses are smaller than ERM's
  assert np.linalg.norm(res["per_seed"]["ridge10_s0"]["z_final"]) < np.linalg.norm(
    res["per_seed"]["erm_s0"]["z_final"]
  )
  assert (out / "coupled.png").exists()
  assert "Coupled regime" in (out / "table.md").read_text()

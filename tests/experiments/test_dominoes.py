"""experiments.dominoes end to end (quick preset, a killed run resumes; the sd_lambda sweep)."""

import json

import numpy as np
import pytest

from analysis import dominoes_figures

from tests._helpers import real_data, run_experiment


@pytest.mark.integration
@pytest.mark.slow
def test_quick_preset_end_to_end_and_a_killed_run_resumes(tmp_path):
  """2–5 min on 2 shared cores: the quick preset (2 epochs) whole, and killed in the second
  epoch of its first method then started again, end with the same numbers."""
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  args = ["--preset=quick", "--a=0.5", "--epochs=2"]
  out = tmp_path / "a0.5"
  r = run_experiment("dominoes", args + [f"--out_dir={out}"])
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  assert res["config"]["a"] == 0.5 and res["provenance"]["git_commit"]
  assert res["data"]["mnist"].startswith("$GS_DATA_DIR")
  assert set(res["metrics"]) == {"erm", "l2", "sd"}
  for rec in res["per_seed"].values():
    assert set(rec["test_acc"]) == {"intact", "mnist_random", "cifar_random"}
    assert all(0.0 <= v <= 1.0 for v in rec["test_acc"].values())
    assert len(rec["z_final"]) == 4 and len(rec["mnist_share"]) == 4
    assert rec["n_mnist"] + rec["n_cifar"] == 4
    assert np.isfinite(rec["z_cifar"]) and np.isfinite(rec["z_mnist"])
    assert rec["steps"] == 2 * 48 // 8
  assert res["per_seed"]["l2_s0"]["weight_decay"] > 0
  assert res["per_seed"]["sd_s0"]["sd_lambda"] > 0
  # killed after 8 steps (ERM, in epoch 2), then started again with the same command
  killed = tmp_path / "killed"
  k = run_experiment("dominoes", args + [f"--out_dir={killed}"], kill_after_step=8)
  assert k.returncode == 3, k.stderr[-3000:]
  again = run_experiment("dominoes", args + [f"--out_dir={killed}"])
  assert again.returncode == 0, again.stderr[-3000:]
  res2 = json.load(open(killed / "results.json"))
  for key in res["per_seed"]:
    assert res2["per_seed"][key]["test_acc"] == res["per_seed"][key]["test_acc"], key
    np.testing.assert_array_equal(res2["per_seed"][key]["z_final"], res["per_seed"][key]["z_final"])
  text = dominoes_figures.report(str(tmp_path / "a*"), tmp_path / "fig")
  assert "SD" in text and (tmp_path / "fig" / "dominoes.png").exists()


@pytest.mark.integration
def test_quick_preset_one_epoch_end_to_end(tmp_path):
  """CI-sized: the quick preset for one epoch, ERM and SD, features and grouped responses."""
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  out = tmp_path / "a1"
  r = run_experiment(
    "dominoes", ["--preset=quick", "--a=1", "--methods=erm,sd", f"--out_dir={out}"]
  )
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  assert set(res["metrics"]) == {"erm", "sd"} and res["provenance"]["git_commit"]
  for rec in res["per_seed"].values():
    assert set(rec["test_acc"]) == {"intact", "mnist_random", "cifar_random"}
    assert rec["n_mnist"] + rec["n_cifar"] == 4 and np.isfinite(rec["z_mnist"])
    assert rec["steps"] == 48 // 8
  assert (out / "features" / "s0.npz").exists()
  text = dominoes_figures.report(str(out), tmp_path / "fig")
  assert "| SD | 1 | 1 |" in text


@pytest.mark.integration
def test_sd_sweep_picks_by_the_randomised_validation_accuracy(tmp_path):
  """~40 s on 2 shared cores: the sd_lambda sweep on a quick-sized problem."""
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  out = tmp_path / "sweep"
  r = run_experiment(
    "dominoes",
    [
      "--preset=sd_sweep",
      "--train_limit=48",
      "--n_val=16",
      "--test_limit=32",
      "--epochs=1",
      "--batch_size=8",
      "--sd_sweep=0.01,0.1",
      "--eval_batch=16",
      "--no_progress",
      f"--out_dir={out}",
    ],
  )
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  m = res["metrics"]
  assert set(m) == {"sd0.01", "sd0.1", "sd_choice"}
  best = max(
    ("sd0.01", "sd0.1"),
    key=lambda k: (m[k]["mnist_random"]["mean"], m[k]["intact"]["mean"], m[k]["sd_lambda"]),
  )
  assert m["sd_choice"]["sd_lambda"] == m[best]["sd_lambda"]
  for key in ("sd0.01_s0", "sd0.1_s0"):
    assert "test_acc" not in res["per_seed"][key]  # the sweep never looks at test
    assert set(res["per_seed"][key]["val_acc"]) == {"intact", "mnist_random"}
  assert not (out / "features").exists()

"""analysis.cifar_features_figures: the coupled table and figure from fake results."""

import numpy as np
import pytest

from analysis import cifar_features_figures


def test_coupled_table_and_figure_from_fake_results(tmp_path):
  """The λ table: relative errors per feature group, mean ± sample std over seeds."""
  per = {}
  for s, (e1, e2) in enumerate(((0.1, 0.2), (0.3, 0.4))):
    per[f"ridge10_s{s}"] = {
      "arm": "ridge10",
      "seed": s,
      "train_acc": 1.0,
      "z_final": [1.0, 2.0, 3.0],
      "z_dual": [1.0, 1.0, 1.0],
      "eq5_lambda": 10.0,
      "coefficient": 0.01,
      "rel_err_dual": {"all": e1, "j2plus": e2},
    }
  res = {"config": {"k": 3, "arms": ["erm", "ridge10"], "dual_dynamics": "exact"}, "per_seed": per}
  text = cifar_features_figures.coupled_table(res)
  # j = 2–3: ‖(2, 3) − (1, 1)‖/‖(1, 1)‖ = √5/√2; cos = 5/(√13·√2); ‖z‖/‖z*‖ = √13/√2
  assert (
    "| ridge10 (ridge ‖θ−θ0‖²) | 10 | 0.01 | 100.0 ± 0.0% | 0.200 ± 0.141 | 0.300 ± 0.141 "
    "| 1.581 ± 0.000 | 0.98 ± 0.00 | 2.55 ± 0 | 6 | 3 |" in text
  )
  # the equal-margin control cos(z, Uᵀ1) and the spectrum line
  U = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
  res["spectra"] = {"0": {"S": [3.0, 2.0, 1.0]}, "1": {"S": [3.0, 2.0, 1.0]}}
  text = cifar_features_figures.coupled_table(res, {0: {"U": U}, 1: {"U": U}})
  # Uᵀ1 over features 2–3 = (2, 1): cos((2, 3), (2, 1)) = 7/(√13·√5) = 0.868
  assert "| 0.98 ± 0.00 | 0.87 ± 0.00 | 2.55 ± 0 | 6 | 3 |" in text
  assert "s_1² = 9, s_2² = 4." in text
  assert (
    cifar_features_figures.coupled_table({"config": {"k": 3, "arms": ["erm"]}, "per_seed": {}})
    == ""
  )
  traj = {("ridge10", 0): (np.array([1, 10, 100]), np.ones((3, 3)))}
  paths = cifar_features_figures.draw_coupled(res, tmp_path, traj)
  assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.exists() for p in paths)


def _fake_run(arm, U, **config):
  per = {f"{arm}_s0": {"arm": arm, "seed": 0, "z_final": [1.0], "z_dual": [1.0], "eq5_lambda": 1.0}}
  cfg = {"k": 1, "lr": 1e-3, "arms": [arm], "run": {"out_dir": arm}, **config}
  return {
    "res": {"config": cfg, "per_seed": per, "metrics": {arm: {"x": 1}}},
    "traj": {(arm, 0): (np.array([1]), np.ones((1, 1)))},
    "features": {0: {"U": U}},
  }


def test_merge_joins_arms_split_over_processes():
  """Arms, per-seed results, metrics and trajectories of two folders become one run; the
  inputs are left as they were."""
  U = np.eye(3)
  a, b = _fake_run("ridge10", U), _fake_run("ridge1000", U + 1e-9)
  m = cifar_features_figures.merge([a, b])
  assert m["res"]["config"]["arms"] == ["ridge10", "ridge1000"]
  assert set(m["res"]["per_seed"]) == {"ridge10_s0", "ridge1000_s0"}
  assert set(m["res"]["metrics"]) == {"ridge10", "ridge1000"}
  assert set(m["traj"]) == {("ridge10", 0), ("ridge1000", 0)}
  assert a["res"]["config"]["arms"] == ["ridge10"] and len(a["traj"]) == 1


def test_merge_refuses_runs_that_are_not_one_experiment():
  """Different settings, the same arm twice, or different features at θ0 are errors."""
  U = np.eye(3)
  with pytest.raises(ValueError, match=r"differ in settings \['lr'\]"):
    cifar_features_figures.merge([_fake_run("ridge10", U), _fake_run("wd10", U, lr=0.1)])
  with pytest.raises(ValueError, match="same arm-seed"):
    cifar_features_figures.merge([_fake_run("ridge10", U), _fake_run("ridge10", U)])
  with pytest.raises(ValueError, match="features at θ0 differ"):
    cifar_features_figures.merge([_fake_run("ridge10", U), _fake_run("wd10", U + 1e-3)])
  with pytest.raises(ValueError, match="no runs"):
    cifar_features_figures.merge([])


def test_load_features_reads_every_seed_and_nothing_when_absent(tmp_path):
  """features/s<seed>.npz → {seed: arrays}; a folder without features gives {}."""
  (tmp_path / "features").mkdir()
  for seed in (0, 2):
    np.savez(tmp_path / "features" / f"s{seed}.npz", U=np.full((4, 2), seed), S=np.ones(2))
  feats = cifar_features_figures.load_features(tmp_path)
  assert sorted(feats) == [0, 2] and feats[2]["U"][0, 0] == 2 and feats[0]["S"].shape == (2,)
  assert cifar_features_figures.load_features(tmp_path / "missing") == {}

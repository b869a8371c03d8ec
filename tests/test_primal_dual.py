"""Reduced Figure-5 run (experiments.primal_dual): primal and dual end at the fixed point."""
import json
import os

import pytest

from experiments import primal_dual


def test_primal_dual_reduced(tmp_path):
  out = str(tmp_path / "fig5")
  primal_dual.main(["--out_dir", out, "--s1", "2", "4", "6", "--steps", "40000",
                    "--every", "200"])
  with open(os.path.join(out, "results.json")) as f:
    res = json.load(f)
  for run in res["runs"]:
    for name in ("dual", "primal", "primal_sd"):
      assert run[name]["rel_error_vs_fixed_point"] < 1e-6, (run["s1"], name, run[name])
  checks = res["checks"]
  assert checks["final_z2_decreases_with_s1"]
  assert checks["sd_end_points_spread"] < 1e-8
  assert checks["max_primal_dual_rel_gap"] < 1e-6
  for ext in ("png", "pdf"):
    assert os.path.getsize(os.path.join(out, f"fig5_primal_dual.{ext}")) > 1000


def test_primal_dual_bad_flags(tmp_path):
  with pytest.raises(ValueError, match="lam"):
    primal_dual.main(["--out_dir", str(tmp_path), "--lam", "0"])
  with pytest.raises(ValueError, match="every"):
    primal_dual.main(["--out_dir", str(tmp_path), "--steps", "10", "--every", "20"])

"""Figure 5 (experiments.primal_dual): the quick preset and bad flags."""

import json

import numpy as np
import pytest

from experiments import primal_dual


@pytest.mark.integration
def test_quick_preset(tmp_path, capsys):
  primal_dual.main([f"--out_dir={tmp_path}", "--preset=quick", "--no_progress"])
  res = json.loads((tmp_path / "results.json").read_text())
  assert [r["s1"] for r in res["per_s1"]] == [2.0, 4.0, 6.0]
  # Every path ends at its fixed point (slowest: the primal at s1 = 6, measured 4.8e-7 after
  # 40,000 steps of 0.02, the condition number growing with s1²/λ).
  for run in res["per_s1"]:
    for name in ("dual", "primal", "primal_sd"):
      assert run[name]["rel_error_vs_fixed_point"] < 1e-6, (run["s1"], name, run[name])
  checks = res["metrics"]
  assert checks["final_z2_decreases_with_s1"]
  assert checks["sd_end_points_spread"] < 1e-8  # SD: z* = U^T α*/λ, no S in it
  assert checks["max_primal_dual_rel_gap"] < 1e-6
  np.testing.assert_allclose(checks["sd_end_point_mean"], [4.589, 1.230], atol=5e-4)
  with np.load(tmp_path / "paths.npz") as p:
    assert p["dual"].shape == (3, 40_000 // 200 + 1, 2)
    assert p["primal"].shape == p["primal_sd"].shape == (3, 40_000 // 200, 2)
    np.testing.assert_array_equal(p["primal"][:, -1], [r["primal"]["z_end"] for r in res["per_s1"]])
  for ext in ("png", "pdf"):
    assert (tmp_path / f"figure5.{ext}").stat().st_size > 1000
  capsys.readouterr()
  primal_dual.main([f"--out_dir={tmp_path}", "--preset=quick", "--no_progress"])
  assert "not recomputed" in capsys.readouterr().out


@pytest.mark.parametrize(
  "flags", [["--lam=0"], ["--steps=10", "--every=20"], ["--m=1"], ["--s1=2,-1"]]
)
def test_bad_flags(tmp_path, flags):
  with pytest.raises(SystemExit):
    primal_dual.main([f"--out_dir={tmp_path}", *flags])

"""Figure 5 (experiments.primal_dual): the quick preset, and the dual gradient-ascent loop."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from gs_jax.base._compat import enable_x64

from experiments import primal_dual
from gs_jax.theory import dual
from gs_jax.tasks import starvation
from gs_jax import training as train


def test_field_ascent_records_every_kth_step_and_runs_the_remainder():
  field = lambda x: -x  # x_{t+1} = (1 − η) x_t
  x_end, seen = train.field_ascent(
    field, jnp.array([1.0, 2.0]), 0.5, 7, every=3, observe=lambda x: x.sum()
  )
  np.testing.assert_allclose(x_end, 0.5**7 * np.array([1.0, 2.0]))
  np.testing.assert_allclose(seen, 3.0 * 0.5 ** np.array([0, 3, 6]))
  clipped = train.field_ascent(field, jnp.array([1.0]), 3.0, 1, project=lambda x: x.clip(-1, 1))
  np.testing.assert_allclose(clipped, [-1.0])
  with pytest.raises(ValueError, match="every"):
    train.field_ascent(field, jnp.zeros(1), 0.1, 5, every=0)


def test_dual_ascent_ends_at_the_exact_fixed_point():
  U, S, lam = dual.coupling_matrix(0.5), np.array([4.0, 2.0]), 0.01
  with enable_x64():
    path, z_end = starvation.dual_ascent(U, S, lam, lr=2e-4, steps=40_000, every=10_000)
  z_star = starvation.dual_responses(U, S, lam, "exact")
  # Gradient ascent on the strictly concave eq 8 converges linearly; 40,000 steps of 2e-4
  # reach the fixed point to round-off (measured 8e-15).
  np.testing.assert_allclose(z_end, z_star, rtol=1e-12)
  assert path.shape == (5, 2)
  np.testing.assert_allclose(path[0], S**2 * (np.asarray(U).T @ np.full(2, 0.5)) / lam)
  np.testing.assert_allclose(path[-1], z_end, rtol=0)


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

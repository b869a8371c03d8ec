"""End-to-end runs of the two-moons CLI (reduced in CI; the full run is marked slow)."""
import json

import numpy as np
import pytest

from experiments import two_moons

# In-process runs keep the test process's JAX devices (the CLI would add one per core).
ONE_DEVICE = ("--cpu_devices=1",)


def test_figure1_reduced_shows_sd_margin_gain(tmp_path, capsys):
  two_moons.main([f"--out_dir={tmp_path}", "--seeds=3", "--no_progress",
                  "--margin_resolution=200", *ONE_DEVICE])
  res = json.loads((tmp_path / "results.json").read_text())
  assert set(res) == {"fig1a", "fig1b", "fig1c"}
  for name in ("fig1b", "fig1c"):
    assert res[name]["train_accuracy"] == 1.0
    assert len(res[name]["margin"]["per_seed_min"]) == 3
  # The claim of Figure 1 (b) vs (c): SD leaves a clearly larger margin than ERM.
  assert res["fig1c"]["margin"]["min"] > 1.5 * res["fig1b"]["margin"]["min"] > 0
  assert (res["fig1c"]["margin"]["per_seed_min_mean"]
          > 1.5 * res["fig1b"]["margin"]["per_seed_min_mean"])
  for ext in ("png", "pdf"):
    assert (tmp_path / f"figure1.{ext}").stat().st_size > 10_000
  # A second call finds every configuration and does not retrain.
  capsys.readouterr()
  two_moons.main([f"--out_dir={tmp_path}", "--seeds=3", "--no_progress", *ONE_DEVICE])
  assert capsys.readouterr().out.count("not retrained") == 3
  # --plot_only redraws from disk whatever the seeds, and refuses configurations never run.
  (tmp_path / "figure1.png").unlink()
  two_moons.main([f"--out_dir={tmp_path}", "--seeds=7", "--plot_only", *ONE_DEVICE])
  assert (tmp_path / "figure1.png").exists()
  with pytest.raises(SystemExit, match="b_sd"):
    two_moons.main([f"--out_dir={tmp_path}", "--configs=b_sd", "--plot_only", *ONE_DEVICE])


def test_appendix_b_grid_runs_every_variant(tmp_path):
  two_moons.main([f"--out_dir={tmp_path}", "--what=appendix_b", "--seeds=2", "--epochs=30",
                  "--no_progress", "--margin_resolution=60", "--map_resolution=30", *ONE_DEVICE])
  res = json.loads((tmp_path / "results.json").read_text())
  assert len(res) == 10
  for r in res.values():
    assert r["config"]["epochs"] == 30 and np.isfinite(r["final_loss"])
  assert (tmp_path / "appendix_b.png").exists()


def test_cli_rejects_bad_flags():
  with pytest.raises(SystemExit):
    two_moons.main(["--configs=nope", *ONE_DEVICE])
  with pytest.raises(SystemExit):
    two_moons.main(["--seeds=0"])
  with pytest.raises(SystemExit):
    two_moons.main(["--cpu_devices=-1"])


@pytest.mark.slow
def test_figure1_full_protocol(tmp_path):
  two_moons.main([f"--out_dir={tmp_path}", "--no_progress", *ONE_DEVICE])
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["fig1c"]["margin"]["min"] > 1.5 * res["fig1b"]["margin"]["min"]

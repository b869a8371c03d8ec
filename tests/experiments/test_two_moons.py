"""End-to-end runs of the two-moons experiment (reduced in CI; the full run is marked slow)."""

import json

import numpy as np
import pytest

from experiments import two_moons

# In-process runs keep the test process's JAX devices (the CLI would add one per core).
ONE_DEVICE = ("--cpu_devices=1",)


@pytest.mark.integration
def test_figure1_reduced_shows_sd_margin_gain(tmp_path, capsys):
  two_moons.main(
    [f"--out_dir={tmp_path}", "--seeds=3", "--no_progress", "--margin_resolution=200", *ONE_DEVICE]
  )
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["experiment"] == "two_moons" and res["config"]["seeds"] == 3
  assert set(res["metrics"]) == {"fig1a", "fig1b", "fig1c"}
  assert res["provenance"]["git_commit"] and res["provenance"]["packages"]["jax"]
  m = res["metrics"]
  for name in ("fig1b", "fig1c"):
    assert m[name]["train_accuracy"] == 1.0
    assert len(res["per_seed"][name]["margin_min"]) == 3
  # The claim of Figure 1 (b) vs (c): SD leaves a clearly larger margin than ERM.
  assert m["fig1c"]["margin_min"] > 1.5 * m["fig1b"]["margin_min"] > 0
  assert m["fig1c"]["per_seed_margin_min_mean"] > 1.5 * m["fig1b"]["per_seed_margin_min_mean"]
  for ext in ("png", "pdf"):
    assert (tmp_path / f"figure1.{ext}").stat().st_size > 10_000
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert {json.loads(x)["panel"] for x in lines} == {"fig1a", "fig1b", "fig1c"}
  # A second call finds every panel and does not retrain.
  capsys.readouterr()
  two_moons.main([f"--out_dir={tmp_path}", "--seeds=3", "--no_progress", *ONE_DEVICE])
  assert capsys.readouterr().out.count("not retrained") == 3
  # A changed panel is retrained, the others are kept.
  two_moons.main(
    [
      f"--out_dir={tmp_path}",
      "--seeds=3",
      "--no_progress",
      "--panels.fig1c.sd_lambda=0.01",
      "--margin_resolution=200",
      *ONE_DEVICE,
    ]
  )
  assert capsys.readouterr().out.count("not retrained") == 2
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["config"]["panels"]["fig1c"]["sd_lambda"] == 0.01
  # --plot_only redraws from disk, and refuses panels never run.
  (tmp_path / "figure1.png").unlink()
  two_moons.main(
    [
      f"--out_dir={tmp_path}",
      "--seeds=3",
      "--plot_only",
      "--panels.fig1c.sd_lambda=0.01",
      *ONE_DEVICE,
    ]
  )
  assert (tmp_path / "figure1.png").exists()
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_info:  # a user error: message, no traceback
    two_moons.main(
      [f"--out_dir={tmp_path}", "--preset=released", "--only=b_sd", "--plot_only", *ONE_DEVICE]
    )
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "b_sd" in err and "Traceback" not in err


@pytest.mark.integration
def test_released_appendix_b_grid_runs_every_panel(tmp_path):
  two_moons.main(
    [
      f"--out_dir={tmp_path}",
      "--preset=released",
      "--seeds=2",
      "--steps_scale=0.03",
      "--no_progress",
      "--margin_resolution=60",
      "--map_resolution=30",
      *ONE_DEVICE,
    ]
  )
  res = json.loads((tmp_path / "results.json").read_text())
  assert len(res["metrics"]) == 10
  panels = res["config"]["panels"]
  assert panels["b_none"]["steps"] == 30 and panels["b_long"]["steps"] == 300
  for m in res["metrics"].values():
    assert np.isfinite(m["final_loss"])
  assert (tmp_path / "appendix_b.png").exists()


def test_presets_follow_the_released_and_long_schedules():
  from configs import two_moons as cfgs

  released, long = cfgs.get_config("released"), cfgs.get_config("long")
  assert released.panels.b_none.steps == 1_000 and released.panels.b_long.steps == 10_000
  assert long.panels.b_none.steps == 10_000 and long.panels.b_long.steps == 100_000
  assert set(released.panels) == set(long.panels) and len(released.panels) == 10


def test_cli_rejects_bad_flags(capsys):
  for bad, message in (
    (["--only=nope"], "unknown panel"),
    (["--seeds=0"], "--seeds"),
    (["--cpu_devices=-1"], "--cpu_devices"),
    (["--seeds=two"], "invalid int"),
    (["--panels.fig1a.optimizer=rmsprop"], "sgd or adam"),
    (["--sd_lambda=0.1"], "unrecognized"),
  ):
    with pytest.raises(SystemExit):
      two_moons.main([*ONE_DEVICE, *bad])
    assert message in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.slow
def test_figure1_full_protocol(tmp_path):
  two_moons.main([f"--out_dir={tmp_path}", "--no_progress", *ONE_DEVICE])
  m = json.loads((tmp_path / "results.json").read_text())["metrics"]
  assert m["fig1c"]["margin_min"] > 1.5 * m["fig1b"]["margin_min"]

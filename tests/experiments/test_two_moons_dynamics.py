"""experiments.two_moons_dynamics (Figure 1(d)): reduced runs, resume after a kill, bad flags
(the full ``paper`` preset is the command in configs/two_moons_dynamics.py)."""

import json

import numpy as np
import pytest

from configs import two_moons_dynamics as configs
from experiments import two_moons_dynamics as tmd
from gs_jax.experiment import cli


# Reduced config: 2 seeds, width 100, 120 steps in chunks of 20; a checkpoint after every chunk.
QUICK = (
  "--preset=cpu_quick",
  "--steps=120",
  "--chunk=20",
  "--checkpoint_every_s=0",
  "--record_every=5",
  "--no_progress",
)


def _arrays(run_dir):
  out = {}
  for name in ("erm_neg", "erm_pos", "sd_pos"):
    with np.load(run_dir / "trajectories" / f"{name}.npz") as f:
      out.update({f"{name}/{k}": f[k] for k in f.files})
  return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("full")
  return out, tmd.run(cli.parse(configs, [*QUICK, f"--out_dir={out}"]))


@pytest.mark.integration
def test_reduced_run(full_run, capsys, tmp_path):
  out, res = full_run
  m = res["metrics"]
  assert set(m) == {"erm_neg", "erm_pos", "sd_pos"}
  for name, s in m.items():
    assert s["z_at_init_max_abs"] < 1e-4  # z = U^T Y (ŷ_0 − ŷ_0) = 0 at init
    assert s["z1_final"]["n"] == 2 and len(s["released_final"]) == 2
    assert len(res["per_seed"][name]["z1_final"]) == 2
  assert m["sd_pos"]["z1_final"]["mean"] < m["erm_pos"]["z1_final"]["mean"]  # SD lowers z1
  assert m["erm_pos"]["train_accuracy"]["mean"] == 1.0
  assert res["std_convention"] == "sample (ddof=1)"
  traj = _arrays(out)
  assert traj["erm_pos/z"].shape == (2, 121, 2)
  lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 3 * 120 // 5 and len(lines[0]["z"]) == 2
  assert lines[1]["step"] == 6 and lines[1]["setting"] == "erm_neg"
  for ext in ("png", "pdf"):
    assert (out / f"figure1d.{ext}").stat().st_size > 10_000
  # Started again: nothing is retrained. Settings changed (the parts of the run): each
  # setting is retrained under the new values, in a checkpoint of its own (gs_jax.experiment.run).
  capsys.readouterr()
  tmd.run(cli.parse(configs, [*QUICK, f"--out_dir={out}"]))
  assert capsys.readouterr().out.count("not retrained") == 3
  import shutil

  copy = tmp_path / "copy"  # the fixture's folder stays as it is for the other tests
  shutil.copytree(out, copy)
  other = tmd.run(cli.parse(configs, [*QUICK, "--steps=100", f"--out_dir={copy}"]))
  assert capsys.readouterr().out.count("not retrained") == 0
  assert other["config"]["steps"] == 100 and len(set(other["parts"].values())) == 3


@pytest.mark.integration
def test_killed_run_resumes_to_the_same_numbers(full_run, tmp_path, capsys):
  """Killed in the second setting after three chunks, the same command skips the finished
  setting, resumes the second from its last checkpoint (step 40: the chunk ending at 60 was
  not saved before the kill) and ends bit-identical to the uninterrupted run."""
  full_out, full_res = full_run
  cfg = cli.parse(configs, [*QUICK, f"--out_dir={tmp_path}"])

  class Killed(Exception):
    pass

  def kill(name, done, hist):
    if name == "erm_pos" and done == 60:
      raise Killed

  with pytest.raises(Killed):
    tmd.run(cfg, on_chunk=kill)
  seen = []
  capsys.readouterr()
  res = tmd.run(cfg, on_chunk=lambda name, done, hist: seen.append((name, done)))
  assert capsys.readouterr().out.count("not retrained") == 1
  assert [d for n, d in seen if n == "erm_pos"] == [60, 80, 100, 120]
  full, resumed = _arrays(full_out), _arrays(tmp_path)
  for k in full:
    np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
  for name in full_res["metrics"]:
    assert res["per_seed"][name] == full_res["per_seed"][name]
  log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert log == [json.loads(x) for x in (full_out / "metrics.jsonl").read_text().splitlines()]


def test_cli_rejects_bad_flags():
  for bad in ("--seeds=0", "--released_columns=-1", "--num_candidates=1", "--nope=1"):
    with pytest.raises(SystemExit):
      cli.parse(configs, [bad])

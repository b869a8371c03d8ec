"""gs_jax.experiment.results: the RunWriter's schema and log, the provenance command without
machine paths, and the dirty flag looking at code, not at committed results."""

import json
import subprocess

import ml_collections
import numpy as np

from gs_jax.experiment import results

from tests._helpers import REPO


def test_run_writer_schema_and_log(tmp_path):
  cfg = ml_collections.ConfigDict(dict(a=1, b=(1, 2)))
  w = results.RunWriter(tmp_path / "run", "demo", cfg)
  w.log(1, loss=np.float32(0.5))
  w.log_history({"loss": np.arange(6.0), "acc": np.ones((6, 2))}, every=3, start=10)
  path = w.write({"acc": 0.9, "bad": float("nan")}, {"acc": np.array([0.8, 1.0])}, extra=1)
  res = json.loads(path.read_text())
  assert res["experiment"] == "demo" and res["config"] == {"a": 1, "b": [1, 2]}
  assert res["std_convention"] == results.STD_CONVENTION and res["extra"] == 1
  assert res["metrics"] == {"acc": 0.9, "bad": "nan"} and res["per_seed"] == {"acc": [0.8, 1.0]}
  for key in (
    "git_commit",
    "git_dirty",
    "command",
    "packages",
    "devices",
    "start_time",
    "end_time",
  ):
    assert key in res["provenance"]
  lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert lines == [
    {"step": 1, "loss": 0.5},
    {"step": 11, "loss": 0.0, "acc": [1.0, 1.0]},
    {"step": 14, "loss": 3.0, "acc": [1.0, 1.0]},
  ]
  assert not list((tmp_path / "run").glob("*.tmp"))


def test_provenance_command_has_no_machine_path():
  import subprocess
  import sys

  repo = REPO
  code = "from gs_jax import results; print(results.command_line())"
  out = subprocess.run(
    [sys.executable, "-c", code, "--x=1"], cwd=repo, capture_output=True, text=True, check=True
  ).stdout.strip()
  assert out == "python --x=1" or out == "-c --x=1", out
  assert repo not in out


def test_dirty_flag_looks_at_code_not_at_committed_results(tmp_path):
  """A run that replaces a committed results file (or runs after one that did) runs the
  committed code: the flag ignores docs/results, and sees any other tracked change."""

  def git(*args):
    subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

  git("init", "-q")
  (tmp_path / "docs" / "results" / "a").mkdir(parents=True)
  (tmp_path / "docs" / "results" / "a" / "results.json").write_text("{}")
  (tmp_path / "code.py").write_text("x = 1\n")
  git("add", "-A")
  git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
  assert results.code_dirty(tmp_path) is False
  (tmp_path / "docs" / "results" / "a" / "results.json").write_text('{"new": 1}')
  (tmp_path / "untracked.py").write_text("")
  assert results.code_dirty(tmp_path) is False
  (tmp_path / "code.py").write_text("x = 2\n")
  assert results.code_dirty(tmp_path) is True


def test_write_measurement_adds_start_provenance_end_time_and_load(tmp_path):
  """A benchmark's record keeps its fields and gets the provenance taken at its start (not at
  the write: the code that ran), the end time and the load average of the 3 usual windows."""
  started = {**results.provenance_at_start(), "marker": "taken before the run"}
  path = tmp_path / "sub" / "bench.json"
  path.parent.mkdir()
  results.write_measurement(path, {"ratio": 2.5, "rows": [1, 2]}, started)
  rec = json.loads(path.read_text())
  assert rec["ratio"] == 2.5 and rec["rows"] == [1, 2]
  assert rec["provenance"]["marker"] == "taken before the run"
  assert rec["provenance"]["end_time"] >= rec["provenance"]["start_time"]
  assert len(rec["load_average"]) == 3
  assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temp file left

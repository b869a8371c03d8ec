"""Provenance of committed results (issue 20): every run file under docs/results has trusted
provenance or is listed in docs/results/LEGACY.json, and the analysis gate refuses untrusted
runs unless told to."""

import io
import json
import subprocess
import sys

import pytest

from analysis import provenance as prov

HEAD = prov._git("rev-parse", "HEAD")
# Commit times need the full history: a shallow clone lacks the commits old runs name.
needs_history = pytest.mark.skipif(
  prov._git("rev-parse", "--is-shallow-repository") == "true",
  reason="a shallow clone: run `git fetch --unshallow` to check the committed results' commits",
)


def run(commit=HEAD, dirty=False, start="2999-01-01T00:00:00+00:00", calls=None):
  p = {"git_commit": commit, "git_dirty": dirty, "start_time": start}
  if calls is not None:
    p["calls"] = calls
  return {"provenance": p}


@needs_history
def test_committed_results_have_provenance_or_are_listed_as_legacy():
  a = prov.audit()
  assert not a["bad"], "results files with provenance problems, not in LEGACY.json:\n" + "\n".join(
    f"{k}: {'; '.join(v)}" for k, v in a["bad"].items()
  )
  assert not a["stale"], f"LEGACY.json entries naming nothing or a clean file: {a['stale']}"


def test_every_legacy_entry_says_to_rerun_or_why_not():
  for key, entry in prov.load_legacy().items():
    assert entry["reason"], key
    assert entry["action"].startswith(("to rerun", "cannot rerun here:")), key


@needs_history
def test_agrees_with_the_shared_provenance_report():
  tool = prov.ROOT.parent / "shared" / "tools" / "provenance_report.py"
  if not tool.exists():
    pytest.skip(f"{tool} not here")
  out = subprocess.run(
    [sys.executable, str(tool)], capture_output=True, text=True, cwd=prov.ROOT, check=True
  ).stdout
  flagged = [line.split(":")[0] for line in out.splitlines() if line.startswith("docs/")]
  assert flagged, out
  for path in flagged:
    assert prov.problems(json.loads((prov.ROOT / path).read_text())), path
    assert prov.legacy_entry(prov.ROOT / path) is not None, path


@pytest.mark.parametrize(
  "res, expect",
  [
    ({}, "no provenance"),
    (run(dirty=True), "git_dirty=True"),
    (run(dirty=None), "git_dirty=None"),
    (run(commit=None), "no commit"),
    (run(commit="0" * 40), "not in this repository"),
    (run(start="2000-01-01T00:00:00+00:00"), "later than the start"),
    (
      run(calls=[{"git_commit": HEAD, "git_dirty": True, "start_time": None}]),
      "start 0: git_dirty=True",
    ),
  ],
)
def test_problems_of_one_run(res, expect):
  assert any(expect in p for p in prov.problems(res)), prov.problems(res)


def test_a_clean_run_has_no_problem():
  assert prov.problems(run()) == []
  assert prov.problems(run(calls=[run()["provenance"], run()["provenance"]])) == []


def test_gate_refuses_dirty_and_mixed_runs_unless_allowed():
  parent = prov._git("rev-parse", f"{HEAD}~1")
  with pytest.raises(prov.ProvenanceError, match="a/results.json: git_dirty=True"):
    prov.gate({"a/results.json": run(dirty=True), "b/results.json": run()}, legacy={})
  with pytest.raises(prov.ProvenanceError, match="mixed commits"):
    prov.gate({"a/results.json": run(), "b/results.json": run(commit=parent)}, legacy={})
  out = io.StringIO()
  r = prov.gate({"a/results.json": run(dirty=True)}, allow_dirty=True, legacy={}, out=out)
  assert "a/results.json: git_dirty=True" in out.getvalue() and r["bad"]
  assert not prov.gate({"a/results.json": run(), "b/results.json": run()}, legacy={})["bad"]


def test_gate_passes_legacy_runs_and_the_table_says_so():
  legacy = {"docs/results/old": {"reason": "no provenance", "action": "to rerun: x"}}
  path = str(prov.ROOT / "docs/results/old/m/results.json")
  out = io.StringIO()
  r = prov.gate({path: {}}, legacy=legacy, out=out)
  assert "legacy run" in out.getvalue() and not r["bad"]
  assert "no provenance" in prov.legacy_note(r)


def test_table_scripts_refuse_dirty_runs(tmp_path):
  """One table script end to end: a dirty CelebA run is refused, built with --allow_dirty."""
  from analysis import celeba_table

  src = prov.ROOT / "docs/results/celeba_cpu/cpu_erm_s0/results.json"
  res = json.loads(src.read_text())
  res["provenance"]["git_dirty"] = True
  (tmp_path / "r").mkdir()
  (tmp_path / "r" / "results.json").write_text(json.dumps(res))
  with pytest.raises(prov.ProvenanceError, match="git_dirty=True"):
    celeba_table.main([f"--runs_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}"])
  celeba_table.main([f"--runs_dir={tmp_path}", f"--out_dir={tmp_path / 'out'}", "--allow_dirty"])
  assert (tmp_path / "out" / "table3.md").exists()

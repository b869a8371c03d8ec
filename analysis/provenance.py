"""Provenance gates for tables built from run files (issue 20).

Every table-building script in ``analysis/`` passes the runs it is about to tabulate through
:func:`gate`. A run file's provenance is trusted when (the rules of
``../shared/tools/provenance_report.py``):

- it has a ``provenance`` dict;
- ``git_dirty`` is ``False`` (in the top-level record and in every ``provenance["calls"]`` entry,
  the record of each start and resumed start);
- ``git_commit`` names a commit of this repository that is not later than ``start_time``;

and a table's runs all name one commit (a resumed run whose calls name different commits counts
as mixed too). Without ``--allow_dirty`` a script refuses to build a table from runs that break
a rule and prints which runs and why; with it, it builds the table and prints the same list.

Results that cannot be made trustworthy by this session (made on a GPU, made before provenance
was recorded, made from a dirty tree) are listed, with the reason and what is to be done, in
``docs/results/LEGACY.json``; :func:`gate` lets them through and reports them as legacy, and
the tables built from them say so (:func:`legacy_note`).

    python -m analysis.provenance [FOLDER ...]     # every run file under docs/results
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
LEGACY = RESULTS / "LEGACY.json"
# Files under docs/results that are not records of a run: the legacy list and summaries an
# analysis script derives from run files (whose own provenance is checked).
DERIVED = ("LEGACY.json", "summary.json", "dominoes.json")


class ProvenanceError(RuntimeError):
  """A table was asked for from runs whose provenance breaks a rule (see the module doc)."""


def _git(*args: str, cwd: Path = ROOT) -> str | None:
  r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd)
  return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def commit_time(commit: str) -> datetime.datetime | None:
  """Committer time of ``commit`` in this repository, None when it is not here."""
  return parse_time(_git("show", "-s", "--format=%cI", f"{commit}^{{commit}}") or "")


def parse_time(s) -> datetime.datetime | None:
  try:
    t = datetime.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
  except ValueError:
    return None
  return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def _record_problems(p: Mapping, where: str = "") -> list[str]:
  out = []
  if p.get("git_dirty") is not False:
    out.append(f"{where}git_dirty={p.get('git_dirty')}")
  commit, start = p.get("git_commit"), parse_time(p.get("start_time"))
  if not commit:
    out.append(f"{where}no commit")
    return out
  ctime = commit_time(commit)
  if ctime is None:
    out.append(f"{where}commit {commit[:8]} not in this repository")
  elif start is not None and ctime > start:
    out.append(
      f"{where}commit {commit[:8]} ({ctime:%Y-%m-%d %H:%M}) is later than the start "
      f"({start:%Y-%m-%d %H:%M})"
    )
  return out


def commits(res: Mapping) -> set[str]:
  """Every commit a run file names (top level and every recorded start)."""
  p = res.get("provenance") if isinstance(res, Mapping) else None
  if not isinstance(p, Mapping):
    return set()
  out = {p["git_commit"]} if p.get("git_commit") else set()
  for call in p.get("calls") or []:
    if isinstance(call, Mapping) and call.get("git_commit"):
      out.add(call["git_commit"])
  return out


def problems(res) -> list[str]:
  """Why one run file's provenance cannot be trusted (empty when it can)."""
  p = res.get("provenance") if isinstance(res, Mapping) else None
  if not isinstance(p, Mapping):
    return ["no provenance"]
  out = _record_problems(p)
  for i, call in enumerate(p.get("calls") or []):
    if isinstance(call, Mapping):
      out += _record_problems(call, where=f"start {i}: ")
  if len(commits(res)) > 1:
    out.append("resumed on different commits: " + ", ".join(sorted(c[:8] for c in commits(res))))
  return out


def relpath(path) -> str:
  """``path`` relative to the repository root when it lies inside it (the legacy list's keys)."""
  p = Path(path).resolve()
  try:
    return p.relative_to(ROOT).as_posix()
  except ValueError:
    return Path(path).as_posix()


def load_legacy(path: Path = LEGACY) -> dict[str, dict]:
  """``{repository-relative path: {"reason", "action"}}`` of the legacy list."""
  if not Path(path).exists():
    return {}
  return json.loads(Path(path).read_text())["files"]


def legacy_entry(path, legacy: Mapping | None = None) -> dict | None:
  """The legacy entry of a run file: its own, else that of its run directory or of a folder
  above it (a whole table listed at once, e.g. for mixed commits)."""
  legacy = load_legacy() if legacy is None else legacy
  rel = relpath(path)
  if not rel.endswith(".json"):
    rel += "/results.json"
  parts = rel.split("/")
  for k in range(len(parts), 0, -1):
    key = "/".join(parts[:k])
    if key in legacy:
      return legacy[key]
  return None


def report(runs: Mapping[str, Mapping], legacy: Mapping | None = None) -> dict:
  """``{"bad": {path: [problems]}, "legacy": {path: entry}, "commits": {commit: [paths]}}``
  over the runs ``{path: results}`` of one table."""
  legacy = load_legacy() if legacy is None else legacy
  bad, old, by_commit = {}, {}, {}
  for path, res in runs.items():
    entry = legacy_entry(path, legacy)
    if entry is not None:
      old[path] = entry
      continue
    found = problems(res)
    if found:
      bad[path] = found
    for c in commits(res):
      by_commit.setdefault(c, []).append(path)
  return {"bad": bad, "legacy": old, "commits": by_commit}


def gate(
  runs: Mapping[str, Mapping],
  allow_dirty: bool = False,
  what: str = "table",
  legacy: Mapping | None = None,
  out=sys.stdout,
) -> dict:
  """Refuses (:class:`ProvenanceError`) to build ``what`` from ``runs`` ({path: results}) with
  untrusted provenance or mixed commits, unless ``allow_dirty``; prints which runs either way.
  Runs in the legacy list pass and are reported. Returns :func:`report`'s dict."""
  r = report(runs, legacy)
  lines = [f"  {p}: {'; '.join(v)}" for p, v in r["bad"].items()]
  if len(r["commits"]) > 1:
    lines += [
      f"  mixed commits: {c[:8]} ← {', '.join(sorted(ps))}"
      for c, ps in sorted(r["commits"].items())
    ]
  for p, e in r["legacy"].items():
    print(
      f"{what}: legacy run (docs/results/LEGACY.json): {p}: {e['reason']}; {e['action']}", file=out
    )
  if lines:
    head = f"{what}: runs with untrusted provenance"
    if not allow_dirty:
      raise ProvenanceError(head + " (pass --allow_dirty to build it anyway):\n" + "\n".join(lines))
    print(head + " (built anyway, --allow_dirty):\n" + "\n".join(lines), file=out)
  return r


def gate_files(
  paths: Iterable, allow_dirty: bool = False, what: str = "table", out=sys.stdout
) -> dict:
  """:func:`gate` over run files (or run directories holding a ``results.json``)."""
  runs = {}
  for path in paths:
    path = Path(path)
    if path.is_dir():
      path = path / "results.json"
    runs[str(path)] = json.loads(path.read_text())
  return gate(runs, allow_dirty, what, out=out)


def legacy_note(r: Mapping) -> str:
  """One line for a table built (partly) from legacy runs; empty when there are none."""
  if not r["legacy"]:
    return ""
  reasons = sorted({e["reason"] for e in r["legacy"].values()})
  return (
    f"Provenance: {len(r['legacy'])} of the runs behind this table are legacy "
    f"(docs/results/LEGACY.json): {'; '.join(reasons)}."
  )


def add_flag(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--allow_dirty",
    action="store_true",
    help="build the table even from runs whose provenance is untrusted "
    "(dirty tree, none, commit after start, mixed commits); they are "
    "printed either way",
  )


def run_files(folders: Iterable = (RESULTS,)) -> list[Path]:
  """Every git-tracked run record (``*.json`` but the derived files) under ``folders``."""
  out = []
  for folder in folders:
    listed = _git("ls-files", "--", str(Path(folder).resolve())) or ""
    out += [
      ROOT / p for p in listed.splitlines() if p.endswith(".json") and Path(p).name not in DERIVED
    ]
  return sorted(out)


def audit(folders: Iterable = (RESULTS,), legacy: Mapping | None = None) -> dict:
  """``{"bad": {path: problems}, "legacy": {path: entry}, "stale": [legacy keys that name no
  file or a file with no problem]}`` over every run file under ``folders``."""
  legacy = load_legacy() if legacy is None else legacy
  bad, old, clean = {}, {}, set()
  for f in run_files(folders):
    rel = relpath(f)
    try:
      found = problems(json.loads(f.read_text()))
    except ValueError as e:
      found = [f"unreadable ({e})"]
    if legacy_entry(f, legacy) is not None:
      old[rel] = legacy_entry(f, legacy)
      if not found:
        clean.add(rel)
    elif found:
      bad[rel] = found
  stale = sorted(k for k in legacy if not (ROOT / k).exists() or k in clean)
  return {"bad": bad, "legacy": old, "stale": stale}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m analysis.provenance",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("folders", nargs="*", default=[str(RESULTS)])
  args = p.parse_args(argv)
  a = audit(args.folders)
  for path, found in a["bad"].items():
    print(f"{path}: {'; '.join(found)}")
  for key in a["stale"]:
    print(f"{key}: in LEGACY.json but missing or with trusted provenance: remove the entry")
  print(
    f"{len(a['bad'])} run files with provenance problems outside LEGACY.json, "
    f"{len(a['legacy'])} legacy"
  )
  return 1 if a["bad"] or a["stale"] else 0


if __name__ == "__main__":
  sys.exit(main())

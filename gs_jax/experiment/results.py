"""One results writer for every experiment: resolved config, provenance, metrics, per-seed values.

A run directory holds

- ``results.json`` — written atomically (temporary file + ``os.replace``), schema::

      {"experiment": str, "config": {...the resolved config...},
       "provenance": {"git_commit", "git_dirty", "git_diff_sha256", "command", "python",
                      "platform", "packages", "devices", "start_time",   # of the first start
                      "commits", "mixed_commits", "calls": [one record per start],
                      "end_time"},
       "std_convention": "sample (ddof=1)",
       "metrics": {...summaries...}, "per_seed": {...one value per seed/restart...},
       ...experiment-specific extras}

- ``calls.jsonl`` — the provenance of every start (first, then each resumed start), taken
  when the run starts, not when it ends: the commit that trained a run is the one it started at.

- ``metrics.jsonl`` — one JSON object per line (``{"step": …, "loss": …, …}``), appended during
  long runs, so a user can ``tail -f`` or plot it while training runs.

Every summary over seeds/restarts in this codebase uses :func:`mean_std`: the mean and the
*sample* standard deviation (``ddof=1``; 0 for a single value), as the paper's "mean ± std over
runs" is read here.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gs_jax.base.jsonio import atomic_write_json, read_json, to_builtin  # noqa: F401 (re-exported)
from gs_jax.base.stats import STD_CONVENTION, mean_std, wilson_interval  # noqa: F401
from gs_jax.experiment.figures import pyplot, save_figure  # noqa: F401

RESULTS_DIR = "docs/results"
_PACKAGES = (
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "neural-tangents",
  "numpy",
  "orbax-checkpoint",
  "ml-collections",
)


def _git(*args: str, cwd: str | os.PathLike | None = None) -> str | None:
  try:
    out = subprocess.run(
      ["git", *args],
      capture_output=True,
      text=True,
      timeout=10,
      cwd=cwd or Path(__file__).resolve().parent,
    )
  except (OSError, subprocess.TimeoutExpired):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


def _version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def command_line() -> str:
  """The command as a user would type it (``python -m pkg.mod --flag …``), free of the
  machine's paths: the module name instead of the script's absolute path."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  prog = (
    f"python -m {spec.name}"
    if spec is not None and spec.name
    else (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python")
  )
  return " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])


# What the dirty flag looks at: every tracked file except the committed results themselves
# (a run that replaces its own docs/results/<name>/results.json, or runs after another one did,
# runs the committed code all the same).
_CODE = (":(top)", f":(top,exclude){RESULTS_DIR}")


def code_dirty(repo: str | os.PathLike | None = None) -> bool | None:
  """Whether tracked files outside ``docs/results`` differ from HEAD in the git work tree that
  holds ``repo`` (default: this package's); None outside git."""
  status = _git("status", "--porcelain", "--untracked-files=no", "--", *_CODE, cwd=repo)
  return None if status is None else bool(status)


def provenance() -> dict:
  """Git commit, dirty flag (tracked files outside ``docs/results`` differ from the commit; when
  dirty, a SHA-256 of that ``git diff HEAD``), command line, Python, package versions and JAX
  devices: what this process runs."""
  import hashlib

  import jax

  dirty = code_dirty()
  diff = _git("diff", "HEAD", "--", *_CODE) if dirty else None
  return {
    "git_commit": _git("rev-parse", "HEAD"),
    "git_dirty": dirty,
    "git_diff_sha256": None if diff is None else hashlib.sha256(diff.encode()).hexdigest(),
    "command": command_line(),
    "python": sys.version.split()[0],
    "platform": platform.platform(),
    "packages": {p: _version(p) for p in _PACKAGES},
    "devices": [str(d) for d in jax.devices()],
    "process_count": jax.process_count(),
  }


def provenance_at_start() -> dict:
  """:func:`provenance` with ``start_time``: for scripts that write one JSON file at their end
  (benchmarks), called when they start, so the record names the code that ran."""
  return {**provenance(), "start_time": _now()}


def combined_provenance(calls: list[dict]) -> dict:
  """The ``provenance`` of results.json from the records of every start of a run (first start,
  then each resumed start; :class:`RunWriter`): the first start's record, ``git_dirty`` true
  if *any* start ran from a modified tree, ``commits`` (every commit that ran a part of it,
  ``mixed_commits`` when more than one) and ``calls`` (all records, each with its
  ``start_time`` and what it resumed from)."""
  first = dict(calls[0])
  commits = list(dict.fromkeys(c.get("git_commit") for c in calls))
  dirty = [c.get("git_dirty") for c in calls]
  first.update(
    git_dirty=True if any(d is True for d in dirty) else (None if None in dirty else False),
    commits=commits,
    mixed_commits=len(commits) > 1,
    calls=calls,
  )
  return first


def now() -> str:
  """The current UTC time, ISO 8601, to the second (the times of provenance records)."""
  return _now()


def write_measurement(path: str | os.PathLike, record: dict, started: dict) -> None:
  """Writes a benchmark's ``record`` to ``path`` (atomically) with its provenance and the
  machine's load average: ``started`` is :func:`provenance_at_start`, taken before the
  measurement ran (the code that ran), completed here by the end time; the load average says
  whether other work shared the machine and skewed the timings."""
  atomic_write_json(
    path,
    {**record, "provenance": {**started, "end_time": now()}, "load_average": os.getloadavg()},
  )


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _is_main() -> bool:
  from gs_jax.base import distributed  # imports jax: only when something is written

  return distributed.is_main()


class RunWriter:
  """Writes one run directory: ``results.json`` (atomic) and ``metrics.jsonl``.

  ``RunWriter(out_dir, "two_moons", config)`` records provenance *at start* (commit, dirty
  flag, command …) and appends it to ``out_dir/calls.jsonl``, so a run started again (resumed)
  adds a record and results.json lists which code ran which part (:func:`combined_provenance`);
  a start from a modified tree prints a warning (its results are a draft);
  :meth:`log` appends a training-metrics line; :meth:`write` (call it as often as useful,
  e.g. after every finished configuration) replaces ``results.json`` with the current state.
  In a multi-process run only process 0 writes (the others' calls do nothing).
  """

  def __init__(self, out_dir: str | os.PathLike, experiment: str, config):
    self.out_dir = Path(out_dir)
    self.out_dir.mkdir(parents=True, exist_ok=True)
    self.experiment = experiment
    self.config = to_builtin(config)
    self.start_time = _now()
    self._calls: list[dict] | None = None

  @property
  def calls_path(self) -> Path:
    return self.out_dir / "calls.jsonl"

  def record_start(self, **fields) -> dict:
    """Takes this start's provenance, appends it to ``calls.jsonl`` (``fields`` e.g. what it
    resumes from) and returns it. Called by :class:`gs_jax.experiment.run.Run` at start, or by
    the first :meth:`write`."""
    call = {**provenance(), "start_time": self.start_time, **fields}
    if call["git_dirty"]:
      print(
        f"warning: {self.out_dir}: the working tree has uncommitted changes; results "
        "written by this run are a draft (provenance git_dirty=true)",
        file=sys.stderr,
      )
    if _is_main():
      with open(self.calls_path, "a") as f:
        f.write(json.dumps(to_builtin(call)) + "\n")
    self._calls = (
      [json.loads(line) for line in self.calls_path.read_text().splitlines() if line.strip()]
      if self.calls_path.exists()
      else [call]
    )
    return call

  @property
  def results_path(self) -> Path:
    return self.out_dir / "results.json"

  @property
  def log_path(self) -> Path:
    return self.out_dir / "metrics.jsonl"

  def previous(self) -> dict | None:
    """The results.json already in the directory, or None."""
    return read_json(self.results_path)

  def log(self, step: int, **metrics) -> None:
    """Appends ``{"step": step, **metrics}`` as one JSON line (flushed)."""
    if not _is_main():
      return
    line = json.dumps(to_builtin({"step": int(step), **metrics}))
    with open(self.log_path, "a") as f:
      f.write(line + "\n")

  def log_history(
    self, history: Mapping[str, Any], *, start: int = 0, every: int = 1, **fields
  ) -> None:
    """Logs rows of a stacked history (``{name: (steps, ...) array}``) every ``every`` steps;
    per-seed arrays are logged as lists. ``fields`` are added to every line."""
    if not _is_main():
      return
    history = {k: np.asarray(v) for k, v in history.items()}
    length = len(next(iter(history.values())))
    lines = []
    for i in range(0, length, every):
      row = {k: v[i] for k, v in history.items()}
      lines.append(json.dumps(to_builtin({"step": start + i + 1, **fields, **row})))
    with open(self.log_path, "a") as f:
      f.write("".join(line + "\n" for line in lines))

  def write(
    self, metrics: Mapping[str, Any], per_seed: Mapping[str, Any] | None = None, **extra
  ) -> Path:
    """Atomically writes results.json with the config, provenance and the given values."""
    if not _is_main():
      return self.results_path
    if self._calls is None:
      self.record_start()
    assert self._calls is not None
    data = {
      "experiment": self.experiment,
      "config": self.config,
      "provenance": {**combined_provenance(self._calls), "end_time": _now()},
      "std_convention": STD_CONVENTION,
      "metrics": metrics,
      "per_seed": per_seed or {},
      **extra,
    }
    atomic_write_json(self.results_path, data)
    return self.results_path

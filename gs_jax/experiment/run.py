"""One run directory for every experiment: fingerprint, overwrite, resume, skip-if-finished,
provenance at start, the results writer and the metrics log.

A config has the hyper-parameters at its top level, an optional ``eval`` section
(evaluation-only settings) and a ``run`` section (where and how it runs: ``out_dir``,
``overwrite``, ``progress``, devices …; ``configs/_run.py``). What a run computes depends on the
first two only, so

- ``fingerprint(hyperparameters(cfg))`` names the results (``results.json`` records it); a
  directory holding results trained under other settings is refused (:class:`RunMismatch`) unless
  ``--overwrite`` (which removes ``ckpt/``, ``metrics.jsonl``, ``results.json``, ``calls.jsonl``
  and any ``artifacts`` the experiment names);
- ``training_settings(cfg)`` (without ``eval``) names the trained state: checkpoints carry it,
  and a finished training is re-evaluated, not retrained, under new ``eval`` values;
- experiments made of parts (panels, settings, widths) name each part's settings:
  :meth:`Run.finished` says whether ``results.json`` holds that part for those settings (skip),
  :meth:`Run.checkpointer` gives the part a checkpoint folder named by their digest (a changed
  part never resumes a stale checkpoint).

In a multi-process run every process builds the same :class:`Run`; process 0 deletes and writes,
and a barrier follows the deletion.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from gs_jax.base import distributed, errors, jsonio
from gs_jax.experiment import checkpoint, results

SECTIONS = ("run", "eval")  # flags without prefix; never in the training fingerprint


RunMismatch = errors.RunMismatch


def hyperparameters(cfg) -> dict:
  """Everything the results depend on: the config without its ``run`` section (and ``preset``,
  a name for a starting point, not a value)."""
  d = jsonio.to_builtin(cfg)
  return {k: v for k, v in d.items() if k not in ("run", "preset")}


def training_settings(cfg) -> dict:
  """What the trained state depends on: :func:`hyperparameters` without the ``eval`` section."""
  return {k: v for k, v in hyperparameters(cfg).items() if k != "eval"}


def fingerprint(settings: Any) -> str:
  """A short stable digest of JSON-able ``settings`` (key order does not matter)."""
  text = json.dumps(jsonio.to_builtin(settings), sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:12]


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
  out = []
  for k in sorted(set(a) | set(b)):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, Mapping) and isinstance(vb, Mapping):
      out += _differences(va, vb, f"{prefix}{k}.")
    elif va != vb:
      out.append(f"{prefix}{k}: {vb!r} -> {va!r}")
  return out


class Run:
  """The run directory of one experiment call (see the module docstring).

  Args:
    cfg: the resolved config (``cfg.run.out_dir`` must be set, or pass ``out_dir``).
    experiment: the name written into results.json.
    out_dir: overrides ``cfg.run.out_dir`` (e.g. a default derived from hyper-parameters).
    artifacts: files/folders under ``out_dir`` the experiment writes besides results (e.g.
      ``"maps"``); ``--overwrite`` removes them too.
    whole: True (default) when the results belong to the whole config: a directory whose
      results.json has another fingerprint is refused. False for experiments made of parts,
      whose results accumulate part by part.
  """

  def __init__(
    self,
    cfg,
    experiment: str,
    *,
    out_dir: str | None = None,
    artifacts: Iterable[str] = (),
    whole: bool = True,
  ):
    self.cfg = cfg
    self.out_dir = Path(out_dir or cfg.run.out_dir)
    if not str(out_dir or cfg.run.out_dir):
      raise ValueError("Run needs an out_dir")
    self.hparams = hyperparameters(cfg)
    self.fingerprint = fingerprint(self.hparams)
    self.training_fingerprint = fingerprint(training_settings(cfg))
    self.writer = results.RunWriter(self.out_dir, experiment, cfg)
    if isinstance(self.writer.config.get("run"), dict):   # the directory actually used
      self.writer.config["run"]["out_dir"] = str(self.out_dir)
    if cfg.run.overwrite and distributed.is_main():
      for name in ("ckpt", "metrics.jsonl", "results.json", "calls.jsonl", *artifacts):
        path = self.out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    distributed.barrier(f"{experiment}: out_dir ready")  # after process 0 removed old files
    self.previous = self.writer.previous()
    if whole and self.previous is not None:
      self._check_same(self.previous)
    self.parts: dict[str, str] = dict((self.previous or {}).get("parts", {}))
    self.writer.record_start(resumed=self.previous is not None or (self.out_dir / "ckpt").exists())

  def _check_same(self, prev: dict) -> None:
    """Refuses a directory whose results were trained under other settings; new ``eval``
    values are fine (the finished training is re-evaluated)."""
    old = {k: v for k, v in prev.get("config", {}).items() if k not in ("run", "preset", "eval")}
    stored = prev.get("training_fingerprint")
    mine = training_settings(self.cfg)
    if (stored or fingerprint(old)) != self.training_fingerprint:
      diff = _differences(mine, old)
      raise RunMismatch(
        f"{self.out_dir} holds a run with other settings ({'; '.join(diff) or 'fingerprint'}): "
        "pass --overwrite to replace it, or choose another --out_dir"
      )

  # --- parts ------------------------------------------------------------------------------
  def finished(self, part: str, settings: Any) -> bool:
    """Whether results.json holds ``part`` computed under ``settings``."""
    return self.parts.get(part) == fingerprint(settings)

  def mark_finished(self, part: str, settings: Any) -> None:
    """Records ``part`` as computed under ``settings`` (written by the next :meth:`write`)."""
    self.parts[part] = fingerprint(settings)

  def checkpoint_dir(self, part: str = "", settings: Any = None) -> Path:
    """``ckpt/`` (whole run) or ``ckpt/<part>-<digest of settings>``."""
    if not part:
      return self.out_dir / "ckpt"
    return self.out_dir / "ckpt" / f"{part}-{fingerprint(settings)}"

  def checkpointer(self, part: str = "", settings: Any = None, **kwargs):
    """A :class:`gs_jax.experiment.checkpoint.Checkpointer` for the whole run's training
    (``settings`` default: :func:`training_settings`) or for one part; it refuses a checkpoint
    written under other settings (:class:`RunMismatch`). ``kwargs`` as the Checkpointer's."""
    if settings is None:
      settings = training_settings(self.cfg)
    return checkpoint.Checkpointer(
      self.checkpoint_dir(part, settings), fingerprint=fingerprint(settings), **kwargs
    )

  def remove_checkpoint(self, part: str = "", settings: Any = None) -> None:
    """Deletes a finished part's checkpoint (its results are written)."""
    if distributed.is_main():
      shutil.rmtree(self.checkpoint_dir(part, settings), ignore_errors=True)

  # --- outputs ----------------------------------------------------------------------------
  def write(
    self, metrics: Mapping[str, Any], per_seed: Mapping[str, Any] | None = None, **extra
  ) -> Path:
    """Atomically writes results.json (config, provenance of every start, fingerprint, parts)."""
    extra.setdefault("fingerprint", self.fingerprint)
    extra.setdefault("training_fingerprint", self.training_fingerprint)
    if self.parts:
      extra.setdefault("parts", self.parts)
    return self.writer.write(metrics, per_seed, **extra)

  def log(self, step: int, **metrics) -> None:
    self.writer.log(step, **metrics)

  def log_history(self, history, **kwargs) -> None:
    self.writer.log_history(history, **kwargs)

  def read(self) -> dict:
    """results.json as written (after a barrier: every process reads process 0's file)."""
    distributed.barrier(f"{self.writer.experiment}: results written")
    return jsonio.read_json(self.writer.results_path)

  @property
  def config(self) -> dict:
    """The config as results.json records it (JSON-able; an experiment made of parts may
    record there what each finished part ran with)."""
    return self.writer.config

  @property
  def results_path(self) -> Path:
    return self.writer.results_path

  @property
  def log_path(self) -> Path:
    return self.writer.log_path

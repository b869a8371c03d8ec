"""Command-line flags generated from a config: one spelling for one idea in every experiment.

An experiment's settings are one ``ml_collections.ConfigDict`` (typed: assigning a value of
another type raises). A config module (``configs/<name>.py``) provides

- ``get_config(preset: str) -> ConfigDict`` and ``PRESETS`` (names, the first is the default);
- ``HELP``: one sentence per field that is not in :data:`COMMON_HELP`;
- a docstring with the exact command of each preset and its expected result.

:func:`parse` builds an ``argparse`` parser whose flags are the config's leaves
(``--sd_lambda=0.01``; nested fields as ``--model.width=64``; booleans also as ``--name`` /
``--no_name``; tuples comma-separated), with ``--preset`` choosing the starting point, and
returns the resolved, locked config. Names used across experiments (the canonical spelling):

- ``sd_lambda``: coefficient of ``mean(ŷ²)`` in a training loss (docs/protocols.md §4);
- ``lam``: the theory's λ of eq 5 / eq 17 (sums, λ/2);
- ``steps`` for full-batch runs (one step = one pass over the data), ``epochs`` for minibatch
  runs; ``seeds`` (how many runs, seeds 0…seeds−1), ``seed`` (the seed of a single run);
- ``out_dir``, ``data_dir``, ``progress``, ``overwrite``.
"""
from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Any, Sequence

import ml_collections

COMMON_HELP = {
    "sd_lambda": "spectral decoupling coefficient on mean(logits^2) (0 = ERM); "
                 "docs/protocols.md §4",
    "lam": "λ of the theory (eq 5 / eq 17: sums over examples, λ/2 in front of the penalty)",
    "seeds": "number of independent runs (seeds 0..seeds-1), trained together with vmap",
    "seed": "seed of this run (initialisation, data order, attacks)",
    "steps": "full-batch gradient steps (one step = one pass over the training data)",
    "epochs": "passes over the training data (minibatch training)",
    "lr": "learning rate",
    "weight_decay": "coupled L2 coefficient (PyTorch's weight_decay: adds wd·θ to the gradient)",
    "out_dir": "run directory: results.json, metrics.jsonl, figures, checkpoints",
    "data_dir": "local copy of the data (file or folder); default: $GS_DATA_DIR, else "
                "tfds.load (downloads); see docs/protocols.md §5",
    "progress": "show progress bars",
    "overwrite": "start afresh instead of resuming what out_dir already holds",
    "cpu_devices": "CPU devices to split seeds/batches over (0: one per core; 1: JAX's default "
                   "single device); ignored on GPU",
    "cpu_runtime": "XLA:CPU runtime: thunk (JAX's default), legacy (whole program in one "
                   "function; batch-1 training on a pinned core ~1.7× faster; jax < 0.6 only) "
                   "or fastest (legacy where it exists, else thunk); "
                   "gs_jax.devices.use_cpu_runtime",
    "cpu_cores": "pin the process to these cores: comma-separated indices into the cores it "
                 "may use ('0', '1', '0,1'); empty: no pinning. Batch-1 training runs ~1.9× "
                 "faster on one pinned core; give parallel runs different cores",
    "coordinator_address": "host:port of process 0 for a multi-process run (jax.distributed); "
                           "empty: auto-detected on Slurm/TPU/MPI, else a single process",
    "num_processes": "number of processes of a multi-process run (0: auto-detect / one)",
    "process_id": "this process's index in [0, num_processes) (-1: auto-detect)",
    "dist_timeout_s": "a process silent this long counts as dead: the others exit non-zero",
}


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = ""):
  for key in cfg.keys():
    value = cfg[key]
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, name + ".")
    else:
      yield name, value


def _get(cfg, dotted: str):
  for part in dotted.split("."):
    cfg = cfg[part]
  return cfg


def _set(cfg, dotted: str, value) -> None:
  *parents, last = dotted.split(".")
  for part in parents:
    cfg = cfg[part]
  cfg[last] = value


def _bool(text: str) -> bool:
  t = text.strip().lower()
  if t in ("1", "true", "yes", "on"):
    return True
  if t in ("0", "false", "no", "off"):
    return False
  raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parser_for(default, name: str):
  """The argparse ``type`` for a leaf, from its default value."""
  if isinstance(default, bool):
    return _bool
  if isinstance(default, (tuple, list)):
    elem = type(default[0]) if default else str
    elem = _bool if elem is bool else elem

    def tuple_type(text: str):
      parts = [p.strip() for p in text.split(",") if p.strip()]
      try:
        return tuple(elem(p) for p in parts)
      except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"--{name}: {e}") from None
    return tuple_type
  if isinstance(default, float):
    return float
  if isinstance(default, int):
    return int
  return str


def _show(value) -> str:
  if isinstance(value, (tuple, list)):
    return ",".join(str(v) for v in value)
  return repr(value) if isinstance(value, str) else str(value)


def _help_for(module: ModuleType, name: str) -> str:
  helps = {**COMMON_HELP, **getattr(module, "HELP", {})}
  text = helps.get(name) or helps.get(name.split(".")[-1])
  if text is None:
    raise KeyError(f"{module.__name__}.HELP has no entry for field {name!r}: every flag needs "
                   f"a help text")
  return text


def build_parser(module: ModuleType, preset: str, prog: str | None = None):
  """The parser for ``module``'s config at ``preset`` (flags default to the preset's values)."""
  presets = tuple(module.PRESETS)
  cfg = module.get_config(preset)
  p = argparse.ArgumentParser(
      prog=prog, description=module.__doc__,
      usage=f"{prog or '%(prog)s'} [--preset={{{','.join(presets)}}}] [--FIELD=VALUE ...]",
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--preset", default=presets[0], choices=presets,
                 help=f"named starting configuration (default {presets[0]!r}); the flags below "
                      f"show the chosen preset's values")
  for name, default in _leaves(cfg):
    text = f"{_help_for(module, name)} (default: {_show(default)})"
    kind = _parser_for(default, name)
    if kind is _bool:   # --name, --name=false, --no_name
      p.add_argument(f"--{name}", dest=name, type=kind, default=None, help=text,
                     metavar="BOOL", nargs="?", const=True)
    else:
      p.add_argument(f"--{name}", dest=name, type=kind, default=None, help=text,
                     metavar="VALUE")
    if kind is _bool:
      p.add_argument(f"--no_{name}", dest=name, action="store_const", const=False,
                     help=argparse.SUPPRESS)
  return p, cfg


def parse(module: ModuleType, argv: Sequence[str] | None = None,
          prog: str | None = None) -> ml_collections.ConfigDict:
  """Resolves ``module``'s config from ``--preset`` and per-field flags; returns it locked.

  Unknown flags and values of the wrong type are errors that name the flag. Range checks
  belong to the config module's optional ``validate(config)`` (raising ``ValueError``), whose
  message the parser reports.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  presets = tuple(module.PRESETS)
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default=presets[0])
  known, _ = pre.parse_known_args(argv)
  parser, cfg = build_parser(module, known.preset if known.preset in presets else presets[0],
                             prog)
  args = parser.parse_args(argv)
  cfg = ml_collections.ConfigDict(cfg)   # a copy of the preset
  for name, _ in _leaves(cfg):
    value = getattr(args, name)
    if value is not None:
      try:
        _set(cfg, name, value)
      except TypeError as e:
        parser.error(f"--{name}: {e}")
  with cfg.unlocked():
    cfg.preset = args.preset
  validate = getattr(module, "validate", None)
  if validate is not None:
    try:
      validate(cfg)
    except ValueError as e:
      parser.error(str(e))
  cfg.lock()
  return cfg


def overrides(cfg: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with ``values`` set (dotted names as ``model__width``)."""
  out = ml_collections.ConfigDict(cfg)
  with out.unlocked():
    for key, value in values.items():
      _set(out, key.replace("__", "."), value)
  return out


def main(module: ModuleType, run, argv: Sequence[str] | None = None, *, prog: str):
  """An experiment's ``main``: parse ``module``'s config, pin the process to the cores of
  ``cpu_cores``, choose ``cpu_runtime``, give JAX one CPU device per core for ``cpu_devices``
  (each only where the config has the field) and start ``jax.distributed`` when it has
  ``num_processes`` and the flags or the cluster ask for it
  (:func:`gs_jax.distributed.from_config`), all before any computation, and return
  ``run(config)``; in a multi-process run an error ends the process at once
  (:func:`gs_jax.distributed.fail_fast`), so the others stop too."""
  cfg = parse(module, argv, prog=prog)
  from gs_jax.base import distributed
  if "num_processes" in cfg:   # first: use_cpu_devices may start JAX's backends
    distributed.from_config(cfg)
  from gs_jax.base import devices   # both before JAX starts its backends
  if "cpu_cores" in cfg:
    devices.use_cpu_cores(cfg.cpu_cores)
  if "cpu_runtime" in cfg:
    devices.use_cpu_runtime(cfg.cpu_runtime)
  if "cpu_devices" in cfg:
    devices.use_cpu_devices(cfg.cpu_devices)
  return distributed.fail_fast(run, cfg)   # a failing process must not keep the others waiting

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

A config holds its hyper-parameters at the top level, evaluation-only settings in an ``eval``
section and run settings (where and how it runs) in a ``run`` section (``configs/_run.py``);
the fields of both sections are flags without the section's prefix (``--out_dir``,
``--margin_n``), and :func:`overrides` sets them by the same names.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Any, Callable, Sequence

import ml_collections

from gs_jax.base import errors

COMMON_HELP = {
  "sd_lambda": "spectral decoupling coefficient on mean(logits^2) (0 = ERM); docs/protocols.md §4",
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
  "or fastest (legacy where it exists, else thunk, plus copy insertion by region analysis); "
  "gs_jax.devices.use_cpu_runtime",
  "cpu_dots": "library of XLA:CPU's matrix products: xla (its default; YNNPACK from jax 0.10) "
  "or eigen (as on jax 0.5; faster for the Colored MNIST full-batch step on jax 0.10); "
  "gs_jax.devices.use_cpu_dots",
  "cpu_cores": "pin the process to these cores: comma-separated indices into the cores it "
  "may use ('0', '1', '0,1'); empty: no pinning. Batch-1 training runs ~1.9× "
  "faster on one pinned core; give parallel runs different cores",
  "coordinator_address": "host:port of process 0 for a multi-process run (jax.distributed); "
  "empty: auto-detected on Slurm/TPU/MPI, else a single process",
  "num_processes": "number of processes of a multi-process run (0: auto-detect / one)",
  "process_id": "this process's index in [0, num_processes) (-1: auto-detect)",
  "dist_timeout_s": "a process silent this long counts as dead: the others exit non-zero",
}


# Sections whose fields are flags without the section's prefix (--out_dir, not --run.out_dir):
# gs_jax.experiment.run.SECTIONS (configs/_run.py).
FLAT_SECTIONS = ("run", "eval")


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = "", flag_prefix: str = ""):
  """``(flag name, dotted path, value)`` of every leaf."""
  for key in cfg.keys():
    value = cfg[key]
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      flat = not prefix and key in FLAT_SECTIONS
      yield from _leaves(value, path + ".", flag_prefix if flat else f"{flag_prefix}{key}.")
    else:
      yield f"{flag_prefix}{key}", path, value


def _flags(cfg):
  """``{flag name: (dotted path, default)}``; a flag name used twice is a config bug."""
  out: dict[str, tuple[str, Any]] = {}
  for name, dotted, value in _leaves(cfg):
    if name in out:
      raise KeyError(f"config field {dotted!r} and {out[name][0]!r} share the flag --{name}")
    out[name] = (dotted, value)
  return out


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
    first = type(default[0]) if default else str
    elem: Callable[[str], Any] = _bool if first is bool else first

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
    raise KeyError(
      f"{module.__name__}.HELP has no entry for field {name!r}: every flag needs a help text"
    )
  return text


def build_parser(module: ModuleType, preset: str, prog: str | None = None):
  """The parser for ``module``'s config at ``preset`` (flags default to the preset's values)."""
  presets = tuple(module.PRESETS)
  cfg = module.get_config(preset)
  p = argparse.ArgumentParser(
    prog=prog,
    description=module.__doc__,
    usage=f"{prog or '%(prog)s'} [--preset={{{','.join(presets)}}}] [--FIELD=VALUE ...]",
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "--preset",
    default=presets[0],
    choices=presets,
    help=f"named starting configuration (default {presets[0]!r}); the flags below "
    f"show the chosen preset's values",
  )
  groups = {
    "": p.add_argument_group("hyper-parameters (what the run computes; its fingerprint)"),
    "eval": p.add_argument_group("evaluation (a finished training is re-evaluated, not retrained)"),
    "run": p.add_argument_group("run (where and how it runs; never part of the fingerprint)"),
  }
  for name, (dotted, default) in _flags(cfg).items():
    text = f"{_help_for(module, name)} (default: {_show(default)})"
    kind = _parser_for(default, name)
    section = dotted.split(".")[0] if dotted.split(".")[0] in FLAT_SECTIONS else ""
    g = groups[section]
    if kind is _bool:  # --name, --name=false, --no_name
      g.add_argument(
        f"--{name}",
        dest=name,
        type=kind,
        default=None,
        help=text,
        metavar="BOOL",
        nargs="?",
        const=True,
      )
    else:
      g.add_argument(f"--{name}", dest=name, type=kind, default=None, help=text, metavar="VALUE")
    if kind is _bool:
      g.add_argument(
        f"--no_{name}", dest=name, action="store_const", const=False, help=argparse.SUPPRESS
      )
  return p, cfg


def parse(
  module: ModuleType,
  argv: Sequence[str] | None = None,
  prog: str | None = None,
  validate: Callable | None = None,
) -> ml_collections.ConfigDict:
  """Resolves ``module``'s config from ``--preset`` and per-field flags; returns it locked.

  Unknown flags and values of the wrong type are errors that name the flag. Range checks
  belong to the config module's optional ``validate(config)`` (raising ``ValueError``), whose
  message the parser reports; checks that need the library (class names, model names) to the
  experiment's ``validate`` argument, reported the same way (configs import ml_collections
  only).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  presets = tuple(module.PRESETS)
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default=presets[0])
  known, _ = pre.parse_known_args(argv)
  parser, cfg = build_parser(module, known.preset if known.preset in presets else presets[0], prog)
  args = parser.parse_args(argv)
  cfg = ml_collections.ConfigDict(cfg)  # a copy of the preset
  for name, (dotted, _) in _flags(cfg).items():
    value = getattr(args, name)
    if value is not None:
      try:
        _set(cfg, dotted, value)
      except TypeError as e:
        parser.error(f"--{name}: {e}")
  with cfg.unlocked():
    cfg.preset = args.preset
  for check in (getattr(module, "validate", None), validate):
    if check is not None:
      try:
        check(cfg)
      except ValueError as e:
        parser.error(str(e))
  cfg.lock()
  return cfg


def overrides(cfg: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with ``values`` set, named as their flags (``out_dir`` sets
  ``run.out_dir``; dotted names as ``model__width``)."""
  out = cfg.copy_and_resolve_references()  # deep: sections are ConfigDicts too
  flags = _flags(out)
  with out.unlocked():
    for key, value in values.items():
      name = key.replace("__", ".")
      _set(out, flags[name][0] if name in flags else name, value)
  return out


def main(
  module: ModuleType,
  run,
  argv: Sequence[str] | None = None,
  *,
  prog: str,
  validate: Callable | None = None,
):
  """An experiment's ``main``: parse ``module``'s config, pin the process to the cores of
  ``cpu_cores``, choose ``cpu_runtime``, give JAX one CPU device per core for ``cpu_devices``
  (each only where the config has the field) and start ``jax.distributed`` when it has
  ``num_processes`` and the flags or the cluster ask for it
  (:func:`gs_jax.distributed.from_config`), all before any computation, and return
  ``run(config)``; in a multi-process run an error ends the process at once
  (:func:`gs_jax.distributed.fail_fast`), so the others stop too. A
  :class:`gs_jax.base.errors.UserError` (missing or malformed data, a directory of another run)
  prints ``error: <message>`` and exits with status 2, without a traceback."""
  cfg = parse(module, argv, prog=prog, validate=validate)
  setup(cfg)
  from gs_jax.base import distributed

  try:  # a failing process must not keep the others waiting (fail_fast)
    return distributed.fail_fast(run, cfg)
  except errors.UserError as e:  # the user can fix it: the message, no traceback
    print(f"error: {e}", file=sys.stderr)
    raise SystemExit(2) from None


def setup(cfg: ml_collections.ConfigDict) -> None:
  """Process-wide JAX settings from ``cfg.run``, each where the config has the field, before
  JAX's first computation: ``jax.distributed`` (:func:`gs_jax.base.distributed.from_config`),
  core pinning, the XLA:CPU runtime, CPU devices. Experiments never change global JAX state
  inside ``run()`` (numerical settings such as a matmul precision are scoped to their
  computation with a context manager)."""
  from gs_jax.base import devices, distributed

  r = cfg.get("run", ml_collections.ConfigDict())
  if "num_processes" in r:  # first: use_cpu_devices may start JAX's backends
    distributed.from_config(r)
  if "cpu_cores" in r:
    devices.use_cpu_cores(r.cpu_cores)
  if "cpu_runtime" in r:
    devices.use_cpu_runtime(r.cpu_runtime)
  if "cpu_dots" in r:
    devices.use_cpu_dots(r.cpu_dots)
  if "cpu_devices" in r:
    devices.use_cpu_devices(r.cpu_devices)

"""gs-jax: gradient starvation and spectral decoupling in JAX (Pezeshki et al., NeurIPS 2021).

The package is layered; a module imports only from its own layer or the layers before it
(``tests/test_layers.py`` checks every import):

==============  ===========================================================================
``base``        JAX runtime and plain helpers: ``_compat``, ``batching``, ``devices``,
                ``distributed``, ``errors``, ``jsonio``, ``paper``, ``stats``, ``types``
``nn``          networks and what acts on them: ``models``, ``losses``, ``attacks``,
                ``boundary``, ``convert``
``theory``      the paper's mathematics: ``dual`` (eqs 5–10, 17), ``ntk`` (features, eq 3)
``data``        datasets: ``toy``, ``cifar``, ``colored_mnist``, ``celeba``, ``dominoes``,
                ``stream``, ``paths``
``training``    train states, objectives, loops, sharding, probes
``tasks``       one module per paper experiment's library logic: ``moons``,
                ``moons_dynamics``, ``cmnist``, ``spurious``, ``starvation``,
                ``cifar_features``, ``released_eval``
``experiment``  running experiments: ``cli``, ``run`` (one run directory: fingerprint,
                resume, provenance), ``results``, ``checkpoint``, ``figures``
==============  ===========================================================================

The flat names of earlier releases (``gs_jax.dual``, ``gs_jax.ntk``, ``gs_jax.losses``,
``gs_jax.train`` …) stay importable: they are aliases of the modules above (the same module
objects), so ``gs_jax.dual.fixed_point(U, S, lam)`` in a notebook keeps working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# Flat name of earlier releases -> the module it is now.
_ALIASES = {
  "_compat": "gs_jax.base._compat",
  "batching": "gs_jax.base.batching",
  "devices": "gs_jax.base.devices",
  "distributed": "gs_jax.base.distributed",
  "paper": "gs_jax.base.paper",
  "models": "gs_jax.nn.models",
  "losses": "gs_jax.nn.losses",
  "attacks": "gs_jax.nn.attacks",
  "boundary": "gs_jax.nn.boundary",
  "convert": "gs_jax.nn.convert",
  "dual": "gs_jax.theory.dual",
  "ntk": "gs_jax.theory.ntk",
  "train": "gs_jax.training",
  "moons": "gs_jax.tasks.moons",
  "moons_dynamics": "gs_jax.tasks.moons_dynamics",
  "cmnist": "gs_jax.tasks.cmnist",
  "spurious": "gs_jax.tasks.spurious",
  "starvation": "gs_jax.tasks.starvation",
  "cli": "gs_jax.experiment.cli",
  "results": "gs_jax.experiment.results",
  "checkpoint": "gs_jax.experiment.checkpoint",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Resolves ``gs_jax.<flat name>`` to the module of :data:`_ALIASES` (not a copy)."""

  def find_spec(self, fullname, path=None, target=None):
    prefix, _, name = fullname.partition(".")
    if prefix == __name__ and name in _ALIASES:
      return importlib.util.spec_from_loader(fullname, self)
    return None

  def create_module(self, spec):
    return importlib.import_module(_ALIASES[spec.name.partition(".")[2]])

  def exec_module(self, module):
    pass  # already executed under its own name


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
  sys.meta_path.append(_AliasFinder())


def __getattr__(name: str):
  if name in _ALIASES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

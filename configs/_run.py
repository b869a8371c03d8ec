"""The ``run`` section every experiment config has: where and how a run executes, never what it
computes. Its fields are flags without the section prefix (``--out_dir``, ``--overwrite`` …;
:mod:`gs_jax.experiment.cli`), and they are left out of the run's fingerprint
(:mod:`gs_jax.experiment.run`): changing them never invalidates a checkpoint or a result.

An ``eval`` section, where a config has one, is the same for evaluation-only settings: flags
without prefix, and outside the fingerprint of *training* (a trained network is re-evaluated
under new values instead of retrained); they are part of the results' identity.
"""

from __future__ import annotations

import ml_collections

# gs_jax.base.distributed.DEFAULT_TIMEOUT_S (configs stay free of JAX; a test checks equality).
DIST_TIMEOUT_S = 60


def run_section(
  *,
  data: bool = False,
  checkpoint: bool = False,
  cpu: bool = False,
  distributed: bool = False,
  progress: bool = True,
  **extra,
) -> ml_collections.ConfigDict:
  """The run section: ``out_dir``, ``overwrite``, ``progress`` always; ``data_dir`` (``data``),
  ``checkpoint`` (write a checkpoint every epoch), ``cpu_devices/cpu_runtime/cpu_cores``
  (``cpu``: defaults 1, thunk, no pinning) and the ``jax.distributed`` fields
  (``distributed``) where the experiment has them; ``extra`` adds or overrides fields."""
  fields = dict(out_dir="", overwrite=False, progress=progress)
  if data:
    fields["data_dir"] = ""
  if checkpoint:
    fields["checkpoint"] = True
  if cpu:
    fields.update(cpu_devices=1, cpu_runtime="thunk", cpu_cores="")
  if distributed:
    fields.update(
      coordinator_address="", num_processes=0, process_id=-1, dist_timeout_s=DIST_TIMEOUT_S
    )
  fields.update(extra)
  return ml_collections.ConfigDict(fields)

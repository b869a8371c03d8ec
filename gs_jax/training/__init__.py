"""Layer 4: training. ``state`` (train state, optimizers, the pure step, full-batch ``fit``),
``objectives``, ``seeds`` (vmapped seeds/sweeps), ``loops`` (resumable minibatch epochs),
``sharding`` (device meshes) and ``probes`` (measurements inside the compiled loop).

Everything public is re-exported here, so ``gs_jax.training.fit_minibatch`` (and the earlier
``gs_jax.train.fit_minibatch``) name the same function.
"""

from gs_jax.training.loops import Callbacks, Diverged, LoopOptions, fit_minibatch, make_epoch_runner
from gs_jax.training.objectives import binary_objective, softmax_objective, softmax_ridge_objective
from gs_jax.training.probes import PROBE, field_ascent, probe_rows, probe_schedule, with_probe
from gs_jax.training.seeds import make_seed_init, make_seed_trainer, objective_at, seed_sharding
from gs_jax.training.sharding import batch_sharded, data_mesh, replicated
from gs_jax.training.state import (
  Objective,
  TrainState,
  apply_model,
  fit,
  init_state,
  make_optimizer,
  make_state,
  make_train_step,
)

__all__ = [
  "Callbacks",
  "LoopOptions",
  "Diverged",
  "fit_minibatch",
  "make_epoch_runner",
  "binary_objective",
  "softmax_objective",
  "softmax_ridge_objective",
  "PROBE",
  "field_ascent",
  "probe_rows",
  "probe_schedule",
  "with_probe",
  "make_seed_init",
  "make_seed_trainer",
  "objective_at",
  "seed_sharding",
  "batch_sharded",
  "data_mesh",
  "replicated",
  "Objective",
  "TrainState",
  "apply_model",
  "fit",
  "init_state",
  "make_optimizer",
  "make_state",
  "make_train_step",
]

"""Errors a user can fix. The command line (:func:`gs_jax.experiment.cli.main`) prints their
message and exits non-zero without a traceback; every other exception is a bug and keeps its
traceback."""
from __future__ import annotations


class UserError(Exception):
  """An error the user can fix (bad input, missing data, a directory of another run)."""


class RunMismatch(UserError, ValueError):
  """``out_dir`` holds results or checkpoints of another configuration."""

"""Errors a user can fix, told apart from bugs.

:class:`UserError` marks a failure whose cause lies outside the code: a missing data folder, a
malformed ``.npz``, a file of the wrong kind, a run directory of another configuration. An
experiment's command line (:func:`gs_jax.experiment.cli.main`) prints its message as
``error: <message>`` and exits with status 2, without a traceback; any other exception is a bug
and keeps its traceback.

Each subclass also inherits the builtin type such code raised before, so callers (and tests)
that catch ``FileNotFoundError`` or ``ValueError`` keep working. A message names the path and
says what was expected there.
"""

from __future__ import annotations


class UserError(Exception):
  """An error the user can fix; the CLI prints its message and exits non-zero without a
  traceback. Bugs keep theirs: raise this only when the message tells the user what to do."""


class MissingDataError(UserError, FileNotFoundError):
  """A data file or folder that does not exist where the user (or ``$GS_DATA_DIR``) said."""


class BadFileError(UserError, ValueError):
  """A file that exists but does not hold what it should (wrong keys, shapes, dtypes, format)."""


class RunMismatch(UserError, ValueError):
  """``out_dir`` holds results or checkpoints of another configuration."""

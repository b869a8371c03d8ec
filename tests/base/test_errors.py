"""gs_jax.base.errors: user errors keep the built-in types callers catch. (How they end a command
line: tests/experiment/test_cli.py; the loaders' messages: tests/data/; the experiments'
command lines: tests/experiments/test_user_errors.py.)"""

from gs_jax.base import errors


def test_user_errors_keep_the_builtin_types_callers_catch():
  assert issubclass(errors.MissingDataError, FileNotFoundError)
  assert issubclass(errors.BadFileError, ValueError)
  for cls in (errors.MissingDataError, errors.BadFileError):
    assert issubclass(cls, errors.UserError)
    assert str(cls("/a/path: what was expected")) == "/a/path: what was expected"

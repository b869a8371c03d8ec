"""gs_jax.experiment.cli: flags come from config fields and presets, bad flags name the problem,
every flag and config module has help, and main turns a user error into a message (bugs keep
their traceback)."""

import importlib
import types

import ml_collections
import pytest

from gs_jax.experiment import cli
from gs_jax.base import errors


def _module(**help_):
  def get_config(preset="a"):
    return ml_collections.ConfigDict(
      dict(
        sd_lambda=0.0 if preset == "a" else 0.5,
        seeds=3,
        name="x",
        flag=True,
        widths=(1, 2),
        nested=dict(lr=0.1),
        out_dir="runs/t",
      )
    )

  def validate(cfg):
    if cfg.seeds < 1:
      raise ValueError("--seeds must be >= 1")

  return types.SimpleNamespace(
    __name__="fake",
    __doc__="Fake experiment.",
    PRESETS=("a", "b"),
    get_config=get_config,
    validate=validate,
    HELP={"name": "a name", "flag": "a flag", "widths": "widths", "lr": "learning rate", **help_},
  )


def _failing_module(run_error):
  """A minimal config module and a ``run`` that raises ``run_error``."""
  m = types.ModuleType("fake_config")
  m.PRESETS = ("only",)
  m.HELP = {"x": "a number"}
  m.get_config = lambda preset="only": ml_collections.ConfigDict({"x": 1})

  def run(cfg):
    raise run_error

  return m, run


def test_flags_come_from_config_fields_and_presets():
  mod = _module()
  cfg = cli.parse(mod, [])
  assert cfg.sd_lambda == 0.0 and cfg.preset == "a" and cfg.flag is True
  cfg = cli.parse(
    mod, ["--preset=b", "--seeds=5", "--widths=4,5,6", "--nested.lr=0.01", "--no_flag", "--name=y"]
  )
  assert (cfg.sd_lambda, cfg.seeds, cfg.widths, cfg.nested.lr, cfg.flag, cfg.name) == (
    0.5,
    5,
    (4, 5, 6),
    0.01,
    False,
    "y",
  )
  assert cli.parse(mod, ["--flag=false"]).flag is False
  assert cli.parse(mod, ["--flag"]).flag is True
  # ints are accepted where floats are expected; the result stays a float
  assert isinstance(cli.parse(mod, ["--sd_lambda=1"]).sd_lambda, float)
  with pytest.raises(AttributeError):  # locked: no new fields by accident
    cli.parse(mod, []).new_field = 1


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--seeds=0"], "--seeds must be >= 1"),
    (["--seeds=1.5"], "invalid int value"),
    (["--flag=maybe"], "expected true/false"),
    (["--lam=1"], "unrecognized arguments"),
    (["--preset=c"], "invalid choice"),
  ],
)
def test_bad_flags_name_the_problem(argv, message, capsys):
  with pytest.raises(SystemExit):
    cli.parse(_module(), argv)
  assert message in capsys.readouterr().err


def test_every_flag_needs_help():
  mod = _module()
  del mod.HELP["name"]
  with pytest.raises(KeyError, match="name"):
    cli.parse(mod, [])


def test_every_config_module_has_help_and_docstring_with_commands():
  import pkgutil

  import configs

  for info in pkgutil.iter_modules(configs.__path__):
    if info.name.startswith("_"):  # shared sections (configs/_run.py), not an experiment
      continue
    mod = importlib.import_module(f"configs.{info.name}")
    assert "python -m" in mod.__doc__, info.name
    for preset in mod.PRESETS:
      parser, _ = cli.build_parser(mod, preset)  # raises if a field lacks help
      assert "--preset" in parser.format_help()


def test_cli_main_turns_a_user_error_into_a_message_and_bugs_keep_their_traceback(capsys):
  m, run = _failing_module(errors.MissingDataError("/some/where: no such file"))
  with pytest.raises(SystemExit) as e:
    cli.main(m, run, [], prog="fake")
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: /some/where: no such file\n"
  m, run = _failing_module(ZeroDivisionError("a bug"))
  with pytest.raises(ZeroDivisionError):  # not a user error: the traceback stays
    cli.main(m, run, [], prog="fake")

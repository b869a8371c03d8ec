"""The shared config flags (gs_jax.cli) and results writer (gs_jax.results)."""

import json
import types

import ml_collections
import numpy as np
import pytest

from gs_jax.experiment import cli, results


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
  import importlib
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


def test_mean_std_is_the_sample_std():
  out = results.mean_std([1.0, 2.0, 3.0, 4.0])
  assert out["mean"] == 2.5 and out["n"] == 4
  np.testing.assert_allclose(out["std"], np.sqrt(5.0 / 3.0), rtol=1e-15)  # Σ(x−x̄)²/(n−1)
  assert results.mean_std([7.0])["std"] == 0.0
  with pytest.raises(ValueError):
    results.mean_std([])


def test_run_writer_schema_and_log(tmp_path):
  cfg = ml_collections.ConfigDict(dict(a=1, b=(1, 2)))
  w = results.RunWriter(tmp_path / "run", "demo", cfg)
  w.log(1, loss=np.float32(0.5))
  w.log_history({"loss": np.arange(6.0), "acc": np.ones((6, 2))}, every=3, start=10)
  path = w.write({"acc": 0.9, "bad": float("nan")}, {"acc": np.array([0.8, 1.0])}, extra=1)
  res = json.loads(path.read_text())
  assert res["experiment"] == "demo" and res["config"] == {"a": 1, "b": [1, 2]}
  assert res["std_convention"] == results.STD_CONVENTION and res["extra"] == 1
  assert res["metrics"] == {"acc": 0.9, "bad": "nan"} and res["per_seed"] == {"acc": [0.8, 1.0]}
  for key in (
    "git_commit",
    "git_dirty",
    "command",
    "packages",
    "devices",
    "start_time",
    "end_time",
  ):
    assert key in res["provenance"]
  lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert lines == [
    {"step": 1, "loss": 0.5},
    {"step": 11, "loss": 0.0, "acc": [1.0, 1.0]},
    {"step": 14, "loss": 3.0, "acc": [1.0, 1.0]},
  ]
  assert not list((tmp_path / "run").glob("*.tmp"))


def test_data_dir_resolution(tmp_path, monkeypatch):
  from gs_jax.data import paths

  monkeypatch.delenv(paths.ENV_VAR, raising=False)
  assert paths.resolve(None, "mnist") is None
  assert paths.resolve("given", "mnist") == "given"
  (tmp_path / "mnist").mkdir()
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert paths.resolve(None, "mnist") == str(tmp_path / "mnist")
  assert paths.resolve(None, "cifar100") is None  # no copy: tfds.load


def test_provenance_command_has_no_machine_path():
  import os
  import subprocess
  import sys

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = "from gs_jax import results; print(results.command_line())"
  out = subprocess.run(
    [sys.executable, "-c", code, "--x=1"], cwd=repo, capture_output=True, text=True, check=True
  ).stdout.strip()
  assert out == "python --x=1" or out == "-c --x=1", out
  assert repo not in out


def test_wilson_interval_matches_the_closed_form_and_known_values():
  from gs_jax.experiment import results

  # Wilson 95% for 8/10 (Newcombe 1998, Table I: 0.4902–0.9433)
  lo, hi = results.wilson_interval(8, 10)
  np.testing.assert_allclose([lo, hi], [0.4902, 0.9433], atol=1e-4)
  lo, hi = results.wilson_interval(0, 16)
  assert lo == 0.0 and 0.19 < hi < 0.21  # z²/(n+z²) = 0.1936
  np.testing.assert_allclose(hi, 1.96**2 / (16 + 1.96**2), rtol=1e-3)
  assert results.wilson_interval(0, 0) == (0.0, 1.0)


def test_run_section_fields_are_flags_without_prefix_and_outside_the_fingerprint(tmp_path):
  from configs import cifar as cifar_configs
  from gs_jax.experiment import run as run_lib

  cfg = cli.parse(cifar_configs, ["--out_dir=x", "--no_progress", "--margin_n=7"])
  assert cfg.run.out_dir == "x" and cfg.run.progress is False and cfg.eval.margin_n == 7
  other = cli.overrides(cfg, out_dir="y", cpu_devices=2, margin_n=3)  # routed by flag name
  assert other.run.out_dir == "y" and other.run.cpu_devices == 2
  assert run_lib.fingerprint(run_lib.hyperparameters(cfg)) != run_lib.fingerprint(
    run_lib.hyperparameters(other)
  )  # eval values name the results
  assert run_lib.training_settings(cfg) == run_lib.training_settings(other)  # not training
  changed = cli.overrides(cfg, sd_lambda=0.5)
  assert run_lib.training_settings(changed) != run_lib.training_settings(cfg)


def test_distributed_timeout_default_matches_the_library():
  from configs import _run
  from gs_jax.base import distributed

  assert _run.DIST_TIMEOUT_S == distributed.DEFAULT_TIMEOUT_S


def test_run_refuses_other_training_and_records_every_start(tmp_path, capsys):
  import ml_collections

  from configs._run import run_section
  from gs_jax.base import errors
  from gs_jax.experiment.run import Run

  def config(lr, margin=1):
    return ml_collections.ConfigDict(
      dict(
        lr=lr,
        eval=ml_collections.ConfigDict(dict(margin=margin)),
        run=run_section(out_dir=str(tmp_path / "r")),
      )
    )

  r = Run(config(0.1), "demo")
  assert r.previous is None
  r.write({"m": 1})
  r2 = Run(config(0.1, margin=2), "demo")  # new eval values: same training
  assert r2.previous["metrics"] == {"m": 1}
  r2.write({"m": 2})
  calls = r2.read()["provenance"]["calls"]
  assert len(calls) == 2 and calls[1]["resumed"] is True and calls[0]["resumed"] is False
  with pytest.raises(errors.RunMismatch, match="lr: 0.1 -> 0.2"):
    Run(config(0.2), "demo")
  over = config(0.2)
  over.run.overwrite = True
  r3 = Run(over, "demo")  # --overwrite: starts afresh
  assert r3.previous is None and not (tmp_path / "r" / "results.json").exists()
  r3.write({"m": 3})
  assert len(r3.read()["provenance"]["calls"]) == 1


def test_dirty_flag_looks_at_code_not_at_committed_results(tmp_path):
  """A run that replaces a committed results file (or runs after one that did) runs the
  committed code: the flag ignores docs/results, and sees any other tracked change."""
  import subprocess

  def git(*args):
    subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

  git("init", "-q")
  (tmp_path / "docs" / "results" / "a").mkdir(parents=True)
  (tmp_path / "docs" / "results" / "a" / "results.json").write_text("{}")
  (tmp_path / "code.py").write_text("x = 1\n")
  git("add", "-A")
  git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
  assert results.code_dirty(tmp_path) is False
  (tmp_path / "docs" / "results" / "a" / "results.json").write_text('{"new": 1}')
  (tmp_path / "untracked.py").write_text("")
  assert results.code_dirty(tmp_path) is False
  (tmp_path / "code.py").write_text("x = 2\n")
  assert results.code_dirty(tmp_path) is True

"""gs_jax.experiment.run: run-section fields are flags without prefix and stay outside the
fingerprint; Run refuses another run's training and records every start."""

import ml_collections
import pytest

from gs_jax.experiment import cli


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


def test_run_refuses_other_training_and_records_every_start(tmp_path, capsys):

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


def test_parts_skip_finished_settings_and_checkpoint_each_under_its_digest(tmp_path):
  """An experiment made of parts (whole=False): a part is finished only for the settings it
  ran with; a changed part gets a checkpoint folder of its own; the directory is never
  refused for other hyper-parameters."""
  import ml_collections

  from configs._run import run_section
  from gs_jax.experiment.run import Run, fingerprint

  def config(steps):
    return ml_collections.ConfigDict(dict(steps=steps, run=run_section(out_dir=str(tmp_path))))

  r = Run(config(10), "demo", whole=False)
  a, b = {"panel": "a", "steps": 10}, {"panel": "b", "steps": 10}
  assert not r.finished("a", a)
  ckpt = r.checkpointer("a", a)
  assert ckpt.directory.endswith(f"a-{fingerprint(a)}")
  ckpt.close()
  r.mark_finished("a", a)
  r.write({"a": 1})
  r2 = Run(config(20), "demo", whole=False)  # other hyper-parameters: not refused
  assert r2.finished("a", a) and not r2.finished("b", b)
  assert not r2.finished("a", {**a, "steps": 20})
  assert r2.checkpoint_dir("a", {**a, "steps": 20}) != r2.checkpoint_dir("a", a)
  r2.remove_checkpoint("a", a)
  assert not r2.checkpoint_dir("a", a).exists()

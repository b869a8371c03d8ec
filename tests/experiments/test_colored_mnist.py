"""experiments.colored_mnist end to end (reduced runs), resume after a kill, --overwrite, the
command line, and the full Table 2 / Figure 3 (slow)."""

import functools
import json

import numpy as np
import pytest

from configs import colored_mnist as configs
from experiments import colored_mnist as exp
from gs_jax.experiment import checkpoint, cli, results
from gs_jax.base import errors, paper
from gs_jax.data.colored_mnist import VARIANTS, load_mnist_train

from tests._helpers import fake_mnist, real_data


# In-process runs keep the test process's JAX devices (the CLI would add one per core).
ONE_DEVICE = ("--cpu_devices=1", "--no_progress")


@pytest.fixture(scope="module")
def small_mnist():
  """The first 3,600 of 60,000 random MNIST-shaped images: a 3,000-image training pool and a
  600-image test pool."""
  images, digits = fake_mnist()
  return images[:3600], digits[:3600]


def config(out_dir, *flags):
  return cli.parse(configs, [*flags, f"--out_dir={out_dir}", *ONE_DEVICE])


def read_log(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


# Computed by the experiment before it was converted to a config (commit dd71a0f: ``--method=M
# --restarts=2 --steps=12 --anneal_steps=6 --n_train=1000 --n_test=300 --log_every=11``, one
# CPU device, jax 0.5.3): per restart, the training NLL at step 11 and the entropy on coloured
# blanks of the final model. The converted code gives these bit for bit on the same machine;
# rtol 1e-5 leaves room for other BLAS builds, not for a changed objective or schedule.
BEFORE_CONVERSION = {
  "erm": ([0.5812515616416931, 0.5636696815490723], [0.6901317238807678, 0.6874895095825195]),
  "sd": ([0.5939383506774902, 0.5753639936447144], [0.6911485195159912, 0.6889855861663818]),
  "irm": ([0.4566616117954254, 0.4528147280216217], [0.6105550527572632, 0.5892059803009033]),
  "rex": ([0.4484529495239258, 0.44354209303855896], [0.6161161661148071, 0.5953760743141174]),
}


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
  real_data("mnist", "mnist.npz")
  out = tmp_path_factory.mktemp("cmnist_full")
  return {
    m: exp.run(config(out / m, f"--preset={m}", f"--data_dir={real_data('mnist')}"))
    for m in ("erm", "sd", "irm", "rex", "oracle")
  }


@pytest.mark.integration
@pytest.mark.parametrize("preset", configs.PRESETS)
def test_reduced_run_every_preset(preset, small_mnist, tmp_path, capsys):
  flags = (
    f"--preset={preset}",
    "--seeds=2",
    "--steps=6",
    "--anneal_steps=3",
    "--n_train=300",
    "--n_test=120",
    "--log_every=2",
    "--chunk=4",
  )
  res = exp.run(config(tmp_path, *flags), mnist=small_mnist)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved == res and saved["experiment"] == "colored_mnist"
  assert saved["std_convention"] == results.STD_CONVENTION
  assert saved["config"]["preset"] == preset
  assert (saved["n_train"], saved["n_test"]) == (300, 120)
  seeds, metrics = saved["per_seed"], saved["metrics"]
  for key in ("train_acc", "test_acc", "last_step_train_acc", "last_step_test_acc"):
    assert len(seeds[key]) == 2 and all(0.0 <= a <= 1.0 for a in seeds[key])
    assert metrics[key] == results.mean_std(seeds[key])
  assert set(seeds["variants"]) == set(VARIANTS)
  for v in seeds["variants"].values():
    assert all(0.0 <= h <= np.log(2) + 1e-6 for h in v["entropy"])
  # the coloured-digits variant is the test environment
  assert seeds["variants"]["color_digits"]["accuracy"] == pytest.approx(seeds["test_acc"])
  assert saved["history"]["step"] == [0, 2, 4]
  assert np.all(np.isfinite(saved["history"]["train_nll"]))
  # restarts differ in their initialisation
  assert saved["history"]["train_nll"][0][1] != saved["history"]["train_nll"][1][1]
  assert saved["table"].splitlines()[0].startswith("step")
  # metrics.jsonl: seed means every log_every steps, written chunk by chunk
  log = read_log(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in log] == [0, 2, 4]
  np.testing.assert_allclose(
    [r["train_nll"] for r in log], np.mean(saved["history"]["train_nll"], axis=0), rtol=1e-6
  )
  # the same command again: found, not recomputed
  capsys.readouterr()
  assert exp.run(config(tmp_path, *flags), mnist=small_mnist) == saved
  assert "not recomputed" in capsys.readouterr().out


@pytest.mark.integration
def test_killed_run_resumes_to_the_same_numbers(small_mnist, tmp_path, monkeypatch):
  """A run killed after its second checkpoint and started again with the same command ends
  with exactly the numbers (and the metrics log) of an uninterrupted run."""
  flags = (
    "--preset=irm",
    "--seeds=2",
    "--steps=14",
    "--anneal_steps=5",
    "--n_train=300",
    "--n_test=120",
    "--log_every=2",
    "--chunk=4",
  )
  whole = exp.run(config(tmp_path / "whole", *flags), mnist=small_mnist)
  assert whole["timing_s"]["resumed_from_step"] == 0

  class Killed(Exception):
    pass

  log = results.RunWriter.log

  def log_until_step_8(self, step, **m):
    if step >= 8:  # in the third chunk's on_chunk, before its checkpoint is saved
      raise Killed
    log(self, step, **m)

  monkeypatch.setattr(results.RunWriter, "log", log_until_step_8)
  monkeypatch.setattr(
    checkpoint,
    "Checkpointer",  # Run.checkpointer builds it
    functools.partial(checkpoint.Checkpointer, every_seconds=0.0),
  )
  out = tmp_path / "killed"
  with pytest.raises(Killed):
    exp.run(config(out, *flags), mnist=small_mnist)
  assert not (out / "results.json").exists()
  assert checkpoint.Checkpointer(out / "ckpt").latest_step() == 8
  monkeypatch.setattr(results.RunWriter, "log", log)
  resumed = exp.run(config(out, *flags), mnist=small_mnist)
  assert resumed["timing_s"]["resumed_from_step"] == 8
  assert resumed["per_seed"] == whole["per_seed"]
  assert resumed["history"] == whole["history"]
  assert read_log(out / "metrics.jsonl") == read_log(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.integration
def test_other_settings_in_the_same_out_dir_need_overwrite(small_mnist, tmp_path):
  flags = ("--preset=erm", "--seeds=2", "--steps=3", "--n_train=200", "--n_test=100")
  exp.run(config(tmp_path, *flags), mnist=small_mnist)
  with pytest.raises(errors.RunMismatch, match="lr"):  # the CLI prints it, exit 2
    exp.run(config(tmp_path, *flags, "--lr=0.01"), mnist=small_mnist)
  res = exp.run(config(tmp_path, *flags, "--lr=0.01", "--overwrite"), mnist=small_mnist)
  assert res["config"]["lr"] == 0.01
  assert [r["step"] for r in read_log(tmp_path / "metrics.jsonl")] == [0]


@pytest.mark.integration
def test_restart_zero_is_the_same_with_resampled_data(small_mnist, tmp_path):
  """Restart 0 with --resample_data uses data seed 0 and init key 0, exactly as restart 0 of
  the shared-data run: the two (differently compiled) runs must agree on it and only on it."""
  flags = (
    "--preset=irm",
    "--seeds=2",
    "--steps=4",
    "--anneal_steps=2",
    "--n_train=200",
    "--n_test=100",
  )
  a = exp.run(config(tmp_path / "a", *flags), mnist=small_mnist)
  c = exp.run(config(tmp_path / "c", *flags, "--resample_data"), mnist=small_mnist)
  np.testing.assert_allclose(c["history"]["train_nll"][0], a["history"]["train_nll"][0], rtol=1e-5)
  assert c["per_seed"]["test_acc"][0] == pytest.approx(a["per_seed"]["test_acc"][0])
  assert not np.allclose(c["history"]["train_nll"][1], a["history"]["train_nll"][1])


@pytest.mark.integration
@pytest.mark.parametrize("preset", sorted(BEFORE_CONVERSION))
def test_same_numbers_as_before_the_conversion(preset, mnist_dir, tmp_path):
  res = exp.run(
    config(
      tmp_path,
      f"--preset={preset}",
      "--seeds=2",
      "--steps=12",
      "--anneal_steps=6",
      "--n_train=1000",
      "--n_test=300",
      "--log_every=11",
      f"--data_dir={mnist_dir}",
    )
  )
  nll, entropy = BEFORE_CONVERSION[preset]
  assert res["history"]["step"] == [0, 11]
  np.testing.assert_allclose([h[-1] for h in res["history"]["train_nll"]], nll, rtol=1e-5)
  np.testing.assert_allclose(
    res["per_seed"]["variants"]["color_blank"]["entropy"], entropy, rtol=1e-5
  )


@pytest.mark.integration
def test_erm_learns_colour_and_oracle_does_not(mnist_dir, tmp_path):
  """A short run already shows the shortcut: ERM fits colour (test ≪ 50%), the oracle cannot."""
  images, digits = load_mnist_train(mnist_dir)
  mnist = images[:3600], digits[:3600]
  flags = ("--seeds=2", "--steps=25", "--n_train=2000", "--n_test=600")
  erm = exp.run(config(tmp_path / "erm", "--preset=erm", *flags), mnist=mnist)["metrics"]
  oracle = exp.run(config(tmp_path / "oracle", "--preset=oracle", *flags), mnist=mnist)
  assert erm["train_acc"]["mean"] > 0.8
  assert erm["test_acc"]["mean"] < 0.3
  # colour-only model: coloured blank images are classified by colour (≈ 10% correct)
  assert erm["variants"]["color_blank"]["accuracy"]["mean"] < 0.2
  # the oracle sees no colour: coloured and grayscale variants give identical predictions
  v = oracle["per_seed"]["variants"]
  assert v["color_blank"] == v["gray_blank"]
  assert v["color_digits"] == v["gray_digits"]
  assert oracle["metrics"]["test_acc"]["mean"] > 0.6


def test_bad_flags_are_rejected(capsys):
  for flags in (
    ["--objective=dro"],
    ["--preset=sd", "--sd_lambda=0"],
    ["--seeds=0"],
    ["--preset=rex", "--rex_form=mse"],
    ["--preset=irm", "--penalty_weight=0"],
    ["--restarts=3"],
  ):
    with pytest.raises(SystemExit):  # library checks: the experiment's validate
      cli.parse(configs, flags, validate=exp.validate)
  assert "--restarts" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
  with pytest.raises(SystemExit):
    exp.main(["--help"])
  out = capsys.readouterr().out
  for flag in (
    "--preset",
    "--seeds",
    "--steps",
    "--lr",
    "--hidden",
    "--sd_lambda",
    "--l2_weight",
    "--data_dir",
    "--out_dir",
    "--n_train",
    "--rex_form",
    "--overwrite",
    "--resample_data",
  ):
    assert flag in out


def test_oracle_preset_has_the_released_settings():
  """IRM's reproduce_paper_results.sh, 'ERM, grayscale model (oracle)'."""
  c = configs.get_config("oracle")
  assert (c.objective, c.grayscale, c.hidden, c.steps) == ("erm", True, 83, 101)
  assert (c.lr, c.l2_weight) == (0.0028171488133821726, 0.0008602868865288383)
  assert c.penalty_weight == 0.0 and c.resample_data


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("method", ["erm", "sd", "irm", "rex", "oracle"])
def test_full_table2(full_runs, method):
  """Test accuracy within 2 paper standard deviations of Table 2 (the claim of
  docs/experiments/colored_mnist.md); train accuracy, which the docs do not claim so close
  (V-REx's is high), within 3 paper standard deviations + 1 point."""
  m = full_runs[method]["metrics"]
  mean, std = paper.TABLE2[method]["test"]
  assert abs(100 * m["test_acc"]["mean"] - mean) <= 2 * std
  mean, std = paper.TABLE2[method]["train"]
  assert abs(100 * m["train_acc"]["mean"] - mean) <= 3 * std + 1.0


@pytest.mark.integration
@pytest.mark.slow
def test_full_figure3_pattern(full_runs):
  v = {m: full_runs[m]["metrics"]["variants"] for m in ("erm", "sd", "irm")}
  acc = lambda m, k: 100 * v[m][k]["accuracy"]["mean"]
  ent = lambda m, k: v[m][k]["entropy"]["mean"]
  assert acc("erm", "color_blank") < 15 and acc("sd", "color_blank") < 15  # both use colour
  assert 35 < acc("irm", "color_blank") < 65  # IRM ignores it
  assert acc("sd", "color_digits") > acc("erm", "color_digits") + 30
  assert ent("erm", "color_blank") < 0.05 and ent("sd", "color_blank") > 0.2

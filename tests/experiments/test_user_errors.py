"""User errors end cleanly: a missing or malformed data file makes an experiment's command line
print ``error: <message naming the path>`` and exit with status 2, without a traceback."""

import importlib
import os
import subprocess
import sys

import pytest

from tests._helpers import MISSING_DATA_DIR as MISSING, REPO


@pytest.mark.parametrize("name", ["cifar", "celeba", "dominoes", "cifar_features"])
def test_experiment_with_a_missing_data_dir_ends_with_a_message(name, tmp_path, capsys):
  exp = importlib.import_module(f"experiments.{name}")
  with pytest.raises(SystemExit) as e:
    exp.main([f"--data_dir={MISSING}", f"--out_dir={tmp_path / 'run'}", "--no_progress"])
  err = capsys.readouterr().err
  assert e.value.code == 2, err
  # (a warning about a modified working tree may come first: provenance at start)
  last = err.strip().splitlines()[-1]
  assert last.startswith("error: ") and MISSING in last and "Traceback" not in err, err


def test_colored_mnist_cli_with_a_missing_data_dir_exits_2_without_traceback(tmp_path):
  """The real command, in a fresh process."""
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.colored_mnist",
      f"--data_dir={MISSING}",
      f"--out_dir={tmp_path / 'run'}",
      "--no_progress",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 2, r.stderr[-2000:]
  assert "error: no MNIST file" in r.stderr and MISSING in r.stderr, r.stderr[-2000:]
  assert "Traceback" not in r.stderr, r.stderr[-2000:]


def test_cifar_cli_with_a_malformed_file_ends_with_a_message(tmp_path, capsys):
  from experiments import cifar as exp

  bad = tmp_path / "cifar10.npz"
  bad.write_text("not an npz")
  with pytest.raises(SystemExit) as e:
    exp.main([f"--data_dir={bad}", f"--out_dir={tmp_path / 'run'}", "--no_progress"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and str(bad) in err and "Traceback" not in err, err

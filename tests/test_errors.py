"""User errors end cleanly (gs_jax.base.errors): a missing or malformed data file makes an
experiment's command line print ``error: <message naming the path>`` and exit with status 2,
without a traceback; bugs keep theirs. Loader-level cases use tiny files in tmp_path."""

import importlib
import os
import subprocess
import sys
import types

import ml_collections
import numpy as np
import pytest

from gs_jax.base import errors
from gs_jax.experiment import cli
from gs_jax.data import celeba, cifar, paths
from gs_jax.data import colored_mnist as cm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/gs_jax_test_data"


def test_user_errors_keep_the_builtin_types_callers_catch():
  assert issubclass(errors.MissingDataError, FileNotFoundError)
  assert issubclass(errors.BadFileError, ValueError)
  for cls in (errors.MissingDataError, errors.BadFileError):
    assert issubclass(cls, errors.UserError)
    assert str(cls("/a/path: what was expected")) == "/a/path: what was expected"


def _module(run_error):
  """A minimal config module and a ``run`` that raises ``run_error``."""
  m = types.ModuleType("fake_config")
  m.PRESETS = ("only",)
  m.HELP = {"x": "a number"}
  m.get_config = lambda preset="only": ml_collections.ConfigDict({"x": 1})

  def run(cfg):
    raise run_error

  return m, run


def test_cli_main_turns_a_user_error_into_a_message_and_bugs_keep_their_traceback(capsys):
  m, run = _module(errors.MissingDataError("/some/where: no such file"))
  with pytest.raises(SystemExit) as e:
    cli.main(m, run, [], prog="fake")
  assert e.value.code == 2
  assert capsys.readouterr().err == "error: /some/where: no such file\n"
  m, run = _module(ZeroDivisionError("a bug"))
  with pytest.raises(ZeroDivisionError):  # not a user error: the traceback stays
    cli.main(m, run, [], prog="fake")


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


def _malformed_npz(tmp_path, keys):
  """``{case: path}``: files that are no valid npz with ``keys``, each of another kind."""
  good = tmp_path / "good.npz"
  np.savez(good, **{k: np.zeros(2) for k in keys})
  data = good.read_bytes()
  cases = {"text": b"not an npz", "empty": b"", "truncated": data[: len(data) // 2]}
  out = {}
  for case, content in cases.items():
    out[case] = tmp_path / f"{case}.npz"
    out[case].write_bytes(content)
  out["npy"] = tmp_path / "npy.npz"
  with open(out["npy"], "wb") as f:
    np.save(f, np.zeros(3))
  out["object"] = tmp_path / "object.npz"
  np.savez(out["object"], **{k: np.array([{}], dtype=object) for k in keys})
  out["keys"] = tmp_path / "keys.npz"
  np.savez(out["keys"], images=np.zeros(2))
  return out


def test_read_npz_reports_every_kind_of_bad_file(tmp_path):
  keys = ("x_train", "y_train")
  with pytest.raises(errors.MissingDataError, match="no such file"):
    paths.read_npz(str(tmp_path / "absent.npz"), keys)
  for case, path in _malformed_npz(tmp_path, keys).items():
    with pytest.raises(errors.BadFileError) as e:
      paths.read_npz(str(path), keys)
    assert str(path) in str(e.value), case
  assert set(paths.read_npz(str(tmp_path / "good.npz"), keys)) == set(keys)


def test_cifar_loader_names_the_file_and_the_problem(tmp_path):
  with pytest.raises(errors.MissingDataError) as e:
    cifar.load("cifar10", MISSING)
  assert MISSING in str(e.value)
  for case, path in _malformed_npz(tmp_path, ("x_train", "y_train", "x_test", "y_test")).items():
    with pytest.raises(errors.BadFileError) as e:
      cifar.load("cifar10", str(path))
    assert str(path) in str(e.value), case
  x = np.zeros((4, 32, 32, 3), np.uint8)
  path = tmp_path / "shape.npz"
  np.savez(path, x_train=x[..., :1], y_train=np.zeros(4, int), x_test=x, y_test=np.zeros(4, int))
  with pytest.raises(errors.BadFileError, match=r"shape.npz: x_train must have shape"):
    cifar.load("cifar10", str(path))
  np.savez(path, x_train=x, y_train=np.full(4, 0.5), x_test=x, y_test=np.zeros(4, int))
  with pytest.raises(errors.BadFileError, match=r"shape.npz: y_train must be integer"):
    cifar.load("cifar10", str(path))


def test_colored_mnist_loader_names_the_file_and_the_problem(tmp_path):
  with pytest.raises(errors.MissingDataError, match="no MNIST file"):
    cm.load_mnist_train(str(tmp_path))
  for case, path in _malformed_npz(tmp_path, ("x_train", "y_train")).items():
    with pytest.raises(errors.BadFileError) as e:
      cm.load_mnist_train(str(path))
    assert str(path) in str(e.value), case
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.zeros(10, np.uint8))
  with pytest.raises(errors.BadFileError, match="60000") as e:
    cm.load_mnist_train(str(tmp_path))
  assert str(path) in str(e.value)


def test_celeba_loader_names_the_missing_or_malformed_label_file(tmp_path):
  with pytest.raises(errors.MissingDataError, match="no such folder"):
    celeba.load(MISSING, verbose=False)
  root = tmp_path / "celeba"
  os.makedirs(root / "img_align_celeba")
  with pytest.raises(errors.MissingDataError, match="list_attr_celeba.txt: no such file"):
    celeba.load(str(root), verbose=False)
  (root / "list_attr_celeba.txt").write_text("two\nBlond_Hair Male\n")
  with pytest.raises(errors.BadFileError, match="list_attr_celeba.txt: not in the official"):
    celeba.load(str(root), verbose=False)
  (root / "list_attr_celeba.txt").write_text("1\nBlond_Hair Male\n000001.jpg 1 -1\n")
  (root / "list_eval_partition.txt").write_text("000002.jpg 0\n")
  with pytest.raises(errors.BadFileError, match="no partition for 1 images"):
    celeba.load(str(root), verbose=False)
  (root / "list_eval_partition.txt").write_text("000001.jpg 0\n")
  with pytest.raises(errors.MissingDataError, match="000001.jpg: listed in the label file"):
    celeba.load(str(root), verbose=False)
  (root / "img_align_celeba" / "000001.jpg").write_text("not a jpeg")
  with pytest.raises(errors.BadFileError, match="000001.jpg: not a readable image"):
    celeba.load(str(root), verbose=False)

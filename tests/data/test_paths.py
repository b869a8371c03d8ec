"""gs_jax.data.paths: where the data folder comes from, and read_npz's message for every kind of
missing or bad file."""

import pytest

from gs_jax.base import errors
from gs_jax.data import paths

from tests._helpers import malformed_npz as _malformed_npz


def test_data_dir_resolution(tmp_path, monkeypatch):
  from gs_jax.data import paths

  monkeypatch.delenv(paths.ENV_VAR, raising=False)
  assert paths.resolve(None, "mnist") is None
  assert paths.resolve("given", "mnist") == "given"
  (tmp_path / "mnist").mkdir()
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert paths.resolve(None, "mnist") == str(tmp_path / "mnist")
  assert paths.resolve(None, "cifar100") is None  # no copy: tfds.load


def test_read_npz_reports_every_kind_of_bad_file(tmp_path):
  keys = ("x_train", "y_train")
  with pytest.raises(errors.MissingDataError, match="no such file"):
    paths.read_npz(str(tmp_path / "absent.npz"), keys)
  for case, path in _malformed_npz(tmp_path, keys).items():
    with pytest.raises(errors.BadFileError) as e:
      paths.read_npz(str(path), keys)
    assert str(path) in str(e.value), case
  assert set(paths.read_npz(str(tmp_path / "good.npz"), keys)) == set(keys)

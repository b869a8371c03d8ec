"""gs_jax.data.celeba (docs/protocols.md §3.5): label parsing on the real label files, the offline
copy's stratified division, the loader on a generated official-layout fixture, the released
crop, and label-file errors naming the file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gs_jax.base import errors
from gs_jax.data import celeba

from tests._helpers import make_official_layout, MISSING_DATA_DIR as MISSING, real_data


@pytest.fixture
def celeba_layout(tmp_path):
  root = str(tmp_path / "celeba")
  return root, make_official_layout(root)


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


def test_official_training_split_group_counts_from_the_real_label_files(capsys):
  root = real_data("celeba", "list_attr_celeba.txt")
  data = celeba.official_labels(os.path.dirname(root))
  print(celeba.describe(data))
  assert "(1,1) 1387" in capsys.readouterr().out
  counts = {k: celeba.group_counts(s).tolist() for k, s in data.splits.items()}
  assert counts == {
    "train": [71629, 66874, 22880, 1387],
    "val": [8535, 8276, 2874, 182],
    "test": [9767, 7535, 2480, 180],
  }
  assert len(data.splits["train"].y) == 162770


def test_offline_copy_stratified_division_keeps_every_group_and_is_fixed():
  root = os.path.dirname(real_data("celeba", "img_align_celeba_half"))
  data = celeba.offline_labels(root)
  assert data.division == celeba.OFFLINE_SPLIT
  counts = np.array([celeba.group_counts(data.splits[s]) for s in celeba.SPLITS])
  np.testing.assert_array_equal(counts.sum(0), [4412, 4136, 1371, 81])  # SOURCE.md
  np.testing.assert_array_equal(counts[:, 3], [49, 16, 16])  # 81·0.2 → 16
  files = [f for s in celeba.SPLITS for f in data.splits[s].files]
  assert len(set(files)) == 10000  # disjoint, complete
  again = celeba.offline_labels(root)
  assert again.splits["test"].files == data.splits["test"].files


def test_loader_reads_the_official_layout_by_attribute_name(celeba_layout, capsys):
  root, (files, y, a, part) = celeba_layout
  data = celeba.load(root, size=16)
  out = capsys.readouterr().out
  assert "train n=     24" in out and "(1,1) 6" in out
  assert data.source == "folder" and data.division == "official"
  for k, name in enumerate(celeba.SPLITS):
    s = data.splits[name]
    idx = np.flatnonzero(part == k)
    assert s.files == [files[i] for i in idx]
    np.testing.assert_array_equal(s.y, y[idx])
    np.testing.assert_array_equal(s.a, a[idx])
    np.testing.assert_array_equal(s.g, 2 * y[idx] + a[idx])
    assert s.x.shape == (len(idx), 16, 16, 3) and s.x.dtype == np.uint8
  # images belong to their labels: top minus bottom brightness is 100·y + 50·a by
  # construction (noise means cancel; 15 grey levels leave room for JPEG and resizing)
  s = data.splits["train"]
  diff = s.x[:, :8].mean((1, 2, 3)) - s.x[:, 8:].mean((1, 2, 3))
  np.testing.assert_allclose(diff, 100 * s.y + 50 * s.a, atol=15)


def test_center_crop_is_the_released_crop_scaled_to_the_image():
  from PIL import Image

  img = np.zeros((218, 178, 3), np.uint8)
  img[20:198] = 255  # the centred 178×178 square is white
  out = celeba.center_crop_resize(Image.fromarray(img), 32)
  assert out.min() == 255
  half = np.zeros((109, 89, 3), np.uint8)
  half[10:99] = 255  # half-size copy: an 89×89 crop
  assert celeba.center_crop_resize(Image.fromarray(half), 32).min() == 255

"""CelebA (docs/protocols.md §3.5): label parsing on the real label files, the loader on a
generated official-layout fixture, and the experiment end to end on that fixture."""
from __future__ import annotations

import os

import numpy as np
import pytest

from gs_jax.data import celeba
from tests.conftest import real_data

# Attributes in a different order from the official file and with extra columns, so a loader
# that used column numbers instead of names would read the wrong ones.
FIXTURE_ATTRS = ("Smiling", "Male", "Wavy_Hair", "Blond_Hair")


def make_official_layout(root, n_per_split=(24, 8, 8), seed=0, size=(178, 218)):
  """Writes an official-layout CelebA fixture: ``img_align_celeba/*.jpg`` (size = (w, h)),
  ``list_attr_celeba.txt`` (±1, two-space padding, CRLF) and ``list_eval_partition.txt``
  (CRLF). Every group occurs in every split. Returns ``(files, y, a, partition)``."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "img_align_celeba"), exist_ok=True)
  files, ys, as_, part = [], [], [], []
  k = 0
  for split, n in enumerate(n_per_split):
    g = np.arange(n) % 4
    for gi in g:
      k += 1
      f = f"{k:06d}.jpg"
      y, a = int(gi) // 2, int(gi) % 2
      # blond = bright top half, male = dark bottom half: learnable, and a spurious cue
      img = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
      img[: size[1] // 2] += np.uint8(100 * y)
      img[size[1] // 2:] -= np.uint8(50 * a)
      Image.fromarray(img).save(os.path.join(root, "img_align_celeba", f), quality=90)
      files.append(f); ys.append(y); as_.append(a); part.append(split)
  with open(os.path.join(root, "list_attr_celeba.txt"), "w", newline="") as fh:
    fh.write(f"{len(files)}\r\n" + " ".join(FIXTURE_ATTRS) + " \r\n")
    for f, y, a in zip(files, ys, as_):
      vals = {"Smiling": rng.choice([-1, 1]), "Male": 2 * a - 1, "Wavy_Hair": 1,
              "Blond_Hair": 2 * y - 1}
      fh.write(f + "".join(f" {vals[n]:2d}" for n in FIXTURE_ATTRS) + "\r\n")
  with open(os.path.join(root, "list_eval_partition.txt"), "w", newline="") as fh:
    for f, p in zip(files, part):
      fh.write(f"{f} {p}\r\n")
  return files, np.array(ys), np.array(as_), np.array(part)


@pytest.fixture
def celeba_layout(tmp_path):
  root = str(tmp_path / "celeba")
  return root, make_official_layout(root)


def test_official_training_split_group_counts_from_the_real_label_files(capsys):
  root = real_data("celeba", "list_attr_celeba.txt")
  data = celeba.official_labels(os.path.dirname(root))
  print(celeba.describe(data))
  assert "(1,1) 1387" in capsys.readouterr().out
  counts = {k: celeba.group_counts(s).tolist() for k, s in data.splits.items()}
  assert counts == {"train": [71629, 66874, 22880, 1387], "val": [8535, 8276, 2874, 182],
                    "test": [9767, 7535, 2480, 180]}
  assert len(data.splits["train"].y) == 162770


def test_offline_copy_stratified_division_keeps_every_group_and_is_fixed():
  root = os.path.dirname(real_data("celeba", "img_align_celeba_half"))
  data = celeba.offline_labels(root)
  assert data.division == celeba.OFFLINE_SPLIT
  counts = np.array([celeba.group_counts(data.splits[s]) for s in celeba.SPLITS])
  np.testing.assert_array_equal(counts.sum(0), [4412, 4136, 1371, 81])   # SOURCE.md
  np.testing.assert_array_equal(counts[:, 3], [49, 16, 16])               # 81·0.2 → 16
  files = [f for s in celeba.SPLITS for f in data.splits[s].files]
  assert len(set(files)) == 10000                                         # disjoint, complete
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
  img[20:198] = 255                            # the centred 178×178 square is white
  out = celeba.center_crop_resize(Image.fromarray(img), 32)
  assert out.min() == 255
  half = np.zeros((109, 89, 3), np.uint8)
  half[10:99] = 255                            # half-size copy: an 89×89 crop
  assert celeba.center_crop_resize(Image.fromarray(half), 32).min() == 255

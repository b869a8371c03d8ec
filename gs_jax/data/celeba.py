"""CelebA with a spurious attribute: ``Blond_Hair`` (y) against ``Male`` (a), groups ``g = 2y + a``
(docs/protocols.md §3.5, §5).

One loader, three sources (:func:`load`):

* ``"tfds"`` — ``tfds.load("celeb_a")`` (the default when no local copy is found; downloads);
* ``"folder"`` — the official layout given by ``--data_dir``: ``img_align_celeba/`` (178×218
  JPEGs) + ``list_attr_celeba.txt`` + ``list_eval_partition.txt``; official splits;
* ``"offline10k"`` — the partial offline copy in ``$GS_DATA_DIR/celeba`` (official label
  files, only images 000001–010000 at half size in ``img_align_celeba_half/``, all of them in
  the official *train* split). Its train/val/test division is **ours**, not the official one:
  :data:`OFFLINE_SPLIT` = ``"offline10k_stratified"``, a fixed seeded division stratified by
  group (:func:`stratified_split`).

Targets and groups come from the attribute *names* in the label file's header, never from
column numbers. Images are centre-cropped and resized as the released code (DRO
``data/celebA_dataset.py``: ``CenterCrop(178)`` → ``Resize((224, 224))`` on 178×218 images),
with the crop scaled to the image's size (a half-size copy crops 89 pixels), and stored as uint8;
normalisation happens inside the compiled step (:func:`to_float`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Sequence

import numpy as np

from gs_jax.base import errors
from gs_jax.data import paths

TARGET, SPURIOUS = "Blond_Hair", "Male"
SPLITS = ("train", "val", "test")
OFFLINE_SPLIT = "offline10k_stratified"
OFFLINE_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test of the offline copy, per group
OFFLINE_SEED = 0
OFFICIAL_WIDTH, OFFICIAL_CROP = 178, 178
GROUP_NAMES = ("not blond, female", "not blond, male", "blond, female", "blond, male")
# ImageNet statistics, as torchvision's Normalize in the released transform.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclasses.dataclass
class Split:
  """One split: ``x`` uint8 (n, s, s, 3) (None until images are read), ``y``, ``a``, ``g``
  int32 (n,), ``files`` the image names."""

  files: list
  y: np.ndarray
  a: np.ndarray
  x: np.ndarray | None = None

  @property
  def g(self) -> np.ndarray:
    return (2 * self.y + self.a).astype(np.int32)


@dataclasses.dataclass
class CelebA:
  source: str  # "tfds", "folder" or "offline10k"
  division: str  # "official" or OFFLINE_SPLIT
  splits: dict  # name -> Split


def read_attributes(path: str, names: Sequence[str] = (TARGET, SPURIOUS)):
  """``(files, {name: 0/1 int array})`` from ``list_attr_celeba.txt`` (official format: line 1
  the count, line 2 the attribute names, then ``file ±1 …``; LF or CRLF; columns found by
  name)."""
  with _label_file(path) as f:
    count = int(f.readline().split()[0])
    header = f.readline().split()
    missing = [n for n in names if n not in header]
    if missing:
      raise errors.BadFileError(f"{path}: attributes {missing} not in the header")
    cols = [header.index(n) + 1 for n in names]  # +1: the file-name column
    files, values = [], []
    for line in f:
      parts = line.split()
      if not parts:
        continue
      files.append(parts[0])
      values.append([int(parts[c]) for c in cols])
  if len(files) != count:
    raise errors.BadFileError(f"{path}: header says {count} images, found {len(files)}")
  v = (np.asarray(values, np.int32).reshape(-1, len(names)) > 0).astype(np.int32)
  return files, {n: v[:, i] for i, n in enumerate(names)}


def read_partition(path: str) -> dict:
  """``{file: 0/1/2}`` from ``list_eval_partition.txt`` (0 train, 1 val, 2 test)."""
  out = {}
  with _label_file(path) as f:
    for line in f:
      parts = line.split()
      if parts:
        out[parts[0]] = int(parts[1])
  return out


@contextlib.contextmanager
def _label_file(path: str):
  """``path`` opened as text; a missing file or a line that does not parse (a ValueError or
  IndexError inside the block) is a user error naming the file (:mod:`gs_jax.base.errors`)."""
  if not os.path.isfile(path):
    raise errors.MissingDataError(
      f"{path}: no such file (the official CelebA label files "
      "list_attr_celeba.txt and list_eval_partition.txt)"
    )
  try:
    with open(path, "r", newline=None) as f:
      yield f
  except errors.UserError:
    raise
  except (ValueError, IndexError, UnicodeDecodeError) as e:
    raise errors.BadFileError(f"{path}: not in the official CelebA format ({e})") from e


def _split_of(part: dict, files, path: str):
  """The partition of each file; a file the partition list lacks is a user error."""
  missing = [f for f in files if f not in part]
  if missing:
    raise errors.BadFileError(f"{path}: no partition for {len(missing)} images, e.g. {missing[:3]}")
  return [part[f] for f in files]


def group_counts(split: Split) -> np.ndarray:
  """Images per group ``g = 2y + a``, shape (4,)."""
  return np.bincount(split.g, minlength=4)


def describe(data: CelebA) -> str:
  """One line per split with its group counts (printed by :func:`load`)."""
  lines = [f"CelebA ({data.source}, {data.division} split), groups (y={TARGET}, a={SPURIOUS}):"]
  for name, s in data.splits.items():
    c = group_counts(s)
    lines.append(
      f"  {name:5s} n={len(s.y):7d}  " + "  ".join(f"({g // 2},{g % 2}) {c[g]}" for g in range(4))
    )
  return "\n".join(lines)


def official_labels(root: str) -> CelebA:
  """Labels of the official layout in ``root`` with the official splits (no images read)."""
  files, attrs = read_attributes(os.path.join(root, "list_attr_celeba.txt"))
  part_path = os.path.join(root, "list_eval_partition.txt")
  which = np.array(_split_of(read_partition(part_path), files, part_path))
  y, a = attrs[TARGET], attrs[SPURIOUS]
  splits = {}
  for k, name in enumerate(SPLITS):
    idx = np.flatnonzero(which == k)
    splits[name] = Split([files[i] for i in idx], y[idx], a[idx])
  return CelebA("folder", "official", splits)


def stratified_split(g: np.ndarray, fractions=OFFLINE_FRACTIONS, seed: int = OFFLINE_SEED):
  """Indices ``(train, val, test)``: each group is shuffled with ``seed`` and cut by
  ``fractions`` (rounded down for val and test), so every split keeps the group proportions.
  Each index list is sorted."""
  rng = np.random.default_rng(seed)
  out = [[], [], []]
  for grp in range(4):
    idx = np.flatnonzero(g == grp)
    idx = idx[rng.permutation(len(idx))]
    n_val, n_test = int(len(idx) * fractions[1]), int(len(idx) * fractions[2])
    n_train = len(idx) - n_val - n_test
    out[0].append(idx[:n_train])
    out[1].append(idx[n_train : n_train + n_val])
    out[2].append(idx[n_train + n_val :])
  return tuple(np.sort(np.concatenate(o)) for o in out)


def offline_labels(root: str) -> CelebA:
  """Labels of the partial offline copy with :data:`OFFLINE_SPLIT` (no images read)."""
  image_dir = os.path.join(root, "img_align_celeba_half")
  files, attrs = read_attributes(os.path.join(root, "list_attr_celeba.txt"))
  part_path = os.path.join(root, "list_eval_partition.txt")
  part = read_partition(part_path)
  have = set(os.listdir(image_dir))
  keep = np.array([f in have for f in files])
  idx_all = np.flatnonzero(keep)
  if not all(p == 0 for p in _split_of(part, [files[i] for i in idx_all], part_path)):
    raise errors.BadFileError(f"{root}: expected only official-train images in the offline copy")
  y, a = attrs[TARGET][idx_all], attrs[SPURIOUS][idx_all]
  kept = [files[i] for i in idx_all]
  splits = {}
  for name, idx in zip(SPLITS, stratified_split(2 * y + a)):
    splits[name] = Split([kept[i] for i in idx], y[idx], a[idx])
  return CelebA("offline10k", OFFLINE_SPLIT, splits)


def center_crop_resize(img, size: int):
  """The released transform on a PIL image: a centred square crop of side
  ``178·(width/178)`` (i.e. the official ``CenterCrop(178)`` scaled to this copy's size),
  then a bilinear resize to ``size × size``; returns uint8 (size, size, 3)."""
  from PIL import Image

  w, h = img.size
  side = min(round(OFFICIAL_CROP * w / OFFICIAL_WIDTH), w, h)
  left, top = (w - side) // 2, (h - side) // 2
  img = img.convert("RGB").crop((left, top, left + side, top + side))
  return np.asarray(img.resize((size, size), Image.BILINEAR), np.uint8)


def read_images(image_dir: str, files: Sequence[str], size: int, limit: int = 0) -> np.ndarray:
  """uint8 (n, size, size, 3) of ``files`` in ``image_dir`` (the first ``limit`` if > 0)."""
  from PIL import Image

  files = list(files)[:limit] if limit else list(files)
  out = np.empty((len(files), size, size, 3), np.uint8)
  for i, f in enumerate(files):
    path = os.path.join(image_dir, f)
    try:
      with Image.open(path) as img:
        out[i] = center_crop_resize(img, size)
    except FileNotFoundError as e:
      raise errors.MissingDataError(
        f"{path}: listed in the label file, missing from {image_dir}"
      ) from e
    except OSError as e:  # PIL.UnidentifiedImageError, truncated files
      raise errors.BadFileError(f"{path}: not a readable image ({e})") from e
  return out


def _tfds(size: int, limit: int) -> CelebA:
  """``tfds.load("celeb_a")`` with its official splits ("validation" → "val")."""
  import tensorflow_datasets as tfds
  from PIL import Image

  splits = {}
  for name, tf_name in zip(SPLITS, ("train", "validation", "test")):
    ds = tfds.load("celeb_a", split=tf_name)
    if limit:
      ds = ds.take(limit)
    xs, ys, as_ = [], [], []
    for ex in tfds.as_numpy(ds):
      xs.append(center_crop_resize(Image.fromarray(ex["image"]), size))
      ys.append(int(ex["attributes"][TARGET]))
      as_.append(int(ex["attributes"][SPURIOUS]))
    splits[name] = Split(
      [""] * len(ys), np.asarray(ys, np.int32), np.asarray(as_, np.int32), np.stack(xs)
    )
  return CelebA("tfds", "official", splits)


def _limit(s: Split, n: int) -> Split:
  return Split(s.files[:n], s.y[:n], s.a[:n]) if n else s


def _tfds_stream(size: int, limit: int, threads: int, prefetch: int) -> CelebA:
  """TFDS splits as :class:`gs_jax.data.stream.Stream` (``tfds.data_source``: random access,
  needs ``celeb_a`` prepared in array_record format). The labels are read by one pass over
  every record (this decodes each image once)."""
  import tensorflow_datasets as tfds

  from gs_jax.data import stream

  splits = {}
  for name, tf_name in zip(SPLITS, ("train", "validation", "test")):
    src = tfds.data_source("celeb_a", split=tf_name)
    n = min(limit, len(src)) if limit else len(src)
    ys, as_ = np.zeros(n, np.int32), np.zeros(n, np.int32)
    for i in range(n):
      attrs = src[i]["attributes"]
      ys[i], as_[i] = int(attrs[TARGET]), int(attrs[SPURIOUS])
    view = src if n == len(src) else [src[i] for i in range(n)]
    splits[name] = Split(
      [""] * n,
      ys,
      as_,
      stream.Stream(
        stream.TfdsImages(view, size, center_crop_resize), threads=threads, prefetch=prefetch
      ),
    )
  return CelebA("tfds", "official", splits)


def load(
  data_dir: str | None = None,
  *,
  size: int = 64,
  limit: int = 0,
  verbose: bool = True,
  stream: bool = False,
  threads: int = 8,
  prefetch: int = 4,
) -> CelebA:
  """CelebA at ``size × size`` with images read, from ``data_dir`` (official layout), else
  ``$GS_DATA_DIR/celeba`` (the offline copy, or an official layout placed there), else
  ``tfds.load``. ``limit > 0`` keeps the first ``limit`` images of every split (tests, smoke
  runs). Prints the group counts of every split (:func:`describe`).

  ``stream=True``: every split's ``x`` is a :class:`gs_jax.data.stream.Stream` instead of an
  array — images are decoded, cropped and resized on demand by ``threads`` background threads,
  at most ``prefetch`` batches ahead (bounded memory; the same pixels as the in-memory path).
  """
  root = paths.resolve(data_dir, "celeba")
  if root is None:
    data = _tfds_stream(size, limit, threads, prefetch) if stream else _tfds(size, limit)
  else:
    if os.path.isdir(os.path.join(root, "img_align_celeba")):
      data, image_dir = official_labels(root), os.path.join(root, "img_align_celeba")
    elif os.path.isdir(os.path.join(root, "img_align_celeba_half")):
      data, image_dir = offline_labels(root), os.path.join(root, "img_align_celeba_half")
    elif not os.path.isdir(root):
      raise errors.MissingDataError(
        f"{root}: no such folder (expected the official CelebA layout: img_align_celeba/, "
        "list_attr_celeba.txt, list_eval_partition.txt; or omit --data_dir and GS_DATA_DIR "
        "to download with tfds.load('celeb_a'))"
      )
    else:
      raise errors.MissingDataError(
        f"{root}: neither img_align_celeba/ (official layout) nor "
        "img_align_celeba_half/ (offline copy) found"
      )
    for name, s in data.splits.items():
      s = data.splits[name] = _limit(s, limit)
      if stream:
        from gs_jax.data import stream as streaming

        s.x = streaming.Stream(
          streaming.ImageFiles(image_dir, s.files, size, center_crop_resize),
          threads=threads,
          prefetch=prefetch,
        )
      else:
        s.x = read_images(image_dir, s.files, size)
  if verbose:
    print(describe(data))
  return data


def to_float(x):
  """uint8 images → float32, ImageNet-normalised (inside the compiled step)."""
  import jax.numpy as jnp

  return (x.astype(jnp.float32) / 255.0 - MEAN) / STD

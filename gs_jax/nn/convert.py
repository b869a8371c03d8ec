r"""torchvision ResNet weights → our Flax :class:`gs_jax.models.ResNet` (docs/protocols.md §3.5).

The released CelebA model is ``torchvision.models.resnet50(pretrained=True)``, i.e. the
``IMAGENET1K_V1`` weights, file ``resnet50-0676ba61.pth``
(https://download.pytorch.org/models/resnet50-0676ba61.pth; ResNet-18: ``resnet18-f37072fd.pth``).
Convert it once and pass the result to the CelebA ``paper`` preset::

    python -m gs_jax.convert --torchvision resnet50-0676ba61.pth --out resnet50_imagenet.msgpack
    python -m experiments.celeba --preset=paper --pretrained=resnet50_imagenet.msgpack …

Layout of the mapping (torchvision name → ours, ``k`` = stage 1…4, ``j`` = block):

* ``conv1`` → ``conv1``, ``bn1`` → ``bn1`` (stem); ``layer{k}.{j}.conv{i}`` / ``.bn{i}`` →
  ``layer{k}_{j}/conv{i}`` / ``bn{i}``; ``layer{k}.{j}.downsample.0`` / ``.1`` →
  ``downsample_conv`` / ``downsample_bn``; ``fc`` → ``head``.
* Convolution weights (out, in, kh, kw) → Flax kernels (kh, kw, in, out) (HWIO).
* BN ``weight``/``bias`` → ``params/…/scale``/``bias``; ``running_mean``/``running_var`` →
  ``batch_stats/…/mean``/``var`` (eps 1e-5 and momentum 0.1 as torchvision's, in the model);
  ``num_batches_tracked`` is dropped.
* ``fc.weight`` (classes, features) → ``head/kernel`` (features, classes). The converted file
  keeps ImageNet's 1000-class head; :func:`gs_jax.models.load_pretrained` leaves a head of
  another shape at its fresh initialisation, as the released code replaces ``fc`` by
  ``Linear(2048, 1)``.

Every key, shape and count is checked against our model's parameter tree: a missing,
unexpected or mis-shaped entry is a :class:`gs_jax.base.errors.BadFileError` (a ValueError) naming
it. Reading a ``.pth`` needs PyTorch
(``pip install 'gs-jax[convert]'``); :func:`convert_state_dict` itself takes NumPy arrays.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

import numpy as np

from gs_jax.base import errors

IMAGENET1K_V1 = {"resnet50": "resnet50-0676ba61.pth", "resnet18": "resnet18-f37072fd.pth"}
TORCHVISION_ARCHS = ("resnet18", "resnet50")


def _stem_and_stages(name: str):
  from gs_jax.nn import models

  if name not in TORCHVISION_ARCHS:
    raise ValueError(f"arch must be one of {TORCHVISION_ARCHS}; got {name!r}")
  spec = models.RESNETS[name]
  return spec["blocks"], spec["bottleneck"]


def key_map(name: str) -> list:
  """``[(torch_prefix, flax_path, kind)]`` for torchvision's ``name``; ``kind`` is "conv",
  "bn" or "fc", ``flax_path`` a tuple of module names (e.g. ``("layer1_0", "conv1")``)."""
  blocks, bottleneck = _stem_and_stages(name)
  out = [("conv1", ("conv1",), "conv"), ("bn1", ("bn1",), "bn")]
  n_convs = 3 if bottleneck else 2
  for k, n in enumerate(blocks):
    for j in range(n):
      t, f = f"layer{k + 1}.{j}", f"layer{k + 1}_{j}"
      for i in range(1, n_convs + 1):
        out += [(f"{t}.conv{i}", (f, f"conv{i}"), "conv"), (f"{t}.bn{i}", (f, f"bn{i}"), "bn")]
      if j == 0 and (k > 0 or bottleneck):  # stride 2, or the 4× expansion of stage 1
        out += [
          (f"{t}.downsample.0", (f, "downsample_conv"), "conv"),
          (f"{t}.downsample.1", (f, "downsample_bn"), "bn"),
        ]
  return out + [("fc", ("head",), "fc")]


def strip_prefix(state_dict: Mapping) -> dict:
  """``state_dict`` as NumPy arrays without DataParallel's ``module.`` key prefix."""
  return {
    (k[len("module.") :] if k.startswith("module.") else k): np.asarray(v)
    for k, v in state_dict.items()
  }


def infer_arch(state_dict: Mapping) -> str:
  """ "resnet50" or "resnet18" from the keys of a torchvision state_dict (bottleneck blocks have
  a ``conv3``; the block counts must match too)."""
  state_dict = strip_prefix(state_dict)
  for name in TORCHVISION_ARCHS:
    blocks, _ = _stem_and_stages(name)
    counts = [
      len({key.split(".")[1] for key in state_dict if key.startswith(f"layer{k + 1}.")})
      for k in range(4)
    ]
    has_conv3 = any(".conv3." in key for key in state_dict)
    if counts == list(blocks) and has_conv3 == (name == "resnet50"):
      return name
  raise errors.BadFileError(
    "not a torchvision resnet18/resnet50 state_dict: blocks per stage "
    f"{counts}, conv3 {'present' if has_conv3 else 'absent'}"
  )


def _model_shapes(name: str, num_classes: int) -> dict:
  """Flat ``{(collection, *path): shape}`` of our model with a ``num_classes`` head."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  from gs_jax.nn import models

  model = models.resnet(name, num_outputs=num_classes)
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  return {k: tuple(s.shape) for k, s in traverse_util.flatten_dict(dict(v)).items()}


def convert_state_dict(state_dict: Mapping, name: str | None = None) -> dict:
  """``{"params": …, "batch_stats": …}`` (nested dicts of float32 NumPy arrays) of our
  :func:`gs_jax.models.resnet` ``(name, num_outputs=classes of fc)`` from a torchvision
  ResNet ``state_dict`` (values: NumPy arrays or tensors converted with ``.numpy()``; a
  ``module.`` prefix from DataParallel is removed). ``name`` is inferred when None."""
  from flax import traverse_util

  sd = strip_prefix(state_dict)
  name = name or infer_arch(sd)
  if "fc.weight" not in sd:
    raise errors.BadFileError("state_dict has no fc.weight (the classification head)")
  shapes = _model_shapes(name, sd["fc.weight"].shape[0])
  flat, used = {}, set()

  def take(key):
    if key not in sd:
      raise errors.BadFileError(f"state_dict is missing {key} (torchvision {name})")
    used.add(key)
    return np.asarray(sd[key], np.float32)

  for prefix, path, kind in key_map(name):
    if kind == "conv":
      flat[("params", *path, "kernel")] = take(f"{prefix}.weight").transpose(2, 3, 1, 0)
    elif kind == "bn":
      flat[("params", *path, "scale")] = take(f"{prefix}.weight")
      flat[("params", *path, "bias")] = take(f"{prefix}.bias")
      flat[("batch_stats", *path, "mean")] = take(f"{prefix}.running_mean")
      flat[("batch_stats", *path, "var")] = take(f"{prefix}.running_var")
      used.add(f"{prefix}.num_batches_tracked")
    else:
      flat[("params", *path, "kernel")] = take(f"{prefix}.weight").T
      flat[("params", *path, "bias")] = take(f"{prefix}.bias")
  unexpected = sorted(set(sd) - used)
  if unexpected:
    more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
    raise errors.BadFileError(f"unexpected keys for torchvision {name}: {unexpected[:5]}{more}")
  if set(flat) != set(shapes):  # key_map and the model disagree: a bug, not the file's fault
    missing, extra = sorted(set(shapes) - set(flat)), sorted(set(flat) - set(shapes))
    raise ValueError(
      f"converted tree differs from the model's: missing {missing[:5]}, extra {extra[:5]}"
    )
  for k, v in flat.items():
    if v.shape != shapes[k]:
      raise errors.BadFileError(
        f"shape of {'/'.join(k)}: converted {v.shape}, model "
        f"{shapes[k]} (torchvision layout expected)"
      )
  return traverse_util.unflatten_dict(flat)


def random_state_dict(name: str, seed: int = 0, num_classes: int = 1000) -> dict:
  """A torchvision-layout ``state_dict`` (NumPy, float32, plus int64 ``num_batches_tracked``)
  with random values: He-normal convolutions (fan-out, as torchvision's init), BN
  ``weight ~ U(0.5, 1)``, ``bias, running_mean ~ N(0, 0.1²)``, ``running_var ~ U(0.5, 1.5)``,
  ``fc ~ U(±1/√fan_in)``. For tests and :mod:`benchmarks.gpu_check` (no download, no PyTorch)."""
  shapes = _model_shapes(name, num_classes)
  rng = np.random.default_rng(seed)
  out = {}
  for prefix, path, kind in key_map(name):
    if kind == "conv":
      kh, kw, c_in, c_out = shapes[("params", *path, "kernel")]
      w = rng.normal(0, np.sqrt(2.0 / (c_out * kh * kw)), (kh, kw, c_in, c_out))
      out[f"{prefix}.weight"] = w.transpose(3, 2, 0, 1).astype(np.float32)
    elif kind == "bn":
      (c,) = shapes[("params", *path, "scale")]
      out[f"{prefix}.weight"] = rng.uniform(0.5, 1.0, c).astype(np.float32)
      out[f"{prefix}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
      out[f"{prefix}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
      out[f"{prefix}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
      out[f"{prefix}.num_batches_tracked"] = np.array(0, np.int64)
    else:
      f_in, c = shapes[("params", *path, "kernel")]
      b = 1.0 / np.sqrt(f_in)
      out[f"{prefix}.weight"] = rng.uniform(-b, b, (c, f_in)).astype(np.float32)
      out[f"{prefix}.bias"] = rng.uniform(-b, b, c).astype(np.float32)
  return out


def read_torch_state_dict(path: str) -> dict:
  """A ``.pth`` file's state_dict as NumPy arrays (needs PyTorch; ``weights_only`` loading,
  so no code in the file runs). Accepts a bare state_dict or ``{"state_dict": …}``."""
  try:
    import torch
  except ImportError as e:
    raise ImportError("reading a .pth file needs PyTorch: pip install 'gs-jax[convert]'") from e
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # not a torch file, or one that needs code to load
    raise errors.BadFileError(
      f"{path}: not a PyTorch state_dict file ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    ) from e
  if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
    sd = sd["state_dict"]
  if not isinstance(sd, dict):
    raise errors.BadFileError(
      f"{path}: expected a state_dict (a dict of tensors), got {type(sd).__name__}"
    )
  return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def save(variables: Mapping, path: str) -> None:
  """Writes ``variables`` as the msgpack that :func:`gs_jax.models.load_pretrained` reads."""
  from flax import serialization

  with open(path, "wb") as f:
    f.write(serialization.msgpack_serialize(dict(variables)))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m gs_jax.convert", description=__doc__.split("\n")[0])
  p.add_argument(
    "--torchvision",
    required=True,
    help="torchvision ResNet-18/50 .pth (IMAGENET1K_V1: " + ", ".join(IMAGENET1K_V1.values()) + ")",
  )
  p.add_argument("--out", required=True, help="msgpack file for --pretrained")
  p.add_argument("--arch", default="auto", choices=("auto",) + TORCHVISION_ARCHS)
  a = p.parse_args(argv)
  if not os.path.isfile(a.torchvision):
    p.error(
      f"--torchvision {a.torchvision!r}: no such file (download "
      f"{', '.join(IMAGENET1K_V1.values())} from download.pytorch.org/models/)"
    )
  try:  # a file that is no torchvision ResNet state_dict: a user error, not a bug
    sd = read_torch_state_dict(a.torchvision)
    name = infer_arch(sd) if a.arch == "auto" else a.arch
    variables = convert_state_dict(sd, name)
  except errors.UserError as e:
    p.error(f"--torchvision {a.torchvision!r}: {e}")
  save(variables, a.out)
  n = sum(int(np.prod(v.shape)) for k, v in _flat(variables["params"]))
  print(
    f"{a.torchvision} → {a.out}: torchvision {name}, {n:,} parameters, "
    f"{variables['params']['head']['kernel'].shape[1]}-class head "
    "(replaced by the experiment's own head when loaded)",
    file=sys.stderr,
  )
  return 0


def _flat(tree):
  from flax import traverse_util

  return traverse_util.flatten_dict(tree).items()


if __name__ == "__main__":
  sys.exit(main())

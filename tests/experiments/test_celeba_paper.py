"""The CelebA ``paper`` preset end to end on CPU on the offline images (upsampled to the
preset's 224 px), started from *converted* random torchvision weights (gs_jax.convert, the
``--pretrained`` path of docs/experiments/paper_scale.md). A CI-sized variant runs ResNet-18
at 32 px; the full ResNet-50 at 224 px is in the slow tier."""

from __future__ import annotations

import numpy as np
import pytest

from gs_jax.nn import convert

from tests._helpers import real_data

pytest.importorskip("grain")  # the paper preset streams its images (gs_jax.data.stream)


def _run(tmp_path, arch, image_size):
  from experiments import celeba as exp

  root = real_data("celeba", "img_align_celeba_half")[: -len("/img_align_celeba_half")]
  weights = tmp_path / f"{arch}.msgpack"
  sd = convert.random_state_dict(arch, seed=0)
  convert.save(convert.convert_state_dict(sd), str(weights))
  r = exp.main(
    [
      "--preset=paper",
      "--method=sd",
      f"--model={arch}",
      f"--image_size={image_size}",
      "--limit=8",
      "--batch_size=4",
      "--epochs=1",
      "--eval_batch=8",
      "--no_progress",
      f"--pretrained={weights}",
      f"--data_dir={root}",
      f"--out_dir={tmp_path / 'run'}",
    ]
  )
  assert r["init"] == f"pretrained from {weights}"
  assert r["config"]["preset"] == "paper" and r["config"]["model"] == arch
  assert r["data"]["source"] == "offline10k" and r["data"]["image_size"] == image_size
  assert r["optimizer"] == "adam" and r["metrics"]["steps"] == 2
  assert np.isfinite(r["metrics"]["final_train_loss"])
  assert sum(g["n"] for g in r["metrics"]["last"]["test"]["groups"]) == 8
  return r


@pytest.mark.integration
def test_paper_preset_with_converted_resnet18_on_offline_images(tmp_path):
  _run(tmp_path, "resnet18", 32)


@pytest.mark.integration
@pytest.mark.slow
def test_paper_preset_with_converted_resnet50_at_224_on_offline_images(tmp_path):
  _run(tmp_path, "resnet50", 224)

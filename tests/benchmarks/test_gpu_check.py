"""benchmarks.gpu_check --tiny on CPU: the prepared GPU check cannot rot (small shapes; the
numbers mean nothing on CPU). CI runs the two quickest presets; the slow tier all five."""

import json

import pytest

from benchmarks import gpu_check

FIELDS = (
  "steps_per_s",
  "images_per_s",
  "peak_device_memory_bytes",
  "full_run_steps",
  "full_run_train_hours",
  "setup_and_compile_s",
)


def _check(tmp_path, presets):
  gpu_check.main(["--tiny", f"--presets={','.join(presets)}", f"--out_dir={tmp_path}"])
  r = json.loads((tmp_path / "results.json").read_text())
  assert r["experiment"] == "gpu_check" and r["tiny"] is True
  assert r["provenance"]["git_commit"] and r["provenance"]["packages"]["jax"]
  assert list(r["metrics"]) == list(presets)
  for name, m in r["metrics"].items():
    assert all(k in m for k in FIELDS), name
    assert m["steps_per_s"] > 0 and m["full_run_steps"] == gpu_check.FULL_STEPS[name]
    assert m["full_run_train_hours"] * 3600 * m["steps_per_s"] == pytest.approx(
      m["full_run_steps"], rel=1e-9
    )
    if r["backend"] == "cpu":
      assert m["peak_device_memory_bytes"] == "n/a"


@pytest.mark.integration
def test_gpu_check_tiny_quick_presets(tmp_path):
  _check(tmp_path, ["cmnist_full_batch", "cifar_released_batch1"])


@pytest.mark.integration
@pytest.mark.slow
def test_gpu_check_tiny_every_preset(tmp_path):
  _check(tmp_path, gpu_check.PRESETS)


def test_unknown_preset_is_refused(tmp_path):
  with pytest.raises(ValueError, match="unknown.*nope"):
    gpu_check.main(["--tiny", "--presets=nope", f"--out_dir={tmp_path}"])

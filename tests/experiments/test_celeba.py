"""experiments.celeba end to end on a generated official-celeba_official_dir fixture: LfF with resume after a
kill, the other methods, the paper preset on a few batches, and --stream giving the in-memory
numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._helpers import CELEBA_TINY as TINY, make_official_layout, run_experiment


def _history(path):
  return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_lff_run_on_the_fixture_and_resume_after_kill_is_bit_identical(tmp_path):
  from experiments import celeba as exp

  make_official_layout(str(tmp_path / "celeba"), n_per_split=(64, 16, 16))
  common = TINY + [f"--data_dir={tmp_path / 'celeba'}"]
  plain = exp.main(common + [f"--out_dir={tmp_path / 'plain'}"])
  m = plain["metrics"]
  assert plain["method"] == "lff" and plain["init"] == "from scratch"
  assert plain["data"]["group_counts"]["train"] == [16, 16, 16, 16]
  assert m["steps"] == 12 and m["headline"] == "best_val_average"
  for sel in ("last", "best_val_average", "best_val_worst_group"):
    t = m[sel]["test"]
    assert [g["n"] for g in t["groups"]] == [4, 4, 4, 4]
    assert t["worst_group"] == min(g["acc"] for g in t["groups"])
    for g in t["groups"]:
      assert g["ci95"][0] <= g["acc"] <= g["ci95"][1]
  assert m["last"]["epoch"] == 3
  killed = run_experiment(
    "celeba", common + [f"--out_dir={tmp_path / 'resumed'}"], kill_after_step=6
  )  # in epoch 2 of 4 steps
  assert killed.returncode == 3, killed.stderr[-2000:]
  assert not (tmp_path / "resumed" / "results.json").exists()
  again = run_experiment("celeba", common + [f"--out_dir={tmp_path / 'resumed'}"])
  assert again.returncode == 0, again.stderr[-2000:]
  assert "resumed from epoch 1" in again.stderr
  resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
  a, b = _history(tmp_path / "plain"), _history(tmp_path / "resumed")
  assert [h["epoch"] for h in a] == [1, 2, 3] and [h["epoch"] for h in b][-2:] == [2, 3]
  for ha, hb in zip(a[1:], b[-2:]):  # same computations in the same order: bit-identical
    for k in ("loss", "nll", "acc_g0", "acc_g3", "val", "test"):
      assert ha[k] == hb[k], k
  for sel in ("last", "best_val_average", "best_val_worst_group"):
    assert resumed["metrics"][sel] == m[sel]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["erm", "sd", "group_dro"])
def test_other_methods_train_on_the_fixture(tmp_path, method):
  from experiments import celeba as exp

  make_official_layout(str(tmp_path / "celeba"), n_per_split=(32, 8, 8))
  r = exp.main(
    TINY
    + [
      f"--method={method}",
      "--epochs=2",
      f"--data_dir={tmp_path / 'celeba'}",
      f"--out_dir={tmp_path / method}",
    ]
  )
  assert r["method"] == method and r["metrics"]["steps"] == 4
  assert np.isfinite(r["metrics"]["final_train_loss"])
  assert r["optimizer"] == "adam"


@pytest.mark.integration
@pytest.mark.slow
def test_paper_preset_runs_end_to_end_on_a_few_batches(tmp_path):
  """The released protocol (ResNet-50, 224×224, Adam 1e-5 for SD) on 2 batches of 8."""
  from experiments import celeba as exp

  make_official_layout(str(tmp_path / "celeba"), n_per_split=(16, 8, 8))
  r = exp.main(
    [
      "--preset=paper",
      "--method=sd",
      "--batch_size=8",
      "--epochs=1",
      "--no_progress",
      f"--data_dir={tmp_path / 'celeba'}",
      f"--out_dir={tmp_path / 'paper'}",
    ]
  )
  assert r["config"]["model"] == "resnet50" and r["config"]["image_size"] == 224
  assert r["optimizer"] == "adam" and r["metrics"]["steps"] == 2
  assert exp.optimizer(exp.configs.get_config("paper"))[0] == "sgd"  # ERM: SGD, as released


@pytest.mark.integration
def test_experiment_with_stream_gives_the_in_memory_numbers(celeba_official_dir, tmp_path):
  pytest.importorskip("grain")  # streams through gs_jax.data.stream
  from experiments import celeba as exp

  common = [
    "--preset=cpu",
    "--method=erm",
    "--epochs=2",
    "--batch_size=8",
    "--chunk=2",
    "--image_size=16",
    "--eval_batch=8",
    "--no_progress",
    f"--data_dir={celeba_official_dir}",
  ]
  a = exp.main(common + [f"--out_dir={tmp_path / 'mem'}"])
  b = exp.main(common + ["--stream", "--stream_threads=2", f"--out_dir={tmp_path / 'stream'}"])
  assert b["data"]["streamed"] and not a["data"]["streamed"]
  ha = [json.loads(r) for r in (tmp_path / "mem" / "metrics.jsonl").read_text().splitlines()]
  hb = [json.loads(r) for r in (tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()]
  assert len(ha) == len(hb) == 2
  for ra, rb in zip(ha, hb):  # same batches; the step is compiled apart (gather outside)
    np.testing.assert_allclose(rb["loss"], ra["loss"], rtol=1e-5)
    assert rb["val"] == ra["val"] and rb["test"] == ra["test"]

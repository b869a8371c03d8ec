"""Table 2 / Figure 3 assembly from run directories."""
import json
import os

import numpy as np
import pytest

from analysis import cmnist_table as ct
from gs_jax.data.colored_mnist import VARIANTS


def fake_results(train, test, variant_acc):
  return {"config": {"steps": 7}, "n_train": 100,
          "restarts": [{"train_acc": a, "test_acc": b,
                        "variants": {v: {"accuracy": variant_acc[v] + 0.01 * r,
                                         "entropy": 0.1 * (k + 1)}
                                     for k, v in enumerate(VARIANTS)}}
                       for r, (a, b) in enumerate(zip(train, test))]}


@pytest.fixture
def runs_dir(tmp_path):
  acc = {v: 0.1 * (k + 1) for k, v in enumerate(VARIANTS)}
  for method, tr, te in (("sd", [0.70, 0.72], [0.68, 0.66]), ("erm", [0.9, 0.92], [0.2, 0.3])):
    os.makedirs(tmp_path / method)
    (tmp_path / method / "results.json").write_text(json.dumps(fake_results(tr, te, acc)))
  os.makedirs(tmp_path / "not_a_run")
  return tmp_path


def test_table_and_figure(runs_dir, tmp_path):
  runs = ct.load_runs(str(runs_dir))
  assert list(runs) == ["erm", "sd"]          # paper order, non-runs ignored
  rows = {r["method"]: r for r in ct.table_rows(runs)}
  sd = rows["SD"]
  assert sd["train_mean"] == pytest.approx(71.0) and sd["train_std"] == pytest.approx(1.0)
  assert sd["test_mean"] == pytest.approx(67.0)
  assert sd["test_diff_sd"] == pytest.approx((67.0 - 68.4) / 1.2)
  md = ct.markdown_table(list(rows.values()))
  assert "| SD | 2 | 71.0 ± 1.0 | 70.0 ± 0.9 | 67.0 ± 1.0 | 68.4 ± 1.2 |" in md
  csv = ct.csv_table(list(rows.values())).splitlines()
  assert csv[0].startswith("method,restarts") and len(csv) == 3
  acc, ent = ct.variant_grids(runs["sd"])
  # rows digit/blank, columns grayscale/coloured; accuracy averaged over restarts (+0, +0.01)
  np.testing.assert_allclose(acc, 100 * np.array([[0.1, 0.2], [0.3, 0.4]]) + 0.5)
  np.testing.assert_allclose(ent, [[0.1, 0.2], [0.3, 0.4]])
  out = tmp_path / "out"
  assert ct.main(["--runs_dir", str(runs_dir), "--out_dir", str(out)]) == 0
  for name in ("table2.md", "table2.csv", "figure3.png", "figure3.pdf"):
    assert (out / name).stat().st_size > 0


def test_missing_runs(tmp_path):
  with pytest.raises(ValueError, match="results.json"):
    ct.load_runs(str(tmp_path))
  with pytest.raises(ValueError, match="not a directory"):
    ct.load_runs(str(tmp_path / "nope"))

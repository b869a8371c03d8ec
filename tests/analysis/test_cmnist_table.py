"""Table 2 / Figure 3 assembly from run directories (current and pre-conversion results)."""

import json
import os

import numpy as np
import pytest

from analysis import cmnist_table as ct
from gs_jax.base import paper
from gs_jax.data.colored_mnist import VARIANTS


def per_seed(train, test, variant_acc):
  seeds = range(len(train))
  return {
    "train_acc": train,
    "test_acc": test,
    "last_step_train_acc": [a - 0.01 for a in train],
    "last_step_test_acc": test,
    "variants": {
      v: {
        "accuracy": [variant_acc[v] + 0.01 * r for r in seeds],
        "entropy": [0.1 * (k + 1)] * len(train),
      }
      for k, v in enumerate(VARIANTS)
    },
  }


def fake_results(preset, train, test, variant_acc):
  """results.json as experiments.colored_mnist writes it (the parts the analysis reads)."""
  return {
    "experiment": "colored_mnist",
    "config": {"preset": preset, "steps": 7},
    "n_train": 100,
    "per_seed": per_seed(train, test, variant_acc),
  }


def legacy_results(method, train, test, variant_acc):
  """results.json of the experiment before the conversion (docs/results/colored_mnist_h200)."""
  p = per_seed(train, test, variant_acc)
  return {
    "config": {"method": method, "steps": 7},
    "n_train": 100,
    "restarts": [
      {k: p[k][r] for k in ct.ACCURACIES}
      | {
        "variants": {
          v: {k: p["variants"][v][k][r] for k in ("accuracy", "entropy")} for v in VARIANTS
        }
      }
      for r in range(len(train))
    ],
  }


ACC = {v: 0.1 * (k + 1) for k, v in enumerate(VARIANTS)}


@pytest.fixture
def runs_dir(tmp_path):
  runs = {
    "sd": fake_results("sd", [0.70, 0.72], [0.68, 0.66], ACC),
    "erm": legacy_results("erm", [0.9, 0.92], [0.2, 0.3], ACC),
    "oracle_shared": fake_results("oracle", [0.74, 0.75, 0.73], [0.72, 0.73, 0.74], ACC),
  }
  for name, res in runs.items():
    os.makedirs(tmp_path / name)
    (tmp_path / name / "results.json").write_text(json.dumps(res))
  os.makedirs(tmp_path / "not_a_run")
  return tmp_path


def test_table_and_figure(runs_dir, tmp_path):
  runs = ct.load_runs(str(runs_dir))
  assert list(runs) == ["erm", "sd", "oracle_shared"]  # paper order, non-runs ignored
  rows = {r["method"]: r for r in ct.table_rows(runs)}
  assert set(rows) == {"ERM", "SD", "Oracle (grayscale) [oracle_shared]"}
  sd = rows["SD"]
  # sample std (ddof=1): for two values a, b it is |a − b|/√2
  assert sd["train_mean"] == pytest.approx(71.0)
  assert sd["train_std"] == pytest.approx(2 / np.sqrt(2))
  assert sd["test_mean"] == pytest.approx(67.0)
  assert sd["last_step_train_mean"] == pytest.approx(70.0)
  assert sd["test_diff_sd"] == pytest.approx(
    (67.0 - paper.TABLE2["sd"]["test"][0]) / paper.TABLE2["sd"]["test"][1]
  )
  oracle = rows["Oracle (grayscale) [oracle_shared]"]
  assert oracle["restarts"] == 3 and oracle["test_std"] == pytest.approx(1.0)
  assert oracle["paper_test_mean"] == paper.TABLE2["oracle"]["test"][0]
  # the pre-conversion format gives the same numbers
  assert rows["ERM"]["train_mean"] == pytest.approx(91.0)
  assert rows["ERM"]["test_std"] == pytest.approx(10 / np.sqrt(2))
  md = ct.markdown_table(list(rows.values()))
  assert "| SD | 2 | 71.0 ± 1.4 | 70.0 ± 0.9 | 67.0 ± 1.4 | 68.4 ± 1.2 |" in md
  csv = ct.csv_table(list(rows.values())).splitlines()
  assert csv[0].startswith("method,restarts") and len(csv) == 4
  for res in (runs["sd"], runs["erm"]):
    acc, ent = ct.variant_grids(res)
    # rows digit/blank, columns grayscale/coloured; accuracy averaged over restarts (+0, +0.01)
    np.testing.assert_allclose(acc, 100 * np.array([[0.1, 0.2], [0.3, 0.4]]) + 0.5)
    np.testing.assert_allclose(ent, [[0.1, 0.2], [0.3, 0.4]])
  out = tmp_path / "out"
  assert ct.main(["--runs_dir", str(runs_dir), "--out_dir", str(out), "--allow_dirty"]) == 0
  for name in ("table2.md", "table2.csv", "figure3.png", "figure3.pdf"):
    assert (out / name).stat().st_size > 0
  assert "coloured blank 9.4% / 0.00" in (out / "table2.md").read_text()


def test_missing_runs(tmp_path):
  with pytest.raises(ValueError, match="results.json"):
    ct.load_runs(str(tmp_path))
  with pytest.raises(ValueError, match="not a directory"):
    ct.load_runs(str(tmp_path / "nope"))

"""analysis.cifar_table: the table from new and earlier results, and the released protocol's
table and figure."""

from __future__ import annotations

import os

import numpy as np

from tests._helpers import REPO


def test_table_from_new_and_earlier_results(tmp_path):
  """analysis.cifar_table groups seeds (sample std), reads the committed VGG runs of the earlier
  schema to their table's numbers, and prints the paper's numbers from gs_jax.paper."""
  from analysis import cifar_table
  from gs_jax.experiment import results

  for seed, (acc, margin) in enumerate(((0.70, 1 / 255), (0.74, 2 / 255))):
    results.atomic_write_json(
      tmp_path / f"s{seed}" / "results.json",
      {
        "experiment": "cifar",
        "method": "SD",
        "data": {"n_train": 100},
        "config": {
          "dataset": "cifar2",
          "model": "cpu",
          "sd_lambda": 0.01,
          "epochs": 6,
          "train_limit": 0,
          "augment": True,
        },
        "metrics": {
          "train_acc": acc,
          "test_iid_acc": {"full": acc, "lossless": acc},
          "test_ood_acc": {e: {"full": 0.0, "lossless": 0.0} for e in ("eps_0.05", "eps_5/255")},
          "margin_median": margin,
        },
        "margins": {"eps_max": 0.05, "values": [margin, None]},
      },
    )
  legacy = os.path.join(REPO, "docs", "results", "cifar2_paper_h200", "cifar2_paper_*")
  cifar_table.main(
    [f"--runs={tmp_path}/s*", f"--runs={legacy}", f"--out_dir={tmp_path / 't'}", "--allow_dirty"]
  )
  md = (tmp_path / "t" / "table1.md").read_text().splitlines()
  row = next(line for line in md if "| cpu | SD |" in line)
  assert "| 2 | 6 |" in row and "72.0 ± 2.8" in row and "1.50 ± 0.71" in row
  vgg = next(line for line in md if "| paper | ERM |" in line)
  assert "92.8 ± 0.0 | 83.8 ± 0.0" in vgg and "0.0 / 2.9" in vgg
  assert "100.0 / 95.2 ± 0.12 / 42.3 ± 3.0" in vgg
  assert (tmp_path / "t" / "figure2.png").exists()


def test_released_table_and_figure_from_results(tmp_path):
  """analysis.cifar_table groups released runs by (classes, method, sd_coef), reports mean ±
  std over seeds and draws the Figure-2-axes plot."""
  from analysis import cifar_table
  from gs_jax.experiment import results

  def write(name, coef, seed, q50):
    m = {
      "released": {"n": 4, "q25": 0.01, "q50": q50, "q75": 0.2, "q90": 0.3, "median_correct": q50}
    }
    acc = {"full": 0.5, "lossless": 0.5}
    results.atomic_write_json(
      tmp_path / name / "results.json",
      {
        "config": {
          "dataset": "cifar2",
          "classes": "airplane,horse",
          "model": "released",
          "sd_coef": coef,
          "epochs": 1,
          "seed": seed,
        },
        "method": "SD" if coef else "ERM",
        "data": {"n_train": 10},
        "metrics": {
          "train_acc": 1.0,
          "test_iid_acc": {"full": 0.9, "lossless": 0.8},
          "test_ood_acc": {"released": {k: acc for k in ("eps_0.05_pm1", "eps_0.05", "eps_5/255")}},
          "margins_pm1": m,
        },
        "margins": {"released": {"values_pm1": [0.0, q50, 0.2, None]}},
      },
    )  # None: +inf

  write("a", 0.0, 0, 0.04)
  write("b", 0.1, 0, 0.10)
  write("c", 0.1, 1, 0.14)
  cifar_table.main([f"--runs={tmp_path}/*", f"--out_dir={tmp_path}/t", "--allow_dirty"])
  md = (tmp_path / "t" / "released_table.md").read_text()
  assert "| cifar2 | airplane,horse | SD | 0.1 | 0,1 |" in md
  assert "0.120 ± 0.028" in md  # median margins 0.10, 0.14: mean 0.12, sample std 0.028
  # The 90th percentile of [0, q50, 0.2, inf] is the inf margin: reported as such, not NaN.
  assert "beyond the bracket in 2/2 seeds" in md and "nan" not in md
  assert cifar_table.margin_quantile([0.1, 0.3, np.inf, np.inf], 0.5) == 0.3
  assert (tmp_path / "t" / "released_figure2_airplane_horse.png").stat().st_size > 1000
  assert not (tmp_path / "t" / "released_sweep_airplane_horse.png").exists()  # 2 strengths
  write("d", 0.3, 0, 0.2)
  cifar_table.main([f"--runs={tmp_path}/*", f"--out_dir={tmp_path}/t", "--allow_dirty"])
  assert (tmp_path / "t" / "released_sweep_airplane_horse.png").stat().st_size > 1000
  assert not (tmp_path / "t" / "table1.md").exists()

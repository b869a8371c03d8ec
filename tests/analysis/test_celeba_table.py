"""analysis.celeba_table: Table 3 aggregates seeds, pools the worst group and puts the paper
beside."""

from __future__ import annotations

from gs_jax.data import celeba


def _fake_result(method, seed, correct, n):
  from gs_jax.tasks import spurious

  test = spurious.summarize({"correct": correct, "n": n})
  sel = {"epoch": 1, "val": test, "test": test}
  return {
    "experiment": "celeba",
    "method": method,
    "init": "from scratch",
    "config": {"seed": seed, "model": "resnet_small"},
    "data": {"source": "offline10k", "division": celeba.OFFLINE_SPLIT, "image_size": 64},
    "metrics": {"last": sel, "best_val_average": sel, "best_val_worst_group": sel},
  }


def test_table3_aggregates_seeds_pools_the_worst_group_and_puts_the_paper_beside(tmp_path):
  from analysis import celeba_table
  from gs_jax.experiment import results

  n = [10, 10, 10, 4]
  for seed, c3 in enumerate([1, 3]):
    for method, c in (("erm", [10, 9, 8, c3]), ("sd", [9, 9, 9, 4])):
      results.atomic_write_json(
        tmp_path / f"{method}_s{seed}" / "results.json", _fake_result(method, seed, c, n)
      )
  rows = celeba_table.main([f"--runs_dir={tmp_path}", "--allow_dirty"])
  erm = rows[0]
  assert erm["method"] == "ERM" and erm["seeds"] == 2
  # worst group 25% and 75%: mean 50, sample std 35.36; pooled 4/8 with Wilson [21.5, 78.5]
  assert erm["worst_group"] == "50.00 ± 35.36"
  assert erm["worst_group_pooled"].startswith("50.0 [21.5, 78.5] (blond, male, 4/8)")
  assert erm["paper_worst_group"] == "40.35 ± 1.68"
  md = (tmp_path / "table3.md").read_text()  # SD: 31/34 correct, worst 9/10
  assert "| SD | 2 | 91.18 ± 0.00 | 90.00 ± 0.00 |" in md
  assert (tmp_path / "figure4.png").exists()
  assert len((tmp_path / "table3_runs.csv").read_text().splitlines()) == 1 + 4 * 2 * 2 * 2

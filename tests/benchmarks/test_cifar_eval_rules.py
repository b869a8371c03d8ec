"""benchmarks.cifar_eval_rules.compare: counts of differing margins (∞ included), the largest
finite difference, the bisection step and the accuracies of both rules, on hand-made results."""

from __future__ import annotations

from benchmarks import cifar_eval_rules


def _res(values, q50, ood):
  return {
    "metrics": {
      "test_iid_acc": {"full": 0.9},
      "test_ood_acc": {"released": {"eps_0.05": {"full": ood}}},
      "margins_pm1": {"released": {"q25": 0.0, "q50": q50, "q75": 0.0, "q90": 0.0}},
    },
    "margins": {"released": {"values_pixel": values, "eps_max_pixel": 0.5, "bisection_steps": 10}},
  }


def test_compare_counts_differences_and_keeps_both_rules_numbers():
  first = _res([0.0, 0.01, 0.02, None, 0.05], 0.04, 0.5)
  last = _res([0.0, 0.01, 0.0215, 0.3, None], 0.04, 0.6)
  c = cifar_eval_rules.compare(first, last)
  m = c["margins"]["released"]
  assert (m["n"], m["differ"], m["first_below_last"]) == (5, 3, 2)
  assert abs(m["max_abs_diff_pixel"] - 0.0015) < 1e-12  # ∞ against finite is counted, not sized
  assert m["bisection_resolution_pixel"] == 0.5 / 1024
  assert m["quantiles_pm1"]["q50"] == {"first": 0.04, "last": 0.04}
  assert c["ood_acc"]["released"]["eps_0.05"] == {"first": 0.5, "last": 0.6}
  assert c["test_iid_acc_equal"]

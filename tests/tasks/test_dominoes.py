"""gs_jax.tasks.dominoes: grouping of responses and the summary (sweep choice) over seeds."""

import numpy as np
import pytest

from gs_jax.tasks import dominoes as lib


def test_group_responses_splits_at_half_the_attribution():
  r = lib.group_responses([1.0, 2.0, 4.0, 8.0], [0.9, 0.5, 0.49, 0.0])
  assert r == {"z_mnist": 3.0, "z_cifar": 12.0, "n_mnist": 2, "n_cifar": 2}


def _sweep_run(lam, intact, rand):
  return {
    "method": f"sd{lam:g}",
    "sd_lambda": lam,
    "val_acc": {"intact": intact, "mnist_random": rand},
  }


@pytest.mark.parametrize(
  "runs, chosen",
  [
    # the randomised accuracy decides
    ([(0.01, 0.99, 0.60), (0.1, 0.99, 0.70), (1.0, 0.99, 0.65)], 0.1),
    # tied on it: the intact accuracy decides
    ([(0.01, 0.99, 0.48), (0.1, 0.98, 0.48), (1.0, 0.97, 0.48)], 0.01),
    # tied on both (a digit-only network at every λ): the larger λ
    ([(0.01, 0.997, 0.483), (0.1, 0.997, 0.483), (1.0, 0.997, 0.483)], 1.0),
  ],
)
def test_sweep_choice_and_its_tie_breaks(runs, chosen):
  per_run = {f"r{i}": _sweep_run(*r) for i, r in enumerate(runs)}
  out = lib.summarise(per_run, sweep=True)
  assert out["sd_choice"]["sd_lambda"] == chosen
  assert out[f"sd{chosen:g}"]["mnist_random"]["mean"] == max(r[2] for r in runs)


def test_summary_over_seeds_is_mean_and_sample_std():
  base = {"method": "erm", "train_acc": 1.0, "z_cifar": 0.0}
  tests = [
    {"intact": 0.9, "mnist_random": 0.5, "cifar_random": 0.9},
    {"intact": 0.8, "mnist_random": 0.7, "cifar_random": 0.7},
  ]
  per_run = {f"erm_s{i}": {**base, "test_acc": t, "z_mnist": float(i)} for i, t in enumerate(tests)}
  out = lib.summarise(per_run, sweep=False)["erm"]
  assert out["seeds"] == 2
  np.testing.assert_allclose(out["test_mnist_random"]["mean"], 0.6)
  np.testing.assert_allclose(out["test_mnist_random"]["std"], np.std([0.5, 0.7], ddof=1))
  np.testing.assert_allclose(out["z_mnist"]["std"], np.std([0.0, 1.0], ddof=1))

"""analysis.dominoes_figures on fake run directories."""

import json
import os

import numpy as np
import pytest

from analysis import dominoes_figures


def _fake_run(path, a, methods=("erm", "l2", "sd"), seeds=2):
  per = {}
  for m_i, m in enumerate(methods):
    for s in range(seeds):
      per[f"{m}_s{s}"] = {
        "method": m,
        "seed": s,
        "train_acc": 1.0,
        "test_acc": {
          "intact": 0.99,
          "mnist_random": 0.9 - a * (0.3 - 0.1 * m_i) + 0.01 * s,
          "cifar_random": 0.5 + 0.4 * a,
        },
        "z_cifar": 1.0 - a + m_i,
        "z_mnist": a,
        "n_mnist": int(20 * a) + s,
      }
  os.makedirs(path, exist_ok=True)
  json.dump(
    {"experiment": "dominoes", "config": {"a": a}, "per_seed": per},
    open(os.path.join(path, "results.json"), "w"),
  )


def test_analysis_on_fake_runs(tmp_path):
  for a in (0.0, 0.5, 1.0):
    _fake_run(tmp_path / "runs" / f"a{a:g}", a)
  text = dominoes_figures.report(str(tmp_path / "runs" / "a*"), tmp_path / "fig")
  for ext in ("png", "pdf", "json"):
    assert (tmp_path / "fig" / f"dominoes.{ext}").exists()
  summary = json.load(open(tmp_path / "fig" / "dominoes.json"))["summary"]
  v = summary["erm"]["test_mnist_random"]["1"]
  assert (
    v["n"] == 2
    and v["mean"] == pytest.approx(0.605)
    and v["std"] == pytest.approx(0.01 / np.sqrt(2))
  )
  assert summary["sd"]["z_cifar"]["0"]["mean"] == pytest.approx(3.0)
  assert "| ERM | 1 | 2 | 60.5 ± 0.7 |" in text
  assert summary["erm"]["n_mnist"]["1"]["mean"] == pytest.approx(20.5)  # seeds: 20, 21
  with pytest.raises(FileNotFoundError):
    dominoes_figures.report(str(tmp_path / "nothing*"), tmp_path / "fig2")

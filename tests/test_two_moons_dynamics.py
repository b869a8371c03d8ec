"""Reduced run of experiments.two_moons_dynamics (Figure 1 d); full run is the CLI default."""
import json

import jax
import numpy as np

from experiments import two_moons_dynamics as tmd
from gs_jax import models, train
from gs_jax.data import toy


def test_identified_features_are_orthonormal_and_horizontal_vertical():
  x, y = toy.two_moons(0, 0.1)
  model = models.two_layer_relu(500)
  tx = train.make_optimizer("sgd", 1e-2, momentum=0.9, weight_decay=2e-4)
  p0 = train.init_state(model, tx, jax.random.PRNGKey(0), x).params
  out = tmd.identify_features(model, p0, x, y)
  U = out["U"]
  np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-10)
  assert np.all(U.sum(0) > 0)                      # oriented to fit the labels
  corr = out["corr"]                               # rows: z1, z2; cols: x1, x2
  assert abs(corr[0, 0]) > 0.95 and abs(corr[0, 1]) < 0.2
  assert abs(corr[1, 1]) > 0.8
  assert min(out["captured"]) > 0.9                # Y x lies in the top-3 feature space


def test_reduced_run(tmp_path):
  res = tmd.main(["--seeds=2", "--num_epochs=150", "--width=200", "--no_progress",
                  f"--out_dir={tmp_path}"])
  for s in res["settings"]:
    assert s["z"].shape == (2, 151, 2)
    assert s["z0_max_abs"] < 1e-4                  # z = U^T Y (ŷ_0 − ŷ_0) = 0 at init
  z1 = {s["label"]: s["z"][:, -1, 0].mean() for s in res["settings"]}
  assert z1["Δ=+0.1 SD"] < z1["Δ=+0.1 ERM"]        # SD lowers the horizontal response
  summary = json.loads((tmp_path / "results.json").read_text())["summary"]
  assert len(summary) == 3
  for ext in ("png", "pdf"):
    assert (tmp_path / f"figure1d.{ext}").exists()

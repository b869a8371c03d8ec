"""gs_jax.tasks.moons_dynamics (Figure 1(d)): identified features are orthonormal and horizontal /
vertical, and responses recorded in the scan equal the same formulas outside."""

import jax
import numpy as np

from gs_jax.tasks import moons_dynamics
from gs_jax.data import toy


def _apply(model):
  return lambda p, x: model.apply({"params": p}, x)


def test_identified_features_are_orthonormal_and_horizontal_vertical():
  x, y = toy.two_moons(0, 0.1)
  model, init, _ = moons_dynamics.make_trainer(
    width=500, lr=1e-2, momentum=0.9, weight_decay=2e-4, chunk=10
  )
  p0 = jax.tree_util.tree_map(
    lambda a: a[0], init(jax.random.PRNGKey(0)[None], {"x": x[None]}).params
  )
  out = moons_dynamics.identify_features(_apply(model), p0, x, y)
  U = out["U"]
  np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-10)
  assert np.all(U.sum(0) > 0)  # oriented to fit the labels
  corr = out["corr"]  # rows: z1, z2; cols: x1, x2
  assert abs(corr[0, 0]) > 0.95 and abs(corr[0, 1]) < 0.2
  assert abs(corr[1, 1]) > 0.8
  assert min(out["captured"]) > 0.9  # Y x lies in the top-3 feature space
  assert out["U_released"].shape == (300, 2) and out["g_released"].shape == (2, 3600)


def test_responses_in_the_scan_equal_the_same_formulas_outside():
  model, init, trainer = moons_dynamics.make_trainer(
    width=64, lr=1e-2, momentum=0.9, weight_decay=2e-4, chunk=7
  )
  batches, states0, feats = moons_dynamics.setup(
    model, init, [0, 1], 0.1, num_candidates=3, columns=(1, 6), grid_points=moons_dynamics.grid(10)
  )
  _, hist, traj = moons_dynamics.train_setting(
    model, trainer, states0, batches, 0.003, 15, progress=False
  )
  assert traj["z"].shape == traj["released"].shape == (2, 16, 2)
  assert hist["z"].shape == (2, 15, 2)
  # Step 0 (recorded inside the compiled scan) is θ0: z = 0 and r = |ŷ0 · U_K|, computed
  # here in float64 from the same float32 logits (1e-4: float32 sums of 300 terms ~1e2).
  np.testing.assert_allclose(traj["z"][:, 0], 0.0, atol=1e-4)
  r0 = np.abs(
    np.einsum(
      "sn,snk->sk",
      batches["logits0"].astype(np.float64),
      np.stack([f["U_released"] for f in feats]),
    )
  )
  np.testing.assert_allclose(traj["released"][:, 0], r0, rtol=1e-4, atol=1e-4)
  assert np.all(r0 > 0)  # uncentred: the init function shows
  # The final point (computed outside the scan) continues the in-scan path smoothly.
  step = np.abs(np.diff(traj["z"], axis=1))
  assert np.all(step[:, -1] <= 2 * step[:, -2].max() + 1e-4)

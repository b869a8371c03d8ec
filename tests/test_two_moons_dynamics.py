"""Figure 1(d): feature identification, the released view, and reduced runs of the experiment
(the full ``paper`` preset is the command in configs/two_moons_dynamics.py)."""

import json

import jax
import numpy as np
import pytest

from configs import two_moons_dynamics as configs
from experiments import two_moons_dynamics as tmd
from gs_jax.experiment import cli
from gs_jax.tasks import moons_dynamics
from gs_jax.theory import ntk
from gs_jax.data import toy

# Reduced config: 2 seeds, width 100, 120 steps in chunks of 20; a checkpoint after every chunk.
QUICK = (
  "--preset=cpu_quick",
  "--steps=120",
  "--chunk=20",
  "--checkpoint_every_s=0",
  "--record_every=5",
  "--no_progress",
)


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


def test_gram_eigenvectors_are_torch_svd_columns_and_label_weighted_features():
  rng = np.random.default_rng(0)
  phi = rng.normal(size=(12, 30))
  K = phi @ phi.T
  y = np.where(rng.normal(size=12) > 0, 1.0, -1.0)
  cols = (1, 6)
  Uk, evals = ntk.gram_eigenvectors(K, cols)
  Usvd, svals, _ = np.linalg.svd(K)  # torch.svd(K)'s U (up to column signs)
  np.testing.assert_allclose(evals, svals, rtol=1e-10)
  np.testing.assert_allclose(np.abs(Uk.T @ Usvd[:, cols]), np.eye(2), atol=1e-10)
  # Column c of U_K is ±Y u_c, u_c the c-th feature of YΦ0: the released |ŷ·U_K[:, c]| is
  # the absolute eq-4 response with uncentred logits.
  U, _ = ntk.features_from_kernel(K, y)
  np.testing.assert_allclose(np.abs(Uk.T @ (y[:, None] * U[:, cols])), np.eye(2), atol=1e-10)
  logits = rng.normal(size=(5, 12))
  np.testing.assert_allclose(
    np.abs(logits @ Uk), np.abs(ntk.responses(U[:, cols], y, logits)), atol=1e-5
  )
  with pytest.raises(ValueError, match="columns"):
    ntk.gram_eigenvectors(K, (12,))


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


def _arrays(run_dir):
  out = {}
  for name in ("erm_neg", "erm_pos", "sd_pos"):
    with np.load(run_dir / "trajectories" / f"{name}.npz") as f:
      out.update({f"{name}/{k}": f[k] for k in f.files})
  return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("full")
  return out, tmd.run(cli.parse(configs, [*QUICK, f"--out_dir={out}"]))


def test_reduced_run(full_run, capsys, tmp_path):
  out, res = full_run
  m = res["metrics"]
  assert set(m) == {"erm_neg", "erm_pos", "sd_pos"}
  for name, s in m.items():
    assert s["z_at_init_max_abs"] < 1e-4  # z = U^T Y (ŷ_0 − ŷ_0) = 0 at init
    assert s["z1_final"]["n"] == 2 and len(s["released_final"]) == 2
    assert len(res["per_seed"][name]["z1_final"]) == 2
  assert m["sd_pos"]["z1_final"]["mean"] < m["erm_pos"]["z1_final"]["mean"]  # SD lowers z1
  assert m["erm_pos"]["train_accuracy"]["mean"] == 1.0
  assert res["std_convention"] == "sample (ddof=1)"
  traj = _arrays(out)
  assert traj["erm_pos/z"].shape == (2, 121, 2)
  lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 3 * 120 // 5 and len(lines[0]["z"]) == 2
  assert lines[1]["step"] == 6 and lines[1]["setting"] == "erm_neg"
  for ext in ("png", "pdf"):
    assert (out / f"figure1d.{ext}").stat().st_size > 10_000
  # Started again: nothing is retrained. Settings changed (the parts of the run): each
  # setting is retrained under the new values, in a checkpoint of its own (gs_jax.experiment.run).
  capsys.readouterr()
  tmd.run(cli.parse(configs, [*QUICK, f"--out_dir={out}"]))
  assert capsys.readouterr().out.count("not retrained") == 3
  import shutil

  copy = tmp_path / "copy"  # the fixture's folder stays as it is for the other tests
  shutil.copytree(out, copy)
  other = tmd.run(cli.parse(configs, [*QUICK, "--steps=100", f"--out_dir={copy}"]))
  assert capsys.readouterr().out.count("not retrained") == 0
  assert other["config"]["steps"] == 100 and len(set(other["parts"].values())) == 3


def test_killed_run_resumes_to_the_same_numbers(full_run, tmp_path, capsys):
  """Killed in the second setting after three chunks, the same command skips the finished
  setting, resumes the second from its last checkpoint (step 40: the chunk ending at 60 was
  not saved before the kill) and ends bit-identical to the uninterrupted run."""
  full_out, full_res = full_run
  cfg = cli.parse(configs, [*QUICK, f"--out_dir={tmp_path}"])

  class Killed(Exception):
    pass

  def kill(name, done, hist):
    if name == "erm_pos" and done == 60:
      raise Killed

  with pytest.raises(Killed):
    tmd.run(cfg, on_chunk=kill)
  seen = []
  capsys.readouterr()
  res = tmd.run(cfg, on_chunk=lambda name, done, hist: seen.append((name, done)))
  assert capsys.readouterr().out.count("not retrained") == 1
  assert [d for n, d in seen if n == "erm_pos"] == [60, 80, 100, 120]
  full, resumed = _arrays(full_out), _arrays(tmp_path)
  for k in full:
    np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
  for name in full_res["metrics"]:
    assert res["per_seed"][name] == full_res["per_seed"][name]
  log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert log == [json.loads(x) for x in (full_out / "metrics.jsonl").read_text().splitlines()]


def test_cli_rejects_bad_flags():
  for bad in ("--seeds=0", "--released_columns=-1", "--num_candidates=1", "--nope=1"):
    with pytest.raises(SystemExit):
      cli.parse(configs, [bad])

"""Theorem 2 on trained models (experiments.theorem2, gs_jax.starvation): reduced runs, resume.

The full protocol is ``python -m experiments.theorem2`` (``configs/theorem2.py``)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gs_jax.base._compat import enable_x64

from configs import theorem2 as configs
from experiments import theorem2
from gs_jax.experiment import checkpoint
from gs_jax.nn import losses, models
from gs_jax.theory import ntk
from gs_jax.tasks import starvation
from gs_jax.data import toy

# In-process runs keep the test process's JAX devices (the CLI would add one per core).
ONE_DEVICE = ("--cpu_devices=1", "--no_progress")


def test_coupled_features_factorise_exactly():
  prob = toy.coupled_features((2.0, 5.0), 2.0, delta=0.5, m=4, seed=3)
  V = prob["V"]
  np.testing.assert_allclose(V.T @ V, np.eye(2), atol=1e-14)
  for phi, S in zip(prob["phi"], prob["S"]):
    u, s, vt = np.linalg.svd(np.diag(prob["y"]) @ phi)
    np.testing.assert_allclose(s, np.sort(S)[::-1], rtol=1e-14)
    np.testing.assert_allclose(np.diag(prob["y"]) @ phi, prob["U"] @ np.diag(S) @ V.T, atol=1e-14)


def test_clusters_scale_only_the_first_cluster():
  xa, y = toy.clusters(1.0, n_per_cluster=5, angle_deg=60.0)
  xb, _ = toy.clusters(2.5, n_per_cluster=5, angle_deg=60.0)
  np.testing.assert_array_equal(y, np.ones(10))
  np.testing.assert_allclose(xb[:5], 2.5 * xa[:5], rtol=1e-15)
  np.testing.assert_array_equal(xb[5:], xa[5:])
  np.testing.assert_allclose(xa[5:].mean(0), [np.cos(np.pi / 3), np.sin(np.pi / 3)], atol=0.15)


def test_theory_objective_is_eq5_and_eq17():
  with enable_x64():
    rng = np.random.default_rng(0)
    logits, logits0 = rng.normal(size=5), rng.normal(size=5)
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    params = {"a": rng.normal(size=3), "b": rng.normal(size=(2, 2))}
    params0 = jax.tree_util.tree_map(lambda p: p + 0.5, params)
    c = logits - logits0
    nll = np.sum(np.log1p(np.exp(-y * c)))
    batch = {"y": y, "logits0": logits0, "params0": params0}
    ridge, _ = losses.theory_objective(logits, batch, params, 0, {"ridge": 0.3, "sd": 0.0})
    np.testing.assert_allclose(ridge, nll + 0.5 * 0.3 * 0.25 * 7, rtol=1e-14)
    np.testing.assert_allclose(
      ntk.ridge_from_init(params, params0, 0.3), 0.5 * 0.3 * 0.25 * 7, rtol=1e-14
    )
    sd, m = losses.theory_objective(logits, batch, params, 0, {"ridge": 0.0, "sd": 0.3})
    np.testing.assert_allclose(sd, nll + 0.5 * 0.3 * np.sum(c**2), rtol=1e-14)
    np.testing.assert_allclose(m["nll"], nll, rtol=1e-14)


def test_linear_model_trained_by_gd_matches_the_dual_fixed_point():
  lcfg = configs.get_config("quick").linear  # s1 = 2.5, 4, 6; 60,000 steps
  with enable_x64():
    res = starvation.linear_check(lcfg, progress=False)
  # GD at step 1/L ends with |grad| at round-off, so the trained optimum equals the Newton
  # fixed point up to float64 conditioning (measured 1.3e-14).
  for name in ("ridge", "sd"):
    assert res[name]["max_rel_error"] < 1e-11, res[name]["rel_error"]
    assert max(res[name]["grad_norm"]) < 1e-12
  z2 = np.asarray(res["ridge"]["z_trained"])[:, 1]
  assert np.all(np.diff(z2) < 0)  # Theorem 2: feature 1 starves feature 2
  assert np.all(np.asarray(res["ridge"]["dz2_ds1sq_dual_autodiff"]) < 0)
  assert np.all(np.asarray(res["ridge"]["dz2_ds1sq_trained_fd"]) < 0)
  z2_sd = np.asarray(res["sd"]["z_trained"])[:, 1]
  np.testing.assert_allclose(z2_sd, z2_sd[0], rtol=1e-12)  # SD: z* does not depend on S
  np.testing.assert_allclose(res["sd"]["dz2_ds1sq_dual_autodiff"], 0.0, atol=1e-15)


def test_feature_scaled_net_scales_only_s1():
  """Explicit NTRF of the reparametrised net: YΦ0P = U diag(κ s1, s2, …) V^T."""
  with enable_x64():
    x, y = toy.clusters(1.5, n_per_cluster=3)
    x = jnp.asarray(x)
    model = models.NTKTwoLayerReLU(width=16, bias_scale=0.0)
    f = lambda p, xx: model.apply({"params": p}, xx)
    p0 = model.init(jax.random.PRNGKey(0), x)["params"]
    flat0, unravel = jax.flatten_util.ravel_pytree(p0)
    _, S_all = ntk.features(f, p0, x, y)
    k = int(np.sum(S_all > 1e-6 * S_all[0]))  # bias-free ReLU: Φ0 is rank deficient
    U, S, V = ntk.features(f, p0, x, y, k=k, return_v=True)
    net = models.FeatureScaledNet(f, unravel)
    kappa = 1.7
    variables = models.FeatureScaledNet.variables(flat0, V[:, 0], kappa)
    np.testing.assert_array_equal(net.apply(variables, x), f(p0, x))  # ω = 0 is θ0
    g = lambda w, xx: net.apply({**variables, "params": {"omega": w}}, xx)
    phi = np.asarray(ntk.ntrf(g, jnp.zeros_like(flat0), x))
    s_ref = np.linalg.svd(np.diag(y) @ phi, compute_uv=False)
    np.testing.assert_allclose(
      s_ref[: len(S)], np.sort(np.r_[kappa * S[0], S[1:]])[::-1], rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(
      np.diag(y) @ phi, U @ np.diag(np.r_[kappa * S[0], S[1:]]) @ V.T, atol=1e-9
    )


def _network_run(out_dir, *extra):
  return theorem2.main(
    [
      f"--out_dir={out_dir}",
      "--preset=quick",
      "--parts=network",
      "--checkpoint_seconds=0",
      *ONE_DEVICE,
      *extra,
    ]
  )


@pytest.fixture(scope="module")
def quick_network(tmp_path_factory):
  """The quick width sweep (widths 32, 1024; κ = 1, 1.5; one seed), uninterrupted."""
  out = tmp_path_factory.mktemp("uninterrupted")
  return out, _network_run(out)


def test_quick_network_error_falls_with_width_and_starvation_sign(quick_network, capsys):
  out, res = quick_network
  net = res["metrics"]["network"]
  assert sorted(net, key=int) == ["32", "1024"]
  # Measured 9.7e-2 and 4.4e-3: the wide net stays in the linear regime of eq 3.
  assert net["1024"]["rel_error"]["mean"] < 0.2 * net["32"]["rel_error"]["mean"]
  assert net["1024"]["rel_error"]["mean"] < 0.02
  for m in net.values():  # dz2/d(s1²) < 0 at fixed U, in trained nets and in the dual
    assert m["frac_trained_fd_negative"] == m["frac_autodiff_negative"] == 1.0
  ps = res["per_seed"]["network"]["1024"]
  assert np.shape(ps["z_trained"]) == (1, 2, 2) and np.shape(ps["rel_error"]) == (1, 2)
  np.testing.assert_allclose(np.asarray(ps["s1"])[0, 1] / np.asarray(ps["s1"])[0, 0], 1.5)
  assert res["std_convention"] == "sample (ddof=1)"
  for name in ("theorem2_network.png", "theorem2_network.pdf", "metrics.jsonl"):
    assert (out / name).stat().st_size > 1000
  # The same command again finds both widths and trains nothing.
  capsys.readouterr()
  _network_run(out)
  text = capsys.readouterr().out
  assert text.count("not retrained") == 2 and "(b) finite networks" in text


def test_killed_width_sweep_resumes_to_the_same_numbers(
  quick_network, tmp_path, monkeypatch, capsys
):
  """Killed after a checkpoint in the middle of width 1024 (width 32 finished), the same
  command skips width 32, resumes width 1024 at that step and ends with the same numbers."""
  _, full = quick_network

  class Killed(Exception):
    pass

  save = checkpoint.Checkpointer.save

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if "width_1024-" in self.directory and step == 2000:  # ckpt/<part>-<digest>
      raise Killed

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    _network_run(tmp_path)
  monkeypatch.undo()
  partial = json.loads((tmp_path / "results.json").read_text())
  assert list(partial["metrics"]["network"]) == ["32"]
  capsys.readouterr()
  resumed = _network_run(tmp_path)
  text = capsys.readouterr().out
  assert "width 32: found" in text
  assert "width 1024: resuming from the checkpoint at step 2000" in text
  assert resumed["per_seed"] == full["per_seed"]  # bit for bit
  for w, m in full["metrics"]["network"].items():
    assert {k: v for k, v in resumed["metrics"]["network"][w].items() if k != "seconds"} == {
      k: v for k, v in m.items() if k != "seconds"
    }
  assert not any((tmp_path / "ckpt").rglob("width_1024-*"))  # removed once written


def test_linear_part_from_the_cli(tmp_path, capsys):
  theorem2.main(
    [
      f"--out_dir={tmp_path}",
      "--parts=linear",
      "--linear.s1=2.5,5",
      "--linear.steps=20000",
      *ONE_DEVICE,
    ]
  )
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["config"]["parts"] == ["linear"] and res["config"]["linear"]["s1"] == [2.5, 5.0]
  assert res["metrics"]["linear"]["ridge"]["max_rel_error"] < 1e-6
  assert "(a) linear model" in capsys.readouterr().out
  for name in ("theorem2_linear.png", "theorem2_linear.pdf"):
    assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.parametrize(
  "flag",
  [
    "--parts=nope",
    "--linear.lam=0",
    "--network.sweep=x",
    "--network.kappas=1",
    "--linear.m=1",
    "--lam=0.1",
  ],
)
def test_cli_rejects_bad_flags(flag):
  with pytest.raises(SystemExit):
    theorem2.main([flag, *ONE_DEVICE])


@pytest.mark.slow
def test_full_protocol(tmp_path):
  res = theorem2.main([f"--out_dir={tmp_path}", *ONE_DEVICE])
  assert res["metrics"]["linear"]["ridge"]["max_rel_error"] < 1e-12
  errors = [
    res["metrics"]["network"][w]["rel_error"]["mean"] for w in ("64", "256", "1024", "4096", "8192")
  ]
  assert np.all(np.diff(errors) < 0) and errors[-1] < 2e-3

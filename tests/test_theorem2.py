"""Reduced runs of experiments.theorem2 (the full run is `python -m experiments.theorem2`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import enable_x64

from experiments import theorem2
from gs_jax import models, ntk




def test_linear_model_trained_by_gd_matches_exact_fixed_point():
  res = theorem2.linear_check((2.5, 4.0, 6.0), num_steps=60_000, progress=False)
  for name in ("erm", "sd"):
    assert res[name]["max_rel_error"] < 1e-4, res[name]["rel_error"]
  z2 = np.asarray(res["erm"]["z_trained"])[:, 1]
  assert np.all(np.diff(z2) < 0)                      # Theorem 2: feature 1 starves feature 2
  assert np.all(np.asarray(res["erm"]["dz2_ds1sq_dual_autodiff"]) < 0)
  z2_sd = np.asarray(res["sd"]["z_trained"])[:, 1]
  np.testing.assert_allclose(z2_sd, z2_sd[0], rtol=1e-6)   # SD: no starvation


def test_feature_scaled_net_scales_only_s1():
  """Explicit NTRF of the reparametrised net: YΦ0P = U diag(κ s1, s2, …) V^T."""
  with enable_x64():
    x, y = theorem2.cluster_data(1.5, n_per_cluster=3)
    x = jnp.asarray(x)
    model = models.NTKTwoLayerReLU(width=16, bias_scale=0.0)
    f = lambda p, xx: model.apply({"params": p}, xx)
    p0 = model.init(jax.random.PRNGKey(0), x)["params"]
    flat0, unravel = jax.flatten_util.ravel_pytree(p0)
    _, S_all = ntk.features(f, p0, x, y)
    k = int(np.sum(S_all > 1e-6 * S_all[0]))          # bias-free ReLU: Φ0 is rank deficient
    U, S, V = ntk.features(f, p0, x, y, k=k, return_v=True)
    net = theorem2.FeatureScaledNet(f, unravel)
    kappa = 1.7
    frozen = {"theta0": flat0, "v": V[:, 0], "kappa": jnp.float64(kappa)}
    g = lambda w, xx: net.apply({"params": {"omega": w}, "frozen": frozen}, xx)
    phi = np.asarray(ntk.ntrf(g, jnp.zeros_like(flat0), x))
    s_ref = np.linalg.svd(np.diag(y) @ phi, compute_uv=False)
    np.testing.assert_allclose(s_ref[:len(S)], np.sort(np.r_[kappa * S[0], S[1:]])[::-1],
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.diag(y) @ phi, U @ np.diag(np.r_[kappa * S[0], S[1:]]) @ V.T,
                               atol=1e-9)


def test_finite_network_error_falls_with_width_and_starvation_sign():
  res = theorem2.network_check(widths=(32, 1024), kappas=(1.0, 1.5), seeds=(0,),
                               num_steps=5000, progress=False)
  s = res["summary"]
  assert s[1]["rel_error_mean"] < 0.5 * s[0]["rel_error_mean"], s
  assert s[1]["rel_error_mean"] < 0.02, s
  # dz2/d(s1²) < 0 at fixed U, from the trained wide net and from the dual.
  assert s[1]["frac_trained_fd_negative"] == 1.0 and s[1]["frac_autodiff_negative"] == 1.0


def test_main_writes_results(tmp_path):
  theorem2.main(["--part=linear", "--s1=2.5,5", "--linear_steps=20000", "--no_progress",
                 f"--out_dir={tmp_path}"])
  for name in ("results.json", "theorem2_linear.png", "theorem2_linear.pdf"):
    assert (tmp_path / name).exists()

"""Top-k NTK features at scale (gs_jax.theory.ntk: dense and matrix-free routes), the response
probe inside a compiled training loop (gs_jax.training.with_probe), the memory of the
matrix-free route, Gram eigenvectors against torch's SVD, and region shares (where features
look). Small float32 models, seconds each."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gs_jax.nn import models
from gs_jax.theory import ntk
from gs_jax import training as train


def _two_logit_mlp(n=160, d=8, width=24, seed=0):
  """A float32 two-logit MLP (m ≈ 900 parameters) and n labelled points."""
  model = models.MLP(hidden=(width, width), num_outputs=2)
  x = jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float32)
  params = model.init(jax.random.PRNGKey(seed + 1), x)["params"]
  y = (np.asarray(x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2]) > 0).astype(np.int32)
  f = ntk.logit_difference(lambda p, xx: model.apply({"params": p}, xx))
  return model, f, params, x, y


def _explicit(f, params, x, y):
  """float64 SVD of the explicit YΦ0 (the float32 Jacobian, as the routes see it)."""
  phi = np.asarray(ntk.ntrf(f, params, x), np.float64)
  return np.linalg.svd(np.where(y == 1, 1.0, -1.0)[:, None] * phi, full_matrices=False)


def _max_sin_angle(U1, U2):
  """Largest principal angle between span(U1) and span(U2), as its sine."""
  c = np.linalg.svd(U1.T @ U2, compute_uv=False)
  return float(np.sqrt(max(0.0, 1.0 - c.min() ** 2)))


_MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    import jax, jax.numpy as jnp, numpy as np
    from gs_jax.nn import models
    from gs_jax.theory import ntk
    n, d, width = 400, 64, 2000
    model = models.MLP(hidden=(width, width))
    x = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.float32)
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    y = (np.asarray(x[:, 0]) > 0).astype(np.int32)
    f = lambda p, xx: model.apply({"params": p}, xx)
    m = sum(a.size for a in jax.tree_util.tree_leaves(params))
    jax.block_until_ready(f(params, x))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    U, S, info = ntk.features_matrix_free(f, params, x, y, 2, block=2, max_passes=2,
                                          batch_size=100, products="jvp", return_info=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"m": int(m), "n": n, "base": base, "peak": peak, "S": S.tolist(),
                      "krylov_dim": info["krylov_dim"]}))
""")


def test_logit_difference_is_the_scalar_logit_of_two_logit_softmax():
  """Two-logit cross-entropy is the logistic loss of eq 5 on ŷ = f_1 − f_0, y = 2c − 1."""
  model, f, params, x, y = _two_logit_mlp(n=12)
  logits = model.apply({"params": params}, x)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y))
  np.testing.assert_allclose(ce, jnp.log1p(jnp.exp(-(2 * y - 1) * f(params, x))), rtol=1e-5)
  with pytest.raises(ValueError, match=r"\(n, 2\) logits"):
    ntk.logit_difference(lambda p, xx: jnp.zeros((xx.shape[0], 3)))(params, x)


@pytest.mark.parametrize(
  "method,kw",
  [
    ("dense", {"block_size": 64}),
    ("matrix_free", {"block": 12, "max_passes": 10, "tol": 1e-9, "batch_size": 48}),
    ("matrix_free", {"block": 12, "max_passes": 10, "tol": 1e-9, "products": "jvp"}),
  ],
)
def test_routes_match_explicit_phi0(method, kw):
  """Top-6 features of n = 160 examples against the float64 SVD of the explicit Φ0.

  Tolerances: both routes see the same float32 Jacobian entries (relative error ~1e-7) and
  accumulate in float64, so singular values agree to ~κ·1e-7 with κ = s_1/s_6 ≈ 4 here; 1e-5
  leaves two orders of margin. Subspaces: by Wedin's theorem the angle is ≲ ‖ΔA‖/gap with gap
  s_6 − s_7 ≈ 3% of s_1 here, so ~1e-5; 1e-3 is asserted. The matrix-free route uses a Krylov
  space of at most 120 < n = 160 dimensions, so it is a real approximation, not exhaustion.
  """
  _, f, params, x, y = _two_logit_mlp()
  k = 6
  Ue, se, Vte = _explicit(f, params, x, y)
  U, S, V = ntk.top_features(f, params, x, y, k, method=method, return_v=True, **kw)
  assert U.shape == (x.shape[0], k) and S.shape == (k,) and V.shape == (Vte.shape[1], k)
  np.testing.assert_allclose(S, se[:k], rtol=1e-5)
  assert _max_sin_angle(U, Ue[:, :k]) < 1e-3
  assert _max_sin_angle(np.asarray(V, np.float64), Vte[:k].T) < 1e-3
  np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-10)
  assert np.all(U.sum(axis=0) >= 0)  # orientation convention of gs_jax.ntk.orient
  # Column by column (orientation fixed): u_j = ±ue_j with the sign of ue_j's sum.
  np.testing.assert_allclose(U, ntk.orient(Ue[:, :k]), atol=1e-3)


def test_matrix_free_stops_when_the_krylov_space_is_exhausted_and_checks_inputs():
  _, f, params, x, y = _two_logit_mlp(n=20)
  U, S, info = ntk.features_matrix_free(
    f, params, x, y, 3, block=8, max_passes=6, tol=0.0, return_info=True
  )
  se = _explicit(f, params, x, y)[1]
  # The random start block (8) plus the whole 20-dimensional row space of YΦ0: the next
  # block has nothing new (float32 round-off is not taken for a direction) and it stops.
  assert info["converged"] and info["krylov_dim"] == 28 and info["passes"] < 6
  np.testing.assert_allclose(S, se[:3], rtol=1e-5)
  with pytest.raises(ValueError, match="k must be"):
    ntk.features_matrix_free(f, params, x, y, 0)
  with pytest.raises(ValueError, match="block must be"):
    ntk.features_matrix_free(f, params, x, y, 5, block=3)
  with pytest.raises(ValueError, match="one logit per example"):
    ntk.features_matrix_free(lambda p, xx: jnp.stack([f(p, xx)] * 2, 1), params, x, y, 2)
  with pytest.raises(ValueError, match="products"):
    ntk.features_matrix_free(f, params, x, y, 2, products="magic")


def test_response_probe_inside_scanned_training_equals_responses_after():
  """z(t) recorded by the probe inside a lax.scan equals ntk.responses of the logits computed
  outside at the same steps (float32: 1e-4 relative)."""
  model, f, params, x, y = _two_logit_mlp(n=40)
  U, S = ntk.top_features(f, params, x, y, 4, method="dense")
  logits0 = np.asarray(f(params, x))
  probe, data = ntk.response_probe(f, x, y, U, logits0, batch_size=16)  # 3 padded chunks
  tx = optax.sgd(0.05)
  state = train.make_state({"params": params}, tx, jax.random.PRNGKey(0))
  step = train.with_probe(train.make_train_step(model, tx, train.softmax_objective), probe, 3)
  run = train.make_epoch_runner(step, scan=True)
  hp = {"sd_lambda": jnp.float32(0.0), train.PROBE: data}
  idx = np.arange(8)[:, None] % x.shape[0]
  states = []
  s = state
  for i in range(8):  # reference: one step at a time
    s, _ = run(s, x, jnp.asarray(y), idx[i : i + 1], hp)
    states.append(s)
  final, metrics = run(state, x, jnp.asarray(y), idx, hp)
  rows = train.probe_rows(metrics, int(final.step), 3)
  assert [r[0] for r in rows] == [3, 6]
  for t, z in rows:
    ref = ntk.responses(U, y, f(states[t - 1].params, x), logits0)
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-6)
  assert np.all(np.isnan(np.asarray(metrics[train.PROBE])[[0, 1, 3, 4, 6, 7]]))
  # fit_minibatch keeps the probe out of its epoch means
  _, history = train.fit_minibatch(
    model,
    tx,
    train.softmax_objective,
    state,
    {"x": x, "y": jnp.asarray(y)},
    lambda e: idx,
    1,
    hp,
    train_step=step,
    loop=train.LoopOptions(scan=True, chunk=4, progress=False),
  )
  assert train.PROBE not in history[0] and np.isfinite(history[0]["loss"])


def test_probe_schedule_records_exactly_its_steps():
  """probe_schedule = multiples of every + log-spaced early steps; with_probe/probe_rows with a
  schedule record exactly those steps (a chunk boundary in the middle changes nothing)."""
  sched = train.probe_schedule(20, 8, early=4)
  np.testing.assert_array_equal(sched, [1, 2, 4, 7, 8, 16])  # geomspace(1, 7, 4) rounded
  np.testing.assert_array_equal(train.probe_schedule(20, 8), [8, 16])
  with pytest.raises(ValueError, match="every"):
    train.with_probe(lambda s, b, h: (s, {}), lambda s, d: s, [3, 2])
  model, f, params, x, y = _two_logit_mlp(n=12)
  U, _ = ntk.top_features(f, params, x, y, 2, method="dense")
  logits0 = np.asarray(f(params, x))
  probe, data = ntk.response_probe(f, x, y, U, logits0, batch_size=12)
  tx = optax.sgd(0.05)
  state = train.make_state({"params": params}, tx, jax.random.PRNGKey(0))
  step = train.with_probe(train.make_train_step(model, tx, train.softmax_objective), probe, sched)
  run = train.make_epoch_runner(step, scan=True)
  hp = {"sd_lambda": jnp.float32(0.0), train.PROBE: data}
  idx = np.arange(20)[:, None] % x.shape[0]
  s1, m1 = run(state, x, jnp.asarray(y), idx[:5], hp)  # two chunks: steps 1–5, 6–20
  s2, m2 = run(s1, x, jnp.asarray(y), idx[5:], hp)
  rows = train.probe_rows(m1, 5, sched) + train.probe_rows(m2, 20, sched)
  assert [r[0] for r in rows] == [1, 2, 4, 7, 8, 16]
  assert all(np.all(np.isfinite(z)) for _, z in rows)
  assert np.isnan(np.asarray(m2[train.PROBE])).all(axis=1).sum() == 15 - 3


@pytest.mark.heavy  # a subprocess compiling a 4.1M-parameter model (~15–25 s)
def test_matrix_free_memory_is_o_n_k_plus_m_k_on_a_model_too_big_for_phi0():
  """A 4.1M-parameter MLP on n = 400 points: the explicit Φ0 takes n·m·4 B = 6.6 GB (and the
  dense route's neural-tangents blocks the same per block side), the matrix-free route with
  l = 2, 2 passes keeps O((n + m)·l) — its bases m·l·passes·8 B = 130 MB. Measured in a
  subprocess: the growth of the peak RSS during the call (0.73 GB measured: float64 bases and
  their temporaries, a few m-vectors each, plus XLA's compilation) must stay below 1.2 GB —
  5.5× less than Φ0; forming Φ0, one 256-row block of it (neural-tangents' dense route), or
  even the 100-row chunk Jacobian of ``products="jacobian"`` (1.65 GB) would exceed it."""
  out = subprocess.run(
    [sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  phi_bytes = 4 * r["n"] * r["m"]
  growth = r["peak"] - r["base"]
  assert r["m"] > 4_000_000 and phi_bytes > 6e9
  assert growth < 1.2e9, f"peak RSS grew by {growth / 1e9:.2f} GB (Φ0: {phi_bytes / 1e9:.1f} GB)"
  assert np.all(np.isfinite(r["S"])) and r["S"][0] >= r["S"][1] > 0


def test_region_shares():
  maps = np.zeros((2, 3, 4, 2))
  maps[0, :, :2] = 1.0  # all mass in rows 0–1
  maps[1, 0, 0, 0] = 1.0  # feature 1: one unit inside,
  maps[1, 1, 3, 1] = np.sqrt(3.0)  # three units outside
  mask = np.arange(4)[:, None] < 2
  np.testing.assert_allclose(ntk.region_shares(maps, mask), [1.0, 0.25])
  assert ntk.region_shares(np.zeros((1, 2, 4, 2)), mask)[0] == 0.0
  with pytest.raises(ValueError, match="shape"):
    ntk.region_shares(np.zeros((2, 4)), mask)


def test_feature_region_shares_find_the_half_a_model_uses():
  """A net that reads only the top half: every feature's attribution lies there, unless the
  top half does not vary in the data (then none does)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(12, 4, 2)), jnp.float32)
  y = np.tile([0, 1], 6)
  params = {
    "w": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
    "v": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
  }

  def f(p, xx):
    return jnp.tanh(xx[:, :2].reshape(len(xx), -1) @ p["w"]) @ p["v"]

  mask = np.arange(4)[:, None] < 2
  phi = np.asarray(ntk.ntrf(f, params, x), np.float64)
  U, S = ntk.features(f, params, x, y, k=3, kernel=phi @ phi.T)
  V = ntk.feature_directions(f, params, x, y, U, S)
  shares = ntk.feature_region_shares(f, params, x, U, V, mask, per_feature=4)
  np.testing.assert_allclose(shares, 1.0, atol=1e-6)
  # a net that reads everything, on data whose top half is constant: no attribution there
  full = {"w": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32), "v": params["v"]}

  def g(p, xx):
    return jnp.tanh(xx.reshape(len(xx), -1) @ p["w"]) @ p["v"]

  xb = x.at[:, :2].set(0.25)
  phi = np.asarray(ntk.ntrf(g, full, xb), np.float64)
  U, S = ntk.features(g, full, xb, y, k=3, kernel=phi @ phi.T)
  V = ntk.feature_directions(g, full, xb, y, U, S)
  shares_blank = ntk.feature_region_shares(g, full, xb, U, V, mask, per_feature=4)
  np.testing.assert_allclose(shares_blank, 0.0, atol=1e-6)
  shares_full = ntk.feature_region_shares(g, full, x, U, V, mask, per_feature=4)
  assert np.all(shares_full > 1e-3)  # with varying data both halves carry attribution


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

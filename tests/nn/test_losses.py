"""gs_jax.nn.losses: logistic and softmax cross-entropy, the SD penalties, Group DRO, GCE and LfF
weights, the theory objective (eq 5/17), and the IRM, V-REx and annealed-SD objectives
(docs/protocols.md §3.4) against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gs_jax.nn import losses
from gs_jax.base._compat import enable_x64
from gs_jax.theory import ntk


def np_bce(z, y):
  """Binary cross-entropy with logits in float64, written out: −y log σ(z) − (1−y) log(1−σ(z))."""
  p = 1.0 / (1.0 + np.exp(-z))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.fixture
def data():
  rng = np.random.default_rng(0)
  n = 64
  logits = rng.normal(scale=2.0, size=n).astype(np.float32)
  y = rng.integers(0, 2, n).astype(np.float32)
  env = np.repeat([0, 1, 2], [20, 30, 14]).astype(np.int32)
  rng.shuffle(env)
  return logits, y, env


def test_logistic_loss_matches_hand_computation_and_label_conventions():
  z = np.array([-2.0, -0.5, 0.0, 0.7, 3.0], np.float32)
  y01 = np.array([1, 0, 1, 1, 0])
  ypm = 2 * y01 - 1
  expected = np.mean(np.log1p(np.exp(-ypm * z.astype(np.float64))))
  np.testing.assert_allclose(losses.logistic_loss(z, y01), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.logistic_loss(z, ypm), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.logistic_loss(z, ypm, reduction="sum"), 5 * expected, rtol=1e-6)
  assert losses.binary_label_kind(y01) == "01"
  assert losses.binary_label_kind(ypm) == "pm1"


def test_logistic_loss_gradient_is_hand_derived():
  z = jnp.array([-2.0, -0.5, 0.0, 0.7, 3.0])
  y = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0])
  g = jax.grad(lambda z: losses.logistic_loss(z, y, kind="pm1"))(z)
  # d/dz softplus(-y z) = -y * sigmoid(-y z); mean divides by n.
  expected = -np.asarray(y) / (1.0 + np.exp(np.asarray(y * z))) / 5
  np.testing.assert_allclose(g, expected, rtol=1e-6)


def test_logistic_loss_is_finite_at_huge_logits():
  z = jnp.array([1e4, -1e4, 1e4, -1e4])
  y = jnp.array([1.0, 1.0, -1.0, -1.0])
  per = losses.logistic_loss(z, y, kind="pm1", reduction="none")
  np.testing.assert_allclose(per, [0.0, 1e4, 1e4, 0.0], rtol=1e-7)
  g = jax.grad(lambda z: losses.logistic_loss(z, y, kind="pm1", reduction="sum"))(z)
  np.testing.assert_allclose(g, [0.0, -1.0, 1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize(
  "bad, named", [([0, 1, 2], "2"), ([-1, 1, 3], "3"), ([0, -1, 1], "-1"), ([0.5, 1], "0.5")]
)
def test_bad_binary_labels_raise_naming_the_values(bad, named):
  with pytest.raises(ValueError, match=named):
    losses.logistic_loss(jnp.zeros(len(bad)), np.array(bad))


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="shape"):
    losses.logistic_loss(jnp.zeros(4), np.ones(3))
  with pytest.raises(ValueError, match="logits"):
    losses.softmax_cross_entropy(jnp.zeros((4, 3)), np.zeros(5, int))


def test_softmax_cross_entropy_against_definition_and_bad_classes():
  logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
  labels = np.array([1, 0])
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  expected = -np.mean(np.log(p[np.arange(2), labels]))
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)
  with pytest.raises(ValueError, match="3"):
    losses.softmax_cross_entropy(logits, np.array([0, 3]))


def test_sd_penalty_is_its_definition_with_gradient():
  z = jnp.array([[0.5, -2.0], [1.0, 3.0], [0.0, 1.5]])
  np.testing.assert_allclose(losses.sd_penalty(z, 0.01), 0.01 * np.mean(np.square(z)), rtol=1e-6)
  g = jax.grad(lambda z: losses.sd_penalty(z, 0.01))(z)
  np.testing.assert_allclose(g, 2 * 0.01 * np.asarray(z) / z.size, rtol=1e-6)


def test_sd_with_targets_matches_per_class_loop():
  rng = np.random.default_rng(0)
  z = rng.normal(size=20).astype(np.float32)
  y = rng.integers(0, 2, size=20)
  lam, gam = (0.1, 0.3), (0.44, 2.5)
  expected = sum(lam[c] * np.mean((z[y == c] - gam[c]) ** 2) for c in (0, 1))
  np.testing.assert_allclose(losses.sd_penalty_with_targets(z, y, lam, gam), expected, rtol=1e-5)


def test_sd_with_released_celeba_targets_by_hand():
  z = np.array([3.0, 0.5, -1.0, 2.0], np.float32)
  y = np.array([1, 0, 0, 1])
  # 0.1·mean_{y=1}(ŷ−2.5)² + 0.1·mean_{y=0}(ŷ−0.44)²
  expected = 0.1 * ((0.5**2 + 0.5**2) / 2) + 0.1 * ((0.06**2 + 1.44**2) / 2)
  np.testing.assert_allclose(
    losses.sd_penalty_with_targets(z, y, (0.1, 0.1), (0.44, 2.5)), expected, rtol=1e-5
  )


def test_group_dro_update_matches_hand_computation():
  q0 = jnp.full(4, 0.25)
  per_example = jnp.array([1.0, 3.0, 0.5, 2.0, 4.0])
  groups = jnp.array([0, 0, 1, 3, 3])
  gl, counts = losses.group_mean_losses(per_example, groups, 4)
  np.testing.assert_allclose(gl, [2.0, 0.5, 0.0, 3.0])  # absent group 2: 0
  np.testing.assert_allclose(counts, [2, 1, 0, 2])
  eta = 0.01
  w = 0.25 * np.exp(eta * np.array([2.0, 0.5, 0.0, 3.0]))
  w = w / w.sum()
  loss, q = losses.group_dro_update(q0, gl, step_size=eta)
  np.testing.assert_allclose(q, w, rtol=1e-6)
  np.testing.assert_allclose(loss, np.dot(w, [2.0, 0.5, 0.0, 3.0]), rtol=1e-6)
  # adjustments C/√n_g (training-set counts), only when every C > 0
  n = np.array([100.0, 25.0, 16.0, 4.0])
  adj_l = np.array([2.0, 0.5, 0.0, 3.0]) + 1.0 / np.sqrt(n)
  w = 0.25 * np.exp(eta * adj_l)
  w = w / w.sum()
  loss, q = losses.group_dro_update(q0, gl, step_size=eta, adjustments=[1.0] * 4, train_counts=n)
  np.testing.assert_allclose(q, w, rtol=1e-6)
  np.testing.assert_allclose(loss, np.dot(w, adj_l), rtol=1e-6)
  _, q = losses.group_dro_update(
    q0, gl, step_size=eta, adjustments=[1.0, 0.0, 1.0, 1.0], train_counts=n
  )
  w = 0.25 * np.exp(eta * np.array([2.0, 0.5, 0.0, 3.0]))
  np.testing.assert_allclose(q, w / w.sum(), rtol=1e-6)
  # no gradient through q: d loss / d ℓ_g = q_g
  g = jax.grad(lambda l: losses.group_dro_update(q0, l, step_size=eta)[0])(gl)
  np.testing.assert_allclose(g, losses.group_dro_update(q0, gl, step_size=eta)[1], rtol=1e-6)


def test_generalized_cross_entropy_formula_and_gradient():
  z = np.array([-2.0, -0.3, 0.0, 1.2, 4.0], np.float32)
  y = np.array([1, 0, 1, 1, 0])
  p = 1 / (1 + np.exp(-(2 * y - 1) * z.astype(np.float64)))
  np.testing.assert_allclose(
    losses.generalized_cross_entropy(z, y, 0.7, reduction="none"), (1 - p**0.7) / 0.7, rtol=1e-5
  )
  # ∇ GCE = p^q · ∇ CE, per example
  g = jax.grad(lambda z: losses.generalized_cross_entropy(z, y, 0.7, reduction="sum"))(z)
  g_ce = jax.grad(lambda z: losses.logistic_loss(z, y, kind="01", reduction="sum"))(z)
  np.testing.assert_allclose(g, p**0.7 * np.asarray(g_ce), rtol=1e-5)
  # q → 0 recovers cross-entropy
  np.testing.assert_allclose(
    losses.generalized_cross_entropy(z, y, 1e-4, reduction="none"), -np.log(p), rtol=1e-3
  )


def test_lff_ema_and_weights_match_direct_formulas():
  alpha = 0.7
  ema, seen = jnp.zeros((2, 6)), jnp.zeros(6)
  v1 = jnp.array([[1.0, 2.0, 3.0], [0.5, 0.5, 4.0]])
  ema, seen = losses.ema_update(ema, seen, jnp.array([0, 2, 4]), v1, alpha)
  np.testing.assert_allclose(ema[:, [0, 2, 4]], v1)  # first visit: m = v
  v2 = jnp.array([[3.0, 1.0], [1.0, 2.0]])
  ema, seen = losses.ema_update(ema, seen, jnp.array([2, 5]), v2, alpha)
  np.testing.assert_allclose(ema[:, 2], alpha * v1[:, 1] + (1 - alpha) * v2[:, 0], rtol=1e-6)
  np.testing.assert_allclose(ema[:, 5], v2[:, 1])
  np.testing.assert_allclose(seen, [1, 0, 1, 0, 1, 1])
  y_all = jnp.array([0, 1, 0, 1, 1, 0])
  idx = jnp.array([0, 4, 5])
  w = losses.lff_weights(ema[0], ema[1], y_all, idx)
  e = np.asarray(ema)
  yn = np.asarray(y_all)
  expected = []
  for i in np.asarray(idx):
    lb = e[0, i] / e[0][yn == yn[i]].max()
    ld = e[1, i] / e[1][yn == yn[i]].max()
    expected.append(lb / (lb + ld + 1e-8))
  np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_env_risks_match_masked_means(data):
  logits, y, env = data
  per = np_bce(logits.astype(np.float64), y)
  want = [per[env == e].mean() for e in range(3)]
  got = losses.env_risks(jnp.asarray(per, jnp.float32), env, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # an absent environment has risk 0, not NaN
  assert float(losses.env_risks(jnp.ones(4), jnp.zeros(4, jnp.int32), 2)[1]) == 0.0


def test_irm_penalty_matches_finite_differences(data):
  logits, y, env = data
  z = logits.astype(np.float64)
  h = 1e-5
  want = []
  for e in range(3):
    m = env == e
    risk = lambda w: np_bce(w * z[m], y[m]).mean()
    want.append(((risk(1 + h) - risk(1 - h)) / (2 * h)) ** 2)
  got = losses.irm_penalty(jnp.asarray(logits), y, env, 3)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
  # closed form: dR/dw = mean (σ(z) − y) z
  closed = [
    np.mean((1 / (1 + np.exp(-z[env == e])) - y[env == e]) * z[env == e]) ** 2 for e in range(3)
  ]
  np.testing.assert_allclose(got, closed, rtol=1e-4, atol=1e-9)


def test_irm_penalty_is_differentiable_in_the_logits(data):
  logits, y, env = data
  from gs_jax.base._compat import enable_x64

  with enable_x64():
    f = lambda z: jnp.sum(losses.irm_penalty(z, jnp.asarray(y, jnp.float64), env, 3))
    check_grads(f, (jnp.asarray(logits, jnp.float64),), order=1, modes=("rev",))

    # and the gradient equals d/dz of the closed form
    def closed(z):
      out = 0.0
      for e in range(3):
        m = jnp.asarray(env == e)
        g = jnp.sum(jnp.where(m, (jax.nn.sigmoid(z) - y) * z, 0.0)) / m.sum()
        out = out + g**2
      return out

    z64 = jnp.asarray(logits, jnp.float64)
    np.testing.assert_allclose(jax.grad(f)(z64), jax.grad(closed)(z64), rtol=1e-8, atol=1e-12)


def test_vrex_penalty_is_the_variance():
  r = np.array([0.3, 0.7, 0.2, 0.55])
  np.testing.assert_allclose(losses.vrex_penalty(jnp.asarray(r)), np.var(r), rtol=1e-6)
  np.testing.assert_allclose(losses.vrex_penalty(jnp.asarray([0.4, 0.9])), 0.5**2 / 4, rtol=1e-6)


def test_annealed_weight_and_invariance_loss():
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
  risks = jnp.array([0.6, 0.8])
  pen, wd, pw = 0.01, 1e-3, 1e4
  sq = 1 + 4 + 0.25
  assert float(losses.annealed_weight(9, 10, pw)) == 1.0
  assert float(losses.annealed_weight(10, 10, pw)) == pw
  before = losses.invariance_loss(
    risks, pen, params, 9, penalty_weight=pw, anneal_steps=10, l2_weight=wd
  )
  np.testing.assert_allclose(before, 0.7 + wd * sq + pen, rtol=1e-6)
  after = losses.invariance_loss(
    risks, pen, params, 10, penalty_weight=pw, anneal_steps=10, l2_weight=wd
  )
  np.testing.assert_allclose(after, (0.7 + wd * sq + pw * pen) / pw, rtol=1e-6)
  summed = losses.invariance_loss(
    risks, pen, params, 10, penalty_weight=pw, anneal_steps=10, l2_weight=wd, risk_form="sum"
  )
  np.testing.assert_allclose(summed, (1.4 + wd * sq + pw * pen) / pw, rtol=1e-6)
  # a weight below 1 is never divided out
  small = losses.invariance_loss(
    risks, pen, params, 10, penalty_weight=0.5, anneal_steps=10, l2_weight=0.0
  )
  np.testing.assert_allclose(small, 0.7 + 0.5 * pen, rtol=1e-6)
  with pytest.raises(ValueError, match="risk_form"):
    losses.invariance_loss(
      risks, pen, params, 0, penalty_weight=pw, anneal_steps=1, l2_weight=wd, risk_form="median"
    )


def test_sd_annealed_loss_reproduces_the_released_rescaling():
  z = jnp.array([1.0, -3.0, 2.0])
  nll, c = 0.4, 2e-5
  sd = np.mean(np.square([1.0, -3.0, 2.0]))
  kw = dict(sd_coef=c, anneal_steps=450)
  np.testing.assert_allclose(losses.sd_annealed_loss(nll, z, 449, **kw), nll + c * sd, rtol=1e-6)
  np.testing.assert_allclose(losses.sd_annealed_loss(nll, z, 450, **kw), c * (nll + sd), rtol=1e-6)
  np.testing.assert_allclose(
    losses.sd_annealed_loss(nll, z, 2000, **kw, rescale=False), nll + c * sd, rtol=1e-6
  )
  # the step may be a traced array (inside lax.scan)
  f = jax.jit(lambda t: losses.sd_annealed_loss(nll, z, t, **kw))
  np.testing.assert_allclose(f(jnp.int32(451)), c * (nll + sd), rtol=1e-6)


def test_binary_entropy_from_logits():
  z = np.array([-3.0, 0.0, 0.5, 4.0])
  p = 1 / (1 + np.exp(-z))
  want = -(p * np.log(p) + (1 - p) * np.log(1 - p))
  np.testing.assert_allclose(losses.binary_entropy_from_logits(jnp.asarray(z)), want, rtol=1e-5)
  extreme = losses.binary_entropy_from_logits(jnp.array([-500.0, 500.0]))
  assert np.all(np.isfinite(extreme)) and float(extreme.max()) < 1e-30


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

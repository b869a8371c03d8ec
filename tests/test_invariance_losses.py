"""IRM, V-REx and annealed-SD objectives (docs/protocols.md §3.4) against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gs_jax.nn import losses


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

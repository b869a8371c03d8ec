import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gs_jax.nn import losses, models
from gs_jax import training as train


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


def test_coupled_weight_decay_matches_pytorch_sgd_update():
  """Two SGD steps with momentum and weight decay, by PyTorch's formulas."""
  lr, mu, wd = 0.1, 0.9, 0.05
  theta = np.array([1.0, -2.0])
  grad_fn = lambda th: np.array([2 * th[0], 3.0])  # gradient of a toy loss
  tx = train.make_optimizer("sgd", lr, momentum=mu, weight_decay=wd)
  p, s = jnp.asarray(theta), None
  s = tx.init(p)
  v = np.zeros(2)
  th = theta.copy()
  for _ in range(2):
    d = grad_fn(th) + wd * th  # torch: d_p = grad + wd * p
    v = mu * v + d  # buf = momentum * buf + d_p
    th = th - lr * v
    upd, s = tx.update(jnp.asarray(grad_fn(np.asarray(p))), s, p)
    p = optax.apply_updates(p, upd)
  np.testing.assert_allclose(p, th, rtol=1e-6)
  # and the same update is the gradient of loss + l2_penalty
  g = jax.grad(lambda q: losses.l2_penalty({"w": q}, wd))(jnp.asarray(theta))
  np.testing.assert_allclose(g, wd * theta, rtol=1e-6)


def test_torch_default_init_bounds():
  model = models.MLP(hidden=(500,), kernel_init="torch")
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]
  w1, b1 = params["dense_0"]["kernel"], params["dense_0"]["bias"]
  w2 = params["head"]["kernel"]
  assert np.abs(w1).max() <= 1 / np.sqrt(2) and np.abs(b1).max() <= 1 / np.sqrt(2)
  assert np.abs(w2).max() <= 1 / np.sqrt(500)
  # U(-b, b) has std b/sqrt(3)
  np.testing.assert_allclose(np.std(w1), (1 / np.sqrt(2)) / np.sqrt(3), rtol=0.1)


def test_small_fan_in_dense_equals_matmul():
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
  model = models.MLP(hidden=(5,), kernel_init="lecun")
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  h = jax.nn.relu(x @ params["dense_0"]["kernel"] + params["dense_0"]["bias"])
  ref = (h @ params["head"]["kernel"] + params["head"]["bias"])[:, 0]
  np.testing.assert_allclose(model.apply({"params": params}, x), ref, rtol=1e-5, atol=1e-6)


def test_small_fan_in_dense_gradients_equal_matmul_gradients():
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
  w = jax.random.normal(jax.random.PRNGKey(2), (2, 5))
  f = lambda x, w: jnp.sum(jnp.sin(models.small_fan_in_dot_general(x, w, (((1,), (0,)), ((), ())))))
  g = lambda x, w: jnp.sum(jnp.sin(x @ w))
  for a, b in zip(jax.grad(f, (0, 1))(x, w), jax.grad(g, (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


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

"""gs_jax.nn.attacks: PGD stays in its ball and the [0, 1] box and finds the optimum of a linear
model, margins by bisection against the closed form, evaluation in padded chunks, argument
checks, and the released attack units (docs/protocols.md §3.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gs_jax.nn import attacks


def _linear(p, x):
  return x.reshape(x.shape[0], -1) @ p["w"] + p["b"]


def _linear_params(seed=0, d=8 * 8 * 3, classes=2):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {
    "w": jax.random.normal(k1, (d, classes)) / np.sqrt(d),
    "b": jax.random.normal(k2, (classes,)) * 0.01,
  }


def _exact_linf_margin(p, x):
  """L∞ margin of a 2-class linear model, |f(x)| / ‖u‖₁ with f = u·x + c (clipping unbound)."""
  lg = np.asarray(_linear(p, x))
  return np.abs(lg[:, 1] - lg[:, 0]) / float(jnp.sum(jnp.abs(p["w"][:, 1] - p["w"][:, 0])))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(norm):
  p = _linear_params()
  x = jax.random.uniform(jax.random.PRNGKey(5), (16, 8, 8, 3))
  x = x.at[:4].set(0.0).at[4:8].set(1.0)  # saturated images: clipping must bind
  y = jnp.argmax(_linear(p, x), -1)
  eps = 0.03 if norm == "linf" else 0.5
  eps_vec = jnp.linspace(0.2, 1.0, 16) * eps
  for e in (eps, eps_vec):
    x_adv = attacks.pgd(
      _linear,
      p,
      x,
      y,
      jax.random.PRNGKey(1),
      e,
      norm=norm,
      steps=7,
      step_size=jnp.asarray(e) / 2,
      restarts=2,
    )
    d = (x_adv - x).reshape(16, -1)
    size = jnp.max(jnp.abs(d), 1) if norm == "linf" else jnp.linalg.norm(d, axis=1)
    assert bool(jnp.all(size <= jnp.broadcast_to(e, (16,)) * (1 + 1e-5) + 1e-7))
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_pgd_traced_equals_driven_and_finds_the_linear_optimum():
  p = _linear_params(1)
  x = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(2), (8, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  eps = 0.01
  for rand_init in (True, False):
    a = attacks.pgd(_linear, p, x, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init)
    # The same function traced inside one outer jit (pieces inlined, loops unrolled).
    b = jax.jit(
      lambda p_, x_: attacks.pgd(
        _linear, p_, x_, y, jax.random.PRNGKey(3), eps, steps=10, rand_init=rand_init
      )
    )(p, x)
    np.testing.assert_allclose(a, b, atol=1e-6)  # float32 reassociation only
  # For a linear 2-class model the L∞ optimum moves every pixel by ε against the margin
  # direction (no clipping near 0.5): PGD with step ε/10 × 10 steps from x reaches that
  # corner exactly.
  u = (p["w"][:, 1] - p["w"][:, 0]).reshape(8, 8, 3)
  s = jnp.where(y == 1, -1.0, 1.0)[:, None, None, None]
  np.testing.assert_allclose(a - x, s * eps * jnp.sign(u)[None], atol=1e-6)


def test_margin_matches_closed_form_for_a_linear_model():
  p = _linear_params(2)
  x = 0.5 + 0.02 * jax.random.normal(jax.random.PRNGKey(4), (12, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  y = y.at[0].set(1 - y[0])  # one misclassified example → 0
  exact = _exact_linf_margin(p, x)
  eps_max, steps = 0.2, 10
  m = np.asarray(
    attacks.margin(
      _linear,
      p,
      x,
      y,
      jax.random.PRNGKey(0),
      eps_max=eps_max,
      bisection_steps=steps,
      rand_init=False,
    )
  )
  assert m[0] == 0.0
  tol = eps_max / 2**steps
  inside = exact[1:] < eps_max
  assert inside.sum() >= 6
  np.testing.assert_array_less(np.abs(m[1:][inside] - exact[1:][inside]), tol + 1e-7)
  assert np.all(np.isinf(m[1:][~inside]))
  # From a random start the 10 steps of ε/10 cannot always use the whole budget: the
  # margin is never below the exact one, and on average larger.
  m3 = np.asarray(
    attacks.margin(_linear, p, x, y, jax.random.PRNGKey(0), eps_max=eps_max, bisection_steps=steps)
  )
  fin = np.isfinite(m3[1:]) & inside
  assert np.all(m3[1:][fin] >= exact[1:][fin] - tol) and m3[1:][fin].mean() > exact[1:][fin].mean()


def _mlp(p, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"])
  return h @ p["w2"]


def _mlp_setup(n=40):
  k = jax.random.split(jax.random.PRNGKey(7), 3)
  p = {
    "w1": jax.random.normal(k[0], (8 * 8 * 3, 16)) / np.sqrt(192),
    "w2": jax.random.normal(k[1], (16, 3)),
  }
  x = jax.random.uniform(k[2], (n, 8, 8, 3))
  y = jnp.argmax(_mlp(p, x), -1)
  y = y.at[:3].set((y[:3] + 1) % 3)  # three rows misclassified clean
  return p, x, y


STRONG = dict(steps=4, restarts=3, rand_init=True, clean_start=True, loss="gap", step_frac=0.2)


def test_restarts_on_unfooled_rows_only_give_the_full_batch_result():
  """Outside jit a restart runs only on the rows no earlier restart fooled (gathered into a
  smaller batch); the traced path runs every restart on every row. Same random starts, same
  rows kept: equal up to float32 reassociation across batch sizes."""
  p, x, y = _mlp_setup()
  key = jax.random.PRNGKey(1)
  eps = jnp.linspace(0.0, 0.2, x.shape[0])  # from no row fooled to most rows fooled
  fast = attacks.pgd(_mlp, p, x, y, key, eps, **STRONG)
  full = jax.jit(lambda x_: attacks.pgd(_mlp, p, x_, y, key, eps, **STRONG))(x)
  fooled = np.asarray(attacks.predict(_mlp, p, fast) != y)
  assert 5 < fooled.sum() < 35  # some rows stop early, some run every restart
  np.testing.assert_allclose(fast, full, atol=1e-6)
  # rows outside `active` are not attacked; the others are as before
  active = np.arange(x.shape[0]) % 3 == 0
  part = attacks.pgd(_mlp, p, x, y, key, eps, active=active, **STRONG)
  np.testing.assert_array_equal(part[~active], x[~active])
  np.testing.assert_allclose(part[active], full[active], atol=1e-6)
  with pytest.raises(ValueError, match="active must have shape"):
    attacks.pgd(_mlp, p, x, y, key, eps, active=active[:5], **STRONG)


def test_margin_skipping_decided_rows_equals_plain_bisection():
  """attacks.margin (clean predictions instead of PGD at ε = 0, decided rows dropped, restarts
  only on unfooled rows) against the plain bisection: every call on every row, traced."""
  p, x, y = _mlp_setup()
  key = jax.random.PRNGKey(3)

  @jax.jit
  def plain(xb, yb, k, eps):
    return attacks.robust_predictions(_mlp, p, xb, yb, k, eps, **STRONG)

  ref = attacks.margin_bisection(
    lambda xb, yb, k, eps, active=None: plain(xb, yb, k, eps),
    x,
    y,
    key,
    eps_max=0.15,
    bisection_steps=6,
  )
  m = attacks.margin(_mlp, p, x, y, key, eps_max=0.15, bisection_steps=6, **STRONG)
  ref, m = np.asarray(ref), np.asarray(m)
  assert (m == 0).sum() >= 3 and np.isfinite(m).sum() > 10 and np.isinf(m).sum() >= 1
  np.testing.assert_array_equal(m, ref)


def _foolbox_rows(
  logits_fn,
  p,
  x,
  y,
  key,
  eps,
  *,
  steps,
  restarts,
  step_frac,
  rand_init,
  clean_start=False,
  loss="xent",
  active=None,
):
  """Return-early PGD one row at a time, as Foolbox 2's ``_run_one`` loop reads (a Python
  loop per row; every iterate, the start included, checked; stop at the first misclassified
  one; the next restart only if none was). Starts as :func:`attacks.pgd` draws them."""
  n = x.shape[0]
  eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (n,))
  starts = [
    attacks.random_start(k, x, eps, "linf")
    if rand_init and not (clean_start and r == 0)
    else jnp.zeros_like(x)
    for r, k in enumerate(jax.random.split(key, restarts))
  ]
  out, pred = np.array(x), np.zeros(n, int)
  for i in range(n):
    xi, yi, e = x[i : i + 1], y[i : i + 1], eps[i]
    if active is not None and not active[i]:
      pred[i] = int(jnp.argmax(logits_fn(p, xi)[0]))
      continue
    for r in range(restarts):
      delta = starts[r][i : i + 1]
      for t in range(steps + 1):
        now = int(jnp.argmax(logits_fn(p, xi + delta)[0]))
        if now != int(yi[0]) or t == steps:
          break
        g = jax.grad(lambda xa: attacks.LOSSES[loss](logits_fn(p, xa), yi))(xi + delta)
        delta = attacks.ascent_step(xi, delta, g, e, e * step_frac, "linf")
      out[i], pred[i] = np.asarray(xi + delta)[0], now
      if now != int(yi[0]):
        break
  return out, pred


def test_return_early_is_foolbox_run_one_per_row():
  """``return_early``: each row's result and prediction are those of the literal per-row loop,
  whatever the grouping (1, 7 with padding, all rows) or an outer jit; ``active`` rows only;
  and every row the last-iterate rule fools is fooled (the same path, checked more often)."""
  p, x, y = _mlp_setup(24)
  key = jax.random.PRNGKey(4)
  eps = jnp.linspace(0.0, 0.2, x.shape[0])
  kw = dict(STRONG, return_early=True)
  ref, ref_pred = _foolbox_rows(_mlp, p, x, y, key, eps, **{k: v for k, v in STRONG.items()})
  assert 3 < (ref_pred != np.asarray(y)).sum() < 20
  for group in (1, 7, 24):
    adv, pred = attacks.pgd(_mlp, p, x, y, key, eps, group=group, return_predictions=True, **kw)
    np.testing.assert_allclose(adv, ref, atol=1e-6)  # float32 reassociation only
    np.testing.assert_array_equal(pred, ref_pred)
  traced = jax.jit(lambda x_: attacks.pgd(_mlp, p, x_, y, key, eps, group=24, **kw))(x)
  np.testing.assert_allclose(traced, ref, atol=1e-6)
  np.testing.assert_array_equal(attacks.robust_predictions(_mlp, p, x, y, key, eps, **kw), ref_pred)
  active = np.arange(x.shape[0]) % 3 != 0
  part, part_pred = attacks.pgd(
    _mlp, p, x, y, key, eps, active=active, return_predictions=True, **kw
  )
  np.testing.assert_array_equal(part[~active], x[~active])
  np.testing.assert_array_equal(part_pred[~active], attacks.predict(_mlp, p, x)[~active])
  np.testing.assert_allclose(part[active], ref[active], atol=1e-6)
  last = attacks.predict(_mlp, p, attacks.pgd(_mlp, p, x, y, key, eps, **STRONG)) != y
  assert np.all(ref_pred[np.asarray(last)] != np.asarray(y)[np.asarray(last)])
  with pytest.raises(ValueError, match="group must be"):
    attacks.pgd(_mlp, p, x, y, key, eps, group=0, **kw)


def test_return_early_stops_at_a_fixed_point_with_the_full_runs_result():
  """Rows whose gradient is exactly zero (a gate shut by mean(x) < 1/2) never move: the step
  is a fixed point and the attack stops there; the result is the per-row loop's, which runs
  every step (a zero sign step changes nothing)."""
  w = jax.random.normal(jax.random.PRNGKey(0), (8 * 8 * 3, 3)) / 8

  def gated(p, x):
    flat = x.reshape(x.shape[0], -1)
    return jax.nn.relu(flat.mean(1, keepdims=True) - 0.5)[:, :1] * (flat @ p)

  x = jax.random.uniform(jax.random.PRNGKey(1), (12, 8, 8, 3)) * 0.6
  x = x.at[6:].add(0.4)  # rows 0–5: mean ≈ 0.3 (shut); rows 6–11: mean ≈ 0.7 (open)
  y = jnp.argmax(gated(w, x), -1)
  kw = dict(steps=30, restarts=1, step_frac=0.1, rand_init=False)
  ref, ref_pred = _foolbox_rows(gated, w, x, y, jax.random.PRNGKey(2), 0.2, **kw)
  adv, pred = attacks.pgd(
    gated, w, x, y, jax.random.PRNGKey(2), 0.2, return_early=True, return_predictions=True, **kw
  )
  np.testing.assert_array_equal(adv[:6], x[:6])  # stuck at the start
  np.testing.assert_allclose(adv, ref, atol=1e-6)
  np.testing.assert_array_equal(pred, ref_pred)
  assert (ref_pred[6:] != np.asarray(y)[6:]).any()  # the open rows are attacked


def test_evaluate_in_padded_chunks_against_the_linear_closed_form():
  """``attacks.evaluate`` over 3 chunks (5, 5, 2 padded to 5 rows) on a linear model whose
  L∞ margins are known: PGD cannot flip beyond the exact margin; from a random start 10 steps
  of ε/10 move each coordinate by ε·3/4 on average, so margins below ε/2 flip; the strong
  attack (50 steps of ε/20) always reaches the corner and flips exactly the margins below ε."""
  p = _linear_params(3)
  p["b"] = -0.5 * p["w"].sum(0)  # f(0.5·1) = 0: margins spread from 0 upwards
  x = 0.5 + 0.05 * jax.random.normal(jax.random.PRNGKey(7), (12, 8, 8, 3))
  y = jnp.argmax(_linear(p, x), -1)
  y = y.at[0].set(1 - y[0])  # example 0 misclassified
  exact = _exact_linf_margin(p, x)
  s = np.sort(exact[1:])
  eps = float(s[5] + s[6]) / 2  # between two margins, no ties
  shapes = []

  def prepare(xb, yb):
    shapes.append(xb.shape)
    return xb, yb

  out = attacks.evaluate(
    _linear,
    p,
    x,
    y,
    jax.random.PRNGKey(0),
    eps={"e": eps},
    margin_n=-1,
    margin_eps_max=0.05,
    margin_bisection=10,
    strong_n=12,
    batch_size=5,
    prepare=prepare,
  )
  assert set(shapes) == {(5, 8, 8, 3)}  # one shape: compiled once
  clean = np.asarray(jnp.argmax(_linear(p, x), -1))
  np.testing.assert_array_equal(out["clean"], clean)
  y = np.asarray(y)
  ok = clean == y
  flipped = out["pgd"]["e"] != y
  assert not flipped[ok & (exact > eps * 1.001)].any()
  assert flipped[ok & (exact < eps / 2)].all() and (ok & (exact < eps / 2)).sum() >= 2
  strong_flipped = out["strong"]["e"]["strong"] != y
  np.testing.assert_array_equal(strong_flipped[ok], (exact < eps)[ok])
  np.testing.assert_array_equal(out["strong"]["e"]["weak"] != y, flipped | ~ok)
  tol = 0.05 / 2**10
  assert out["margins"][0] == 0 and np.all(out["margins"][1:] >= exact[1:] - tol)
  only_clean = attacks.evaluate(_linear, p, x, y, jax.random.PRNGKey(0), batch_size=5)
  assert set(only_clean) == {"clean", "pgd"} and not only_clean["pgd"]


def test_attack_rejects_bad_arguments():
  p = _linear_params()
  x = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(ValueError, match="norm must be"):
    attacks.pgd(_linear, p, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, norm="l1")
  with pytest.raises(ValueError, match="steps and restarts"):
    attacks.pgd(_linear, p, x, jnp.zeros(2, int), jax.random.PRNGKey(0), 0.1, steps=0)


def test_gap_loss_and_released_attack_units():
  """The logit-gap loss; a linear model on 2x−1 inputs: the released attack's margin in pixels
  equals the closed form |z|/(2‖w‖₁), and in [−1,1] units it is twice that."""
  np.testing.assert_allclose(attacks._gap_sum(jnp.array([[3.0, 1.0, 2.0]]), jnp.array([0])), -1.0)
  w = jax.random.normal(jax.random.PRNGKey(0), (8 * 8 * 3,))

  def logits_fn(p, x):  # binary logits (0, z) with z = w·(2x−1)
    z = (2 * x - 1).reshape(x.shape[0], -1) @ p
    return jnp.stack([jnp.zeros_like(z), z], -1)

  x = 0.5 + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (10, 8, 8, 3))
  z = np.asarray(logits_fn(w, x)[:, 1])
  y = jnp.asarray((z > 0).astype(np.int32))
  exact = np.abs(z) / (2 * np.abs(np.asarray(w)).sum())  # pixels (box [0,1] not active)
  from gs_jax.tasks.cifar_eval import RELEASED_ATTACKS

  for name, attack in RELEASED_ATTACKS.items():
    m = np.asarray(
      attacks.margin(
        logits_fn, w, x, y, jax.random.PRNGKey(2), eps_max=0.1, bisection_steps=12, **attack
      )
    )
    tol = 0.1 / 2**12
    assert np.all(m >= exact - 1e-7), name  # bisection returns the flipping end
    np.testing.assert_array_less(
      m - exact, tol + 1e-6 if name == "released" else 0.05 * exact + tol
    )

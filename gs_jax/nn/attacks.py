"""Projected gradient descent (PGD) attacks under L∞ and L2, and per-example minimal-ε margins.

docs/protocols.md §3.3: the OOD test is accuracy under PGD on the test set (L∞, ε = 0.05 and
ε = 5/255, step ε/10, 10 steps); Figure 2 is the CDF of the per-example margin, the smallest
perturbation at which PGD changes the prediction.

Everything acts on pixels in [0,1] (models normalise inside). With ``δ`` the perturbation,
one PGD step on the cross-entropy ``ℓ(x+δ, y)`` is::

    L∞:  δ ← clip_[0,1](x + Π_∞(δ + α·sign ∇ℓ)) − x,   Π_∞(δ) = clip(δ, −ε, ε)
    L2:  δ ← clip_[0,1](x + Π_2(δ + α·∇ℓ/‖∇ℓ‖₂)) − x,  Π_2(δ) = δ·min(1, ε/‖δ‖₂)

Clipping to [0,1] after the projection never leaves the ball: since x ∈ [0,1], clipping
shrinks every coordinate of δ towards 0. ε and α may be scalars or per-example arrays of
shape (n,), which is what the batched bisection of :func:`margin` uses. Gradients are taken
of the *summed* loss, so with a model in eval mode (batch norm using stored statistics) each
example's perturbation depends on that example only.

One implementation: :func:`pgd` drives three compiled pieces from Python (random start, one
gradient step, prediction), each compiled once per ``logits_fn`` and batch shape and reused for
every ε, step count and restart. That keeps compile time small for large networks and avoids
XLA:CPU's slow convolutions inside while loops (see :func:`gs_jax.train.make_epoch_runner`).
:func:`pgd` is also traceable: inside an outer ``jit`` the pieces inline and the loops unroll.
:func:`robust_predictions`, :func:`margin` and :func:`evaluate` are built on it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.base import _compat, batching

NORMS = ("linf", "l2")
# ``logits_fn(params, x) -> logits``: params are traced arguments (not constants baked into the
# compiled programs), and the same ``logits_fn`` object reuses the compilations.
LogitsFn = Callable[[Any, jax.Array], jax.Array]


def _per_example(v, x):
  """Broadcasts a scalar or (n,) array against images of shape (n, …)."""
  v = jnp.asarray(v, x.dtype)
  return jnp.broadcast_to(v, x.shape[:1]).reshape((-1,) + (1,) * (x.ndim - 1))


def _l2(v):
  return jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True))


def project(delta, eps, norm: str):
  """Projection of ``delta`` onto the ε-ball (ε scalar or per example) of ``norm``."""
  eps = _per_example(eps, delta)
  if norm == "linf":
    return jnp.clip(delta, -eps, eps)
  if norm == "l2":
    return delta * jnp.minimum(1.0, eps / jnp.maximum(_l2(delta), 1e-12))
  raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")


def random_start(key, x, eps, norm: str):
  """A uniform draw from the ε-ball (L∞: uniform cube; L2: uniform ball), clipped to [0,1]."""
  eps_b = _per_example(eps, x)
  if norm == "linf":
    delta = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps_b
  elif norm == "l2":
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    direction = direction / jnp.maximum(_l2(direction), 1e-12)
    d = x[0].size
    radius = jax.random.uniform(k_rad, x.shape[:1], x.dtype) ** (1.0 / d)
    delta = direction * _per_example(radius, x) * eps_b
  else:
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
  return jnp.clip(x + delta, 0.0, 1.0) - x


def _xent_sum(logits, y):
  return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def _gap_sum(logits, y):
  """Σ_i (max_{j≠y_i} ŷ_ij − ŷ_iy_i): the logit-gap (margin) loss. Unlike the cross-entropy its
  gradient does not underflow in float32 when the gap is large (~39 for ERM nets, §3.3)."""
  true = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  other = jnp.max(
    jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits), axis=1
  )
  return jnp.sum(other - true)


LOSSES = {"xent": _xent_sum, "gap": _gap_sum}


def ascent_step(x, delta, g, eps, alpha, norm: str):
  """One PGD update of ``delta`` given the loss gradient ``g`` at ``x + delta`` (module doc)."""
  alpha = _per_example(alpha, x)
  if norm == "linf":
    delta = delta + alpha * jnp.sign(g)
  else:
    delta = delta + alpha * g / jnp.maximum(_l2(g), 1e-12)
  delta = project(delta, eps, norm)
  return jnp.clip(x + delta, 0.0, 1.0) - x


@functools.partial(jax.jit, static_argnames=("norm",))
def _start(key, x, eps, norm: str):
  return random_start(key, x, eps, norm)


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "loss"))
def _step(logits_fn: LogitsFn, params, x, delta, y, eps, alpha, norm: str, loss: str = "xent"):
  g = jax.grad(lambda xa: LOSSES[loss](logits_fn(params, xa), y))(x + delta)
  return ascent_step(x, delta, g, eps, alpha, norm)


@functools.partial(jax.jit, static_argnames=("logits_fn",))
def predict(logits_fn: LogitsFn, params, x):
  """Predicted classes ``argmax logits_fn(params, x)``, shape (n,)."""
  return jnp.argmax(logits_fn(params, x), axis=-1)


def pgd(
  logits_fn: LogitsFn,
  params,
  x,
  y,
  key,
  eps,
  *,
  norm: str = "linf",
  steps: int = 10,
  step_size=None,
  restarts: int = 1,
  rand_init: bool = True,
  step_frac: float = 0.1,
  loss: str = "xent",
  clean_start: bool = False,
  active=None,
  return_early: bool = False,
  group: int = 1,
  return_predictions: bool = False,
):
  """Untargeted PGD maximising the cross-entropy (or logit gap) of labels ``y``; returns
  adversarial images.

  Args:
    logits_fn: ``(params, images (n, …) in [0,1]) → logits (n, C)``; the model in eval mode.
    params: the model's variables (traced).
    x: (n, …) clean images in [0,1].
    y: (n,) integer labels to move away from.
    key: PRNG key for the random starts.
    eps: radius, scalar or (n,).
    norm: "linf" or "l2".
    steps: gradient steps per restart.
    step_size: α, scalar or (n,); default ``eps·step_frac``.
    restarts: independent random starts; per example the first restart that misclassifies
      is kept (else the last one).
    rand_init: start from a uniform point in the ball (True) or from ``x``.
    step_frac: α/ε when ``step_size`` is None (0.1: the released code's 0.5/255 at 5/255;
      1/30 for the released Figure-2 Foolbox attack, docs/protocols.md §3.3).
    loss: "xent" (cross-entropy) or "gap" (logit gap, :func:`_gap_sum`).
    clean_start: the first restart starts from ``x`` (the others as ``rand_init`` says).
    active: optional (n,) bools: only these rows are attacked; the others come back as ``x``.
    return_early: Foolbox 2's rule (its ``return_early=True``, the released attack): every
      iterate, the start included, is checked, and a row stops at its first misclassified
      iterate, which is its result; restarts go on for the rows not yet fooled. Without it a
      restart's result is its last iterate.
    group: with ``return_early``, rows per compiled loop: a group steps until all its rows
      have stopped. 1 (each row stops on its own) suits CPUs and small networks; a whole
      batch suits wide hardware. The result does not depend on it (up to float32
      reassociation across batch sizes).
    return_predictions: also return the predicted classes at ``x_adv`` (with
      ``return_early`` those the attack computed on its way, with no extra forward pass).

  With ``return_early`` everything runs in one compiled program (:func:`_early`) per batch
  shape, traced or not. Otherwise, outside a trace, a restart runs only on the rows no earlier restart has fooled (their
  result is final) and only on ``active`` rows, gathered into a smaller batch (padded to a
  power of two, so a few shapes compile); the random starts are drawn for the whole batch and
  then gathered, so every row gets the start, and the result, of a run on all rows (up to
  float32 reassociation across batch sizes).

  Returns:
    ``x_adv`` with ``x_adv − x`` inside the ε-ball and ``x_adv ∈ [0,1]``; with
    ``return_predictions``, ``(x_adv, classes)``.
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
  if steps < 1 or restarts < 1:
    raise ValueError(f"steps and restarts must be >= 1; got {steps} and {restarts}")
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {tuple(LOSSES)}; got {loss!r}")
  eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
  alpha = (
    eps * step_frac
    if step_size is None
    else jnp.broadcast_to(jnp.asarray(step_size, x.dtype), x.shape[:1])
  )
  run = _Settings(norm, steps, restarts, rand_init, loss, clean_start)
  if return_early:
    x_adv, pred = _pgd_early(logits_fn, params, x, y, key, eps, alpha, run, active, group)
    return (x_adv, pred) if return_predictions else x_adv
  x_adv = _pgd_final(logits_fn, params, x, y, key, eps, alpha, run, active)
  return (x_adv, predict(logits_fn, params, x_adv)) if return_predictions else x_adv


class _Settings(NamedTuple):
  """The static settings of one :func:`pgd` call (its arguments of the same names)."""

  norm: str
  steps: int
  restarts: int
  rand_init: bool
  loss: str
  clean_start: bool

  def start(self, r: int, key, x, eps):
    """Restart ``r``'s start perturbation: a random draw from the ball, or 0 (clean start)."""
    if self.rand_init and not (self.clean_start and r == 0):
      return _start(key, x, eps, norm=self.norm)
    return jnp.zeros_like(x)


def _pgd_final(logits_fn, params, x, y, key, eps, alpha, run: _Settings, active):
  """:func:`pgd` without ``return_early``: a restart's result is its last iterate."""
  if any(_compat.is_tracer(a) for a in (x, y, eps, alpha)):
    if active is not None:
      raise ValueError("active= needs concrete arrays (call pgd outside jit)")
    return _pgd_traced(logits_fn, params, x, y, key, eps, alpha, run)
  x, y = jnp.asarray(x), jnp.asarray(y)
  n = x.shape[0]
  todo = np.ones(n, bool) if active is None else np.asarray(active, bool)
  if todo.shape != (n,):
    raise ValueError(f"active must have shape ({n},); got {todo.shape}")
  best, fooled = x, np.zeros(n, bool)
  for r, k in enumerate(jax.random.split(key, run.restarts)):  # few restarts: Python loops
    rows = todo & ~fooled  # a fooled row keeps its restart: later restarts cannot change it
    if not rows.any():
      break
    # Drawn for the whole batch, then gathered: a row gets the start a full-batch run gives it.
    delta = run.start(r, k, x, eps)
    idx = None if rows.all() else np.flatnonzero(rows)
    xs, ys, es, als = x, y, eps, alpha
    if idx is not None:
      xs, ys, es, als, delta = _gather((x, y, eps, alpha, delta), idx)
    for _ in range(run.steps):
      delta = _step(logits_fn, params, xs, delta, ys, es, als, norm=run.norm, loss=run.loss)
    x_adv = xs + delta
    wrong = np.asarray(predict(logits_fn, params, x_adv) != ys)
    if idx is None:
      best, fooled = x_adv, wrong.copy()
    else:
      best = best.at[idx].set(x_adv[: len(idx)])
      fooled[idx] |= wrong[: len(idx)]
  return best


def _pgd_early(logits_fn, params, x, y, key, eps, alpha, run: _Settings, active, group):
  """``(x_adv, pred)`` of return-early PGD (:func:`pgd`): the adversarial images and the
  predictions there, computed on the way."""
  if group < 1:
    raise ValueError(f"group must be >= 1; got {group}")
  n = x.shape[0]
  todo = jnp.ones((n,), bool) if active is None else jnp.asarray(active, bool)
  if todo.shape != (n,):
    raise ValueError(f"active must have shape ({n},); got {todo.shape}")
  # Drawn for the whole batch (as the other path does), so a row's start does not depend on
  # which rows are attacked.
  starts = jnp.stack(
    [run.start(r, k, x, eps) for r, k in enumerate(jax.random.split(key, run.restarts))]
  )
  x, y = jnp.asarray(x), jnp.asarray(y)
  return _early(
    logits_fn,
    params,
    x,
    y,
    starts,
    eps,
    alpha,
    todo,
    norm=run.norm,
    loss=run.loss,
    steps=run.steps,
    group=group,
  )


def _early_group(logits_fn, params, x, y, starts, eps, alpha, todo, *, norm, loss, steps):
  """Return-early PGD on one group of g rows (module doc); returns ``(x_adv, pred)``.

  ``starts``: (R, g, …) start perturbations of the R restarts; ``todo``: (g,) rows to attack.
  Iterate ``p_t`` (t = 0…steps) is checked with the logits its gradient step computes anyway;
  a row stops at its first misclassified iterate, after ``p_steps``, or at a fixed point of
  the step (the rest of the run would repeat it). Rows outside ``todo`` are only checked at ``x`` (their prediction).
  """
  grad_fn = jax.grad(lambda xa: _loss_and_logits(logits_fn, params, xa, y, loss), has_aux=True)

  def run_restart(r, fooled, best, pred):
    first = r == 0
    run = todo & ~fooled
    # Rows outside `todo` enter the first restart at x, for their prediction only.
    live = run | (first & ~todo)
    delta = jnp.where(_per_example(run, x) > 0, starts[r], 0.0)

    def cond(c):
      return jnp.any(c[2])

    def body(c):
      t, delta, running, hit, p = c
      # The last iterate, and rows outside `todo`, are only checked: no gradient.
      g, logits = jax.lax.cond(
        (t == steps) | ~jnp.any(running & todo),
        lambda d: (jnp.zeros_like(d), logits_fn(params, x + d)),
        lambda d: grad_fn(x + d),
        delta,
      )
      now = jnp.argmax(logits, axis=-1)
      wrong = now != y
      step = ascent_step(x, delta, g, eps, alpha, norm)
      # A step that leaves δ unchanged (e.g. an underflowed gradient, sign 0) is a fixed
      # point: every later iterate is this one, so the row's outcome is known now.
      fixed = jnp.all((step == delta).reshape(step.shape[0], -1), axis=1)
      stop = running & (wrong | (t == steps) | ~todo | fixed)
      delta = jnp.where(_per_example(running & ~stop, x) > 0, step, delta)
      return t + 1, delta, running & ~stop, hit | (running & wrong), jnp.where(running, now, p)

    c = (jnp.int32(0), delta, live, jnp.zeros_like(live), pred)
    _, delta, _, hit, p = jax.lax.while_loop(cond, body, c)
    best = jnp.where(_per_example(live, x) > 0, x + delta, best)
    return fooled | (hit & todo), best, jnp.where(live, p, pred)

  def cond(c):
    r, fooled = c[0], c[1]
    return (r < starts.shape[0]) & ((r == 0) | jnp.any(todo & ~fooled))

  def body(c):
    r, fooled, best, pred = c
    return (r + 1, *run_restart(r, fooled, best, pred))

  c = (jnp.int32(0), jnp.zeros(y.shape, bool), x, jnp.zeros_like(y))
  _, _, best, pred = jax.lax.while_loop(cond, body, c)
  return best, pred


def _loss_and_logits(logits_fn, params, xa, y, loss):
  logits = logits_fn(params, xa)
  return LOSSES[loss](logits, y), logits


@functools.partial(jax.jit, static_argnames=("logits_fn", "norm", "loss", "steps", "group"))
def _early(logits_fn, params, x, y, starts, eps, alpha, todo, *, norm, loss, steps, group):
  """:func:`_early_group` over groups of ``group`` rows (``lax.map``; the last group padded
  with unattacked copies of row 0), so a group's loops end when its own rows are done."""
  n = x.shape[0]
  g = min(group, n)
  m = -(-n // g) * g

  def grouped(a):  # (n, …) → (m/g, g, …)
    return batching.pad_rows(a, m).reshape((m // g, g) + a.shape[1:])

  todo = jnp.concatenate([todo, jnp.zeros((m - n,), bool)])
  s = jnp.swapaxes(jax.vmap(grouped)(starts), 0, 1)  # (m/g, R, g, …)

  def one(args):
    xg, yg, sg, eg, ag, tg = args
    return _early_group(
      logits_fn, params, xg, yg, sg, eg, ag, tg, norm=norm, loss=loss, steps=steps
    )

  best, pred = jax.lax.map(
    one, (grouped(x), grouped(y), s, grouped(eps), grouped(alpha), todo.reshape(m // g, g))
  )
  return best.reshape((m,) + x.shape[1:])[:n], pred.reshape(m)[:n]


def _bucket(m: int, n: int) -> int:
  """Rows a batch of ``m`` of ``n`` rows is padded to: the next power of two (at least 8, at most
  ``n``), so a shrinking batch runs in a few shapes and compiles a few times."""
  return min(n, max(8, 1 << (m - 1).bit_length()))


def _gather(arrays, idx):
  """Rows ``idx`` of each array, padded to :func:`_bucket` rows by repeating row ``idx[0]``."""
  pad = np.full(_bucket(len(idx), arrays[0].shape[0]) - len(idx), idx[0])
  rows = jnp.asarray(np.concatenate([idx, pad]))
  return tuple(a[rows] for a in arrays)


def _pgd_traced(logits_fn, params, x, y, key, eps, alpha, run: _Settings):
  """:func:`pgd` inside a trace (no row selection: every restart runs on every row)."""
  best, fooled = x, jnp.zeros(x.shape[:1], bool)
  for r, k in enumerate(jax.random.split(key, run.restarts)):
    delta = run.start(r, k, x, eps)
    for _ in range(run.steps):
      delta = _step(logits_fn, params, x, delta, y, eps, alpha, norm=run.norm, loss=run.loss)
    x_adv = x + delta
    wrong = predict(logits_fn, params, x_adv) != y
    # Keep the newest restart until one fools the model, then keep that one.
    best = jnp.where(_per_example(~fooled, x) > 0, x_adv, best)
    fooled = fooled | wrong
  return best


def robust_predictions(logits_fn: LogitsFn, params, x, y, key, eps, **pgd_kwargs):
  """Predicted classes on PGD examples, ``argmax logits_fn(params, pgd(x))`` (shape (n,)); with
  ``return_early`` the predictions the attack computed there (no second forward pass)."""
  return pgd(logits_fn, params, x, y, key, eps, return_predictions=True, **pgd_kwargs)[1]


def margin_bisection(
  predict_fn: Callable,
  x,
  y,
  key,
  *,
  eps_max: float,
  bisection_steps: int = 8,
  clean=None,
):
  """Per-example margin by batched bisection, given ``predict_fn(x, y, key, eps, active=None)
  -> classes``.

  ``predict_fn`` returns the predicted classes on PGD examples at per-example radii ``eps``
  (shape (n,)), e.g. :func:`robust_predictions`; rows outside ``active`` (bools, or None: all)
  are not needed and may be left unattacked. The bisection itself is a short Python loop, so
  the attack compiles once and is reused at every step. ``clean``: the clean predictions, if
  known (PGD at ε = 0 returns the clean image, so they replace its first call exactly). Rows
  already decided — misclassified clean (margin 0) or not flipped at ``eps_max`` (margin
  ``inf``) — are not attacked again. See :func:`margin`.
  """
  eps_max = jnp.asarray(eps_max, jnp.float32)
  n = x.shape[0]
  keys = jax.random.split(key, bisection_steps + 2)
  if clean is None:
    clean = predict_fn(x, y, keys[0], jnp.zeros((n,), jnp.float32))
  clean_wrong = clean != y
  traced = _compat.is_tracer(clean_wrong)
  live = None if traced else ~np.asarray(clean_wrong)
  flips_at_max = predict_fn(x, y, keys[1], jnp.full((n,), eps_max), active=live) != y
  if not traced:
    live = live & np.asarray(flips_at_max)
  lo = jnp.zeros((n,), jnp.float32)
  hi = jnp.full((n,), eps_max)
  for i in range(bisection_steps):
    if live is not None and not live.any():
      break  # every row decided: the brackets of decided rows are not used
    mid = 0.5 * (lo + hi)
    flipped = predict_fn(x, y, keys[i + 2], mid, active=live) != y
    lo, hi = jnp.where(flipped, lo, mid), jnp.where(flipped, mid, hi)
  return jnp.where(clean_wrong, 0.0, jnp.where(flips_at_max, hi, jnp.inf))


def margin(
  logits_fn: LogitsFn,
  params,
  x,
  y,
  key,
  *,
  eps_max: float,
  bisection_steps: int = 8,
  norm: str = "linf",
  steps: int = 10,
  restarts: int = 1,
  rand_init: bool = True,
  **pgd_kwargs,
):
  """Per-example margin: the smallest ε at which PGD makes the prediction differ from ``y``.

  Batched bisection on ε ∈ [0, eps_max]: every example keeps its own bracket ``[lo, hi]``
  and one PGD run per bisection step (default step ε/10, ``steps`` steps) is done at the
  per-example midpoints (``pgd_kwargs``, e.g. ``step_frac``, ``loss``, ``clean_start``, go
  to :func:`pgd`). Examples already misclassified get margin 0; examples that PGD
  cannot flip at ``eps_max`` get ``inf``. The returned value is the bracket's upper end
  ``hi`` (PGD flipped the prediction there), accurate to ``eps_max / 2**bisection_steps``.
  With ``y`` the true labels, ``mean(margin ≤ ε)`` is the error under attack at ε, so the
  margin CDF (Figure 2) and the OOD accuracy tell the same story. (PGD at ε = 0 returns the
  clean image, so the first call gives the clean predictions.)

  Note: with ``rand_init`` and step ε/10 × 10 steps, a coordinate that starts at −ε can only
  reach 0, not +ε, so PGD cannot always use its whole budget: for a linear model the margin
  is then overestimated (tests check the exact closed form with ``rand_init=False``).

  Returns:
    (n,) float array of margins.
  """

  def predict_fn(xb, yb, k, eps, active=None):
    return robust_predictions(
      logits_fn,
      params,
      xb,
      yb,
      k,
      eps,
      norm=norm,
      steps=steps,
      restarts=restarts,
      rand_init=rand_init,
      active=active,
      **pgd_kwargs,
    )

  return margin_bisection(
    predict_fn,
    x,
    y,
    key,
    eps_max=eps_max,
    bisection_steps=bisection_steps,
    clean=predict(logits_fn, params, x),
  )


def evaluate(
  logits_fn: LogitsFn,
  params,
  x,
  y,
  key,
  *,
  eps: Mapping[str, float] | None = None,
  steps: int = 10,
  margin_n: int = 0,
  margin_eps_max: float = 0.05,
  margin_bisection: int = 6,
  strong_n: int = 0,
  batch_size: int = 500,
  multiple: int = 1,
  prepare: Callable | None = None,
) -> dict:
  """Clean and PGD predictions, margins and an attack-strength check over a whole dataset.

  The evaluation of docs/protocols.md §3.3, in chunks of ``batch_size`` rows
  (:func:`gs_jax.batching.batched`; a multiple of ``multiple``, e.g. the device count);
  ``prepare(xb, yb) -> (xb, yb)`` maps every chunk first (e.g. uint8 → [0,1] floats and
  sharding). Keys: PGD at the i-th ε uses ``fold_in(key, i)``, margins ``fold_in(key, 10)``,
  the strength check ``fold_in(key, 20 + i)`` (weak) and ``fold_in(key, 30 + i)`` (strong).

  Returns NumPy arrays: ``"clean"`` (n,) predicted classes; ``"pgd"``: ``{name: (n,)}`` classes
  under PGD-``steps`` (step ε/10, random start) at ``eps[name]``; with ``margin_n`` ≠ 0,
  ``"margins"``: (m,) L∞ margins (:func:`margin`) of the first m = ``margin_n`` rows (−1: all);
  with ``strong_n`` > 0, ``"strong"``: ``{name: {"weak": (k,), "strong": (k,)}}`` classes on
  the first k = ``strong_n`` rows under PGD-``steps`` and under PGD-50 with step ε/20 and 5
  random restarts (if the strong attack lowers accuracy much, the weak numbers overstate
  robustness).
  """

  def run(fn, xs, ys, k):
    return np.asarray(
      batching.batched(fn, batch_size, multiple=multiple, prepare=prepare)(xs, ys, k)
    )

  def attacked(e, **kw):
    return lambda xb, yb, k: robust_predictions(logits_fn, params, xb, yb, k, e, **kw)

  out = {"clean": run(lambda xb, yb, k: predict(logits_fn, params, xb), x, y, key), "pgd": {}}
  eps = dict(eps or {})
  for i, (name, e) in enumerate(eps.items()):
    out["pgd"][name] = run(attacked(e, steps=steps), x, y, jax.random.fold_in(key, i))
  if margin_n:
    m = len(x) if margin_n < 0 else min(margin_n, len(x))
    out["margins"] = run(
      lambda xb, yb, k: margin(
        logits_fn,
        params,
        xb,
        yb,
        k,
        eps_max=margin_eps_max,
        bisection_steps=margin_bisection,
        steps=steps,
      ),
      x[:m],
      y[:m],
      jax.random.fold_in(key, 10),
    )
  if strong_n > 0:
    k = min(strong_n, len(x))
    out["strong"] = {
      name: {
        "weak": run(attacked(e, steps=steps), x[:k], y[:k], jax.random.fold_in(key, 20 + i)),
        "strong": run(
          attacked(e, steps=50, step_size=e / 20.0, restarts=5),
          x[:k],
          y[:k],
          jax.random.fold_in(key, 30 + i),
        ),
      }
      for i, (name, e) in enumerate(eps.items())
    }
  return out

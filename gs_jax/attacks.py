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
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
LogitsFn = Callable[[jax.Array], jax.Array]


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


def ascent_step(x, delta, g, eps, alpha, norm: str):
  """One PGD update of ``delta`` given the loss gradient ``g`` at ``x + delta`` (module doc)."""
  alpha = _per_example(alpha, x)
  if norm == "linf":
    delta = delta + alpha * jnp.sign(g)
  else:
    delta = delta + alpha * g / jnp.maximum(_l2(g), 1e-12)
  delta = project(delta, eps, norm)
  return jnp.clip(x + delta, 0.0, 1.0) - x


def pgd(logits_fn: LogitsFn, x, y, key, eps, *, norm: str = "linf", steps: int = 10,
        step_size=None, restarts: int = 1, rand_init: bool = True):
  """Untargeted PGD maximising the cross-entropy of labels ``y``; returns adversarial images.

  Args:
    logits_fn: images (n, …) in [0,1] → logits (n, C). Use the model in eval mode.
    x: (n, …) clean images in [0,1].
    y: (n,) integer labels to move away from.
    key: PRNG key for the random starts.
    eps: radius, scalar or (n,).
    norm: "linf" or "l2".
    steps: gradient steps per restart.
    step_size: α, scalar or (n,); default ``eps/10`` (the released code's 0.5/255 at 5/255).
    restarts: independent random starts; per example the first restart that misclassifies
      is kept (else the last one).
    rand_init: start from a uniform point in the ball (True) or from ``x``.

  Returns:
    ``x_adv`` with ``x_adv − x`` inside the ε-ball and ``x_adv ∈ [0,1]``.
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
  if steps < 1 or restarts < 1:
    raise ValueError(f"steps and restarts must be >= 1; got {steps} and {restarts}")
  eps = jnp.asarray(eps, x.dtype)
  alpha = eps / 10.0 if step_size is None else jnp.asarray(step_size, x.dtype)
  grad_fn = jax.grad(lambda xa: _xent_sum(logits_fn(xa), y))

  def step(delta, _):
    return ascent_step(x, delta, grad_fn(x + delta), eps, alpha, norm), None

  def one_restart(carry, k):
    best, fooled = carry
    delta = random_start(k, x, eps, norm) if rand_init else jnp.zeros_like(x)
    # Fully unrolled: XLA:CPU runs convolutions inside while loops far slower (see
    # gs_jax.train.make_epoch_runner); `steps` is small.
    delta, _ = jax.lax.scan(step, delta, None, length=steps, unroll=True)
    x_adv = x + delta
    wrong = jnp.argmax(logits_fn(x_adv), axis=-1) != y
    # Keep the newest restart until one fools the model, then keep that one.
    best = jnp.where(_per_example(~fooled, x) > 0, x_adv, best)
    return (best, fooled | wrong), None

  carry = (x, jnp.zeros(x.shape[:1], bool))
  for k in jax.random.split(key, restarts):  # few restarts: a Python loop, unrolled under jit
    carry, _ = one_restart(carry, k)
  return carry[0]


def robust_predictions(logits_fn: LogitsFn, x, y, key, eps, **pgd_kwargs):
  """Predicted classes on PGD examples, ``argmax logits_fn(pgd(x))`` (shape (n,))."""
  x_adv = pgd(logits_fn, x, y, key, eps, **pgd_kwargs)
  return jnp.argmax(logits_fn(x_adv), axis=-1)


def margin_bisection(predict: Callable, x, y, key, *, eps_max: float,
                     bisection_steps: int = 8):
  """Per-example margin by batched bisection, given ``predict(x, y, key, eps) -> classes``.

  ``predict`` returns the predicted classes on PGD examples at per-example radii ``eps``
  (shape (n,)), e.g. a jitted :func:`robust_predictions`; the bisection itself is a short
  Python loop, so ``predict`` compiles once and is reused at every step. See :func:`margin`.
  """
  eps_max = jnp.asarray(eps_max, jnp.float32)
  n = x.shape[0]
  keys = jax.random.split(key, bisection_steps + 2)
  clean_wrong = predict(x, y, keys[0], jnp.zeros((n,), jnp.float32)) != y
  flips_at_max = predict(x, y, keys[1], jnp.full((n,), eps_max)) != y
  lo = jnp.zeros((n,), jnp.float32)
  hi = jnp.full((n,), eps_max)
  for i in range(bisection_steps):
    mid = 0.5 * (lo + hi)
    flipped = predict(x, y, keys[i + 2], mid) != y
    lo, hi = jnp.where(flipped, lo, mid), jnp.where(flipped, mid, hi)
  return jnp.where(clean_wrong, 0.0, jnp.where(flips_at_max, hi, jnp.inf))


def margin(logits_fn: LogitsFn, x, y, key, *, eps_max: float, bisection_steps: int = 8,
           norm: str = "linf", steps: int = 10, restarts: int = 1, rand_init: bool = True):
  """Per-example margin: the smallest ε at which PGD makes the prediction differ from ``y``.

  Batched bisection on ε ∈ [0, eps_max]: every example keeps its own bracket ``[lo, hi]``
  and one PGD run per bisection step (step size ε/10, ``steps`` steps) is done at the
  per-example midpoints. Examples already misclassified get margin 0; examples that PGD
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
  def predict(xb, yb, k, eps):
    return robust_predictions(logits_fn, xb, yb, k, eps, norm=norm, steps=steps,
                              restarts=restarts, rand_init=rand_init)
  return margin_bisection(predict, x, y, key, eps_max=eps_max, bisection_steps=bisection_steps)


class PGD:
  """PGD driven from Python around compiled pieces, for models with batch-sized convolutions.

  ``apply_fn(variables, x) -> logits``. The gradient step, the random start and the
  prediction are each compiled once (for a given batch shape) and reused for every ε, step
  count and restart, which keeps compile time small and avoids XLA:CPU's slow convolutions
  inside while loops. Same semantics as :func:`pgd` / :func:`robust_predictions`.
  """

  def __init__(self, apply_fn: Callable, norm: str = "linf"):
    if norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    self.norm = norm

    @jax.jit
    def start(key, x, eps):
      return random_start(key, x, eps, norm)

    @jax.jit
    def step(variables, x, delta, y, eps, alpha):
      g = jax.grad(lambda xa: _xent_sum(apply_fn(variables, xa), y))(x + delta)
      return ascent_step(x, delta, g, eps, alpha, norm)

    @jax.jit
    def predict(variables, x):
      return jnp.argmax(apply_fn(variables, x), axis=-1)

    self._start, self._step, self.predict = start, step, predict

  def __call__(self, variables, x, y, key, eps, *, steps: int = 10, step_size=None,
               restarts: int = 1, rand_init: bool = True):
    """Adversarial images (see :func:`pgd`); ``eps``/``step_size`` scalar or (n,)."""
    if steps < 1 or restarts < 1:
      raise ValueError(f"steps and restarts must be >= 1; got {steps} and {restarts}")
    eps = jnp.broadcast_to(jnp.asarray(eps, x.dtype), x.shape[:1])
    alpha = eps / 10.0 if step_size is None else jnp.broadcast_to(
        jnp.asarray(step_size, x.dtype), x.shape[:1])
    best, fooled = x, jnp.zeros(x.shape[:1], bool)
    for k in jax.random.split(key, restarts):
      delta = self._start(k, x, eps) if rand_init else jnp.zeros_like(x)
      for _ in range(steps):
        delta = self._step(variables, x, delta, y, eps, alpha)
      x_adv = x + delta
      wrong = self.predict(variables, x_adv) != y
      best = jnp.where(_per_example(~fooled, x) > 0, x_adv, best)
      fooled = fooled | wrong
    return best

  def robust_predictions(self, variables, x, y, key, eps, **kwargs):
    return self.predict(variables, self(variables, x, y, key, eps, **kwargs))

  def margin(self, variables, x, y, key, *, eps_max: float, bisection_steps: int = 8,
             steps: int = 10, restarts: int = 1, rand_init: bool = True):
    """Per-example minimal-ε margin (see :func:`margin`)."""
    return margin_bisection(
        lambda xb, yb, k, e: self.robust_predictions(variables, xb, yb, k, e, steps=steps,
                                                     restarts=restarts, rand_init=rand_init),
        x, y, key, eps_max=eps_max, bisection_steps=bisection_steps)


def batched(fn: Callable, batch_size: int) -> Callable:
  """Applies ``fn(x, y, key)`` → (n, …) in chunks of ``batch_size`` rows (last one padded).

  The key of chunk i is ``fold_in(key, i)``, so results do not depend on how a caller
  interleaves other work. Padding repeats the first row and is cut off again, so every
  chunk has the same shape and ``fn`` compiles once.
  """
  def run(x, y, key):
    n = x.shape[0]
    outs = []
    for i, start in enumerate(range(0, n, batch_size)):
      xb, yb = x[start:start + batch_size], y[start:start + batch_size]
      m = xb.shape[0]
      if m < batch_size:
        pad = batch_size - m
        xb = jnp.concatenate([xb, jnp.repeat(xb[:1], pad, 0)])
        yb = jnp.concatenate([yb, jnp.repeat(yb[:1], pad, 0)])
      outs.append(fn(xb, yb, jax.random.fold_in(key, i))[:m])
    return jnp.concatenate(outs)

  return run

"""Two-moons panels (docs/protocols.md §3.1): build, train all seeds at once, measure margins.

A *panel* is a config with the fields of ``configs.two_moons.panel`` (delta, sd_lambda,
weight_decay, optimizer, lr, steps, rotation_deg, hidden, dropout_rate, batch_norm). The
experiment, the speed benchmark and the tests all train panels through :func:`train_panel`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gs_jax.nn import boundary, models
from gs_jax import training as train
from gs_jax.data import toy


def model_of(panel) -> models.MLP:
  return models.MLP(
    hidden=tuple(panel.hidden),
    kernel_init="torch",
    dropout_rate=panel.dropout_rate,
    batch_norm=panel.batch_norm,
  )


def trainer_key(panel) -> tuple:
  """Panels with equal keys share one compiled trainer (``hparams`` are traced)."""
  return (
    tuple(panel.hidden),
    panel.dropout_rate,
    panel.batch_norm,
    panel.optimizer,
    panel.lr,
    panel.weight_decay,
  )


def make_trainer(panel):
  """``(init, train)`` for the panel's model and optimizer (SGD momentum 0.9 or Adam)."""
  model = model_of(panel)
  tx = train.make_optimizer(
    panel.optimizer, panel.lr, momentum=0.9, weight_decay=panel.weight_decay
  )
  return (
    train.make_seed_init(model, tx),
    train.make_seed_trainer(model.apply, tx, train.binary_objective),
  )


def panel_data(panel, seeds) -> dict[str, np.ndarray]:
  """Every seed's 300 points, ``{"x": (S, 300, 2), "y": (S, 300)}`` (NumPy: each seed's data
  goes straight to its device)."""
  return toy.two_moons_seeds(seeds, panel.delta, rotation_deg=panel.rotation_deg)


def train_panel(
  panel,
  seeds,
  *,
  trainers: dict | None = None,
  progress: bool = True,
  desc: str | None = None,
  checkpoint=None,
):
  """Trains ``panel`` for every seed in one compiled program; returns (states, history, data).

  ``trainers`` caches compiled trainers across panels (keyed by :func:`trainer_key`).
  """
  trainers = {} if trainers is None else trainers
  key = trainer_key(panel)
  if key not in trainers:
    trainers[key] = make_trainer(panel)
  init, trainer = trainers[key]
  data = panel_data(panel, seeds)
  states = init(jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds)), data)
  states, history = trainer(
    states,
    data,
    {"sd_lambda": jnp.float32(panel.sd_lambda)},
    panel.steps,
    desc=desc,
    progress=progress,
    checkpoint=checkpoint,
  )
  return states, history, data


@functools.lru_cache(maxsize=None)
def decision_functions(model):
  """``(averaged, single, every)``: ``averaged(states, x) = mean_s f(x; θ_s)`` — the decision
  function whose zero set Figure 1 draws —, ``single(state, x) = f(x; θ)`` and
  ``every(states, x)``, all f(x; θ_s) stacked (S, m), nets in eval mode. States are arguments
  and the functions are cached per model, so one compilation serves every seed and panel."""

  def single(state, x):
    return train.apply_model(model, state, x)[0]

  def every(states, x):
    return jax.vmap(single, in_axes=(0, None))(states, x)

  def averaged(states, x):
    return jnp.mean(every(states, x), axis=0)

  return averaged, single, every


@functools.lru_cache(maxsize=None)
def _own_data_logits(model):
  """Jitted ``(states, x) ↦ f(x_s; θ_s)`` per seed, (S, n); cached per model."""
  return jax.jit(jax.vmap(decision_functions(model)[1]))


def evaluate_panel(
  panel, states, history, data, *, map_resolution: int = 100, margin_resolution: int = 400
):
  """Metrics of a trained panel and its seed-averaged decision map ``(xs, ys, z)``.

  The margin of a training point is its signed L2 distance to the zero set of the
  seed-averaged logits (positive on the correct side), over every seed's training points;
  ``per_seed_min`` uses each seed's own net instead.
  """
  model = model_of(panel)
  averaged, single, every = decision_functions(model)
  pts = np.asarray(data["x"]).reshape(-1, 2)
  ys = np.asarray(data["y"]).reshape(-1)
  # Every seed's logits on the margin grid in one pass; their mean is the averaged map's.
  _, _, z_seeds = boundary.grid_values(every, resolution=margin_resolution, params=states)
  margins = boundary.input_space_margins(
    averaged, pts, ys, resolution=margin_resolution, params=states, values=z_seeds.mean(axis=0)
  )
  # NumPy copies: slicing a seed or a step of these compiles nothing.
  host_states, history = jax.device_get((states, history))
  per_seed_min = [
    boundary.input_space_margins(
      single,
      np.asarray(data["x"][s]),
      np.asarray(data["y"][s]),
      resolution=margin_resolution,
      values=z_seeds[s],
      params=jax.tree_util.tree_map(lambda a: a[s], host_states),
    ).min()
    for s in range(len(data["x"]))
  ]
  xs, ys_grid, zmap = boundary.grid_values(averaged, resolution=map_resolution, params=states)
  logits = _own_data_logits(model)(states, data["x"])
  acc = np.mean((np.asarray(logits) > 0) == (data["y"] > 0), axis=1)
  metrics = {
    "train_accuracy": float(acc.mean()),
    "final_loss": float(np.mean(history["loss"][:, -1])),
    "final_nll": float(np.mean(history["nll"][:, -1])),
    "margin_min": float(margins.min()),
    "margin_median": float(np.median(margins)),
    "per_seed_margin_min_mean": float(np.mean(per_seed_min)),
  }
  per_seed = {
    "train_accuracy": acc,
    "final_loss": history["loss"][:, -1],
    "margin_min": np.asarray(per_seed_min),
  }
  return metrics, per_seed, (xs, ys_grid, zmap)

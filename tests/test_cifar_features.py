"""experiments.cifar_features end to end on a tiny CIFAR-2 slice: outputs, the eq-18 λ mapping,
and a killed run that resumes to the numbers of an uninterrupted one (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from analysis import cifar_features_figures
from configs import cifar_features as configs
from gs_jax.experiment import cli
from gs_jax.theory import dual
from tests.conftest import REPO, real_data

# Kills the process (exit 3, no cleanup) once `step` training steps are done, keeping the
# experiment's own chunk callback (conftest's run_experiment replaces it).
_KILLED = """
import importlib, os, sys
from gs_jax import training as train
fit = train.fit_minibatch
def killed(*args, on_chunk=None, **kwargs):
  def hook(step, metrics):
    on_chunk(step, metrics)
    if step >= {step}:
      os._exit(3)
  return fit(*args, on_chunk=hook, **kwargs)
train.fit_minibatch = killed
importlib.import_module("experiments.cifar_features").main(sys.argv[1:])
"""

TINY = [
  "--train_limit=24",
  "--epochs=2",
  "--seeds=1",
  "--k=3",
  "--k_spectrum=4",
  "--n_images=2",
  "--response_every=4",
  "--chunk=8",
  "--feature_passes=3",
  "--feature_batch=12",
  "--no_progress",
]


def _run(args, kill_after=None):
  code = (
    ["-m", "experiments.cifar_features"]
    if kill_after is None
    else ["-c", _KILLED.format(step=kill_after)]
  )
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run(
    [sys.executable, *code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
  )


def _z_lines(out_dir):
  z = {}
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if r["kind"] == "z":
        z[(r["arm"], r["step"])] = r["z"]  # a redone step keeps its last line
  return z


def test_eq17_lambda_and_sd_prediction():
  cfg = cli.parse(configs, [], prog="t")
  from gs_jax.tasks import cifar_features as lib

  assert lib.eq17_lambda(cfg.sd_coef, cfg.batch_size) == pytest.approx(0.1)  # batch 1, sd_coef 0.1
  assert lib.eq17_lambda(cfg.sd_coef, 4) == pytest.approx(0.4)
  U = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 3)))[0]
  z = lib.sd_prediction(U, 0.1)
  a = 0.1 * z[0] / U[:, 0].sum()
  np.testing.assert_allclose(np.log((1 - a) / a), a / 0.1, rtol=1e-10)  # eq 18 fixed point
  alpha = dual.fixed_point(U, np.ones(3), 0.1, dynamics="sd")
  np.testing.assert_allclose(z, dual.responses_at(U, np.ones(3), 0.1, alpha, "sd"), rtol=1e-10)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_responses(tmp_path):
  """1.4–5 minutes on 2 shared cores (three subprocesses compile the batch-1 scan)."""
  real_data("cifar10", "cifar10.npz")
  whole = _run(TINY + [f"--out_dir={tmp_path / 'whole'}"])
  assert whole.returncode == 0, whole.stderr[-3000:]
  killed = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"], kill_after=32)  # ERM, in epoch 2
  assert killed.returncode == 3, killed.stderr[-3000:]
  again = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"])
  assert again.returncode == 0, again.stderr[-3000:]
  a = json.load(open(tmp_path / "whole" / "results.json"))
  b = json.load(open(tmp_path / "resumed" / "results.json"))
  for key in ("erm_s0", "sd_s0"):
    np.testing.assert_array_equal(a["per_seed"][key]["z_final"], b["per_seed"][key]["z_final"])
    assert a["per_seed"][key]["train_acc"] == b["per_seed"][key]["train_acc"]
  za, zb = _z_lines(tmp_path / "whole"), _z_lines(tmp_path / "resumed")
  assert set(za) == set(zb) and len(za) == 2 * 12  # 48 steps / 4, both arms
  for k in za:
    np.testing.assert_array_equal(za[k], zb[k])
  # the z recorded at the last step is the final response computed outside the loop
  np.testing.assert_allclose(
    za[("sd", 48)], a["per_seed"]["sd_s0"]["z_final"], rtol=1e-4, atol=1e-5
  )
  for name in ("spectrum", "features", "responses", "final"):
    assert (tmp_path / "whole" / f"{name}.png").exists()
  assert "eq-18" in cifar_features_figures.report(tmp_path / "whole")


def test_eq5_coefficient_maps_the_training_objective_onto_eq5():
  """The λ mapping of docs/protocols.md §3.7: at c = eq5_coefficient(λ, n) = λ/n,
  n·∇[mean CE + (c/2)‖θ − θ0‖²] = ∇[Σ_i log(1 + exp(−y_i ŷ_i)) + (λ/2)‖θ − θ0‖²] (eq 5 on the
  logit difference ŷ = f_1 − f_0), batch-B steps summed over an epoch give (n/B)× that mean-form
  gradient whatever B, and coupled weight decay c is the same with θ0 = 0."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from gs_jax.nn import losses
  from gs_jax import training as train

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(jnp.tanh(nn.Dense(5)(x)))

  net, n, lam = Net(), 6, 3.0
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(n, 4)), jnp.float32)
  c01 = jnp.asarray([0, 1, 1, 0, 1, 0])
  params = net.init(jax.random.PRNGKey(1), x)["params"]
  params0 = net.init(jax.random.PRNGKey(2), x)["params"]
  c = losses.eq5_coefficient(lam, n)
  assert c == pytest.approx(lam / n)

  @jax.jit
  def _train_grad(p, xb, yb, p0):
    hp = {"sd_lambda": 0.0, "ridge": c, "params0": p0}
    return jax.grad(
      lambda q: train.softmax_ridge_objective(net.apply({"params": q}, xb), {"y": yb}, q, 0, hp)[0]
    )(p)

  def train_grad(p, idx, p0=params0):
    return _train_grad(p, x[idx], c01[idx], p0)

  @jax.jit
  def eq5_grad(p, p0=params0):
    def obj(q):
      out = net.apply({"params": q}, x)
      return losses.theory_objective(
        out[:, 1] - out[:, 0],
        {"y": 2.0 * c01 - 1.0, "params0": p0},
        q,
        0,
        {"ridge": lam, "sd": 0.0},
      )[0]

    return jax.grad(obj)(p)

  flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)])
  full = flat(train_grad(params, np.arange(n)))
  np.testing.assert_allclose(n * full, flat(eq5_grad(params)), rtol=2e-5, atol=1e-6)
  for B in (1, 2, 3):  # an epoch of batch-B steps at a fixed θ: (n/B)·the mean-form gradient
    summed = sum(flat(train_grad(params, np.arange(i, i + B))) for i in range(0, n, B))
    np.testing.assert_allclose(summed, (n / B) * full, rtol=2e-5, atol=1e-6)
  # plain coupled weight decay c: the gradient of the mean CE + c·θ = eq 5 with θ0 = 0, / n
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  g_ce = jax.jit(
    jax.grad(
      lambda q: train.softmax_objective(
        net.apply({"params": q}, x), {"y": c01}, q, 0, {"sd_lambda": 0.0}
      )[0]
    )
  )(params)
  tx = train.make_optimizer("sgd", 1.0, momentum=0.0, weight_decay=c)
  upd, _ = tx.update(g_ce, tx.init(params), params)
  np.testing.assert_allclose(-n * flat(upd), flat(eq5_grad(params, zero)), rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(
    flat(train_grad(params, np.arange(n), zero)), -flat(upd), rtol=2e-5, atol=1e-7
  )
  with pytest.raises(ValueError):
    losses.eq5_coefficient(1.0, 0)


def test_arm_names_and_dual_prediction():
  assert configs.parse_arm("ridge100") == ("ridge", 100.0)
  assert configs.parse_arm("wd1e3") == ("wd", 1000.0)
  assert configs.parse_arm("sd") == ("sd", 0.0)
  for bad in ("ridge", "ridge-1", "wdx", "l2"):
    with pytest.raises(ValueError, match="none of"):
      configs.parse_arm(bad)
  cfg = cli.parse(configs, ["--preset=coupled"], prog="t")
  assert cfg.arms == (
    "ridge10",
    "ridge100",
    "ridge1000",
    "ridge10000",
    "wd10",
    "wd100",
    "wd1000",
    "wd10000",
  )
  assert cfg.train_limit == 0 and cfg.epochs == 40 and cfg.batch_size == 1 and cfg.seeds == 3
  with pytest.raises(SystemExit):
    cli.parse(configs, ["--arms=erm,erm"], prog="t")
  from gs_jax.tasks import cifar_features as lib

  U = np.linalg.qr(np.random.default_rng(1).normal(size=(30, 4)))[0]
  S = np.array([20.0, 5.0, 2.0, 1.0])
  for lam in (1.0, 1e3):
    z = lib.dual_prediction(U, S, lam)
    alpha = 1.0 / (1.0 + np.exp(U @ z))  # eq 9 at the fixed point: α = σ(−U z)
    np.testing.assert_allclose(z, S**2 * (U.T @ alpha) / lam, rtol=1e-8)
  e = lib.relative_errors([2.0, 1.0, 1.0], [1.0, 1.0, 2.0])
  assert e["all"] == pytest.approx(np.sqrt(2 / 6)) and e["j2plus"] == pytest.approx(np.sqrt(1 / 5))


@pytest.mark.slow
def test_coupled_arms_end_to_end(tmp_path):
  """~1.5 min on 2 shared cores: ERM, eq 5's ridge and weight decay on 24 images."""
  real_data("cifar10", "cifar10.npz")
  out = tmp_path / "coupled"
  r = _run(TINY + ["--arms=erm,ridge10,wd10", "--feature_method=matrix_free", f"--out_dir={out}"])
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  from gs_jax.tasks import cifar_features as lib

  with np.load(out / "features" / "s0.npz") as f:
    U, S = f["U"][:, :3], f["S"][:3]
  pred = lib.dual_prediction(U, S, 10.0)
  for arm in ("ridge10", "wd10"):
    rec = res["per_seed"][f"{arm}_s0"]
    assert rec["eq5_lambda"] == 10.0 and rec["coefficient"] == pytest.approx(10.0 / 24)
    np.testing.assert_allclose(rec["z_dual"], pred, rtol=1e-8)
    assert rec["rel_err_dual"] == pytest.approx(lib.relative_errors(rec["z_final"], pred))
    assert "rel_err_dual_j2plus" in res["metrics"][arm]
  # the ridge pulls toward θ0: its responses are smaller than ERM's
  assert np.linalg.norm(res["per_seed"]["ridge10_s0"]["z_final"]) < np.linalg.norm(
    res["per_seed"]["erm_s0"]["z_final"]
  )
  assert (out / "coupled.png").exists()
  assert "Coupled regime" in (out / "table.md").read_text()


def test_ridge_training_of_a_linear_model_reaches_the_dual_prediction():
  """Where the network *is* its linearisation (logits linear in θ, ŷ0 = 0 at θ0), minimising
  the training objective mean CE + (c/2)‖θ − θ0‖² with c = eq5_coefficient(λ, n) lands on the
  responses experiments.cifar_features predicts, S² Uᵀ α*/λ with α* = dual.fixed_point (all
  features of YΦ0 kept): the whole §3.7 chain — λ mapping, two-logit CE as eq 5's logistic loss
  on f_1 − f_0, features, responses, fixed point — agrees to the optimiser's tolerance."""
  import jax
  import jax.numpy as jnp
  import scipy.optimize
  from jax.flatten_util import ravel_pytree

  from gs_jax.tasks import cifar_features as lib
  from gs_jax.nn import losses
  from gs_jax.theory import ntk
  from gs_jax import training as train

  rng = np.random.default_rng(3)
  n, d, lam = 10, 3, 2.0
  x = rng.normal(size=(n, d))
  c01 = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int32)
  w0 = rng.normal(size=(d, 1))
  params0 = {"w": np.concatenate([w0, w0], axis=1), "b": np.array([0.3, 0.3])}  # ŷ0 = 0
  apply = lambda p, xx: xx @ p["w"] + p["b"]
  c = losses.eq5_coefficient(lam, n)
  with dual.enable_x64():  # jax.experimental.enable_x64 or jax.enable_x64, by version
    flat0, unravel = ravel_pytree(jax.tree_util.tree_map(jnp.asarray, params0))

    def objective(w):
      p = unravel(w)
      return train.softmax_ridge_objective(
        apply(p, x),
        {"y": jnp.asarray(c01)},
        p,
        0,
        {"sd_lambda": 0.0, "ridge": c, "params0": unravel(flat0)},
      )[0]

    fun = jax.jit(jax.value_and_grad(objective))
    sol = scipy.optimize.minimize(
      lambda w: tuple(np.asarray(v) for v in fun(w)),
      np.asarray(flat0),
      jac=True,
      method="L-BFGS-B",
      options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
    )
    f = ntk.logit_difference(lambda p, xx: apply(p, xx))
    phi = np.asarray(ntk.ntrf(f, unravel(flat0), x))
    logits = np.asarray(f(unravel(jnp.asarray(sol.x)), x))
  K = phi @ phi.T
  rank = int(np.sum(np.linalg.eigvalsh(K) > 1e-9 * np.abs(K).max()))
  U, S = ntk.features_from_kernel(K, c01, rank)
  z = np.asarray(ntk.responses(U, c01, logits))
  pred = lib.dual_prediction(U, S, lam)
  np.testing.assert_allclose(z, pred, rtol=1e-5, atol=1e-7)
  assert np.linalg.norm(pred) > 0.1  # not a trivial agreement at zero


def test_coupled_table_and_figure_from_fake_results(tmp_path):
  """The λ table: relative errors per feature group, mean ± sample std over seeds."""
  per = {}
  for s, (e1, e2) in enumerate(((0.1, 0.2), (0.3, 0.4))):
    per[f"ridge10_s{s}"] = {
      "arm": "ridge10",
      "seed": s,
      "train_acc": 1.0,
      "z_final": [1.0, 2.0, 3.0],
      "z_dual": [1.0, 1.0, 1.0],
      "eq5_lambda": 10.0,
      "coefficient": 0.01,
      "rel_err_dual": {"all": e1, "j2plus": e2},
    }
  res = {"config": {"k": 3, "arms": ["erm", "ridge10"], "dual_dynamics": "exact"}, "per_seed": per}
  text = cifar_features_figures.coupled_table(res)
  assert (
    "| ridge10 (ridge ‖θ−θ0‖²) | 10 | 0.01 | 100.0 ± 0.0% | 0.200 ± 0.141 | 0.300 ± 0.141 "
    "| 6 | 3 |" in text
  )
  assert (
    cifar_features_figures.coupled_table({"config": {"k": 3, "arms": ["erm"]}, "per_seed": {}})
    == ""
  )
  traj = {("ridge10", 0): (np.array([1, 10, 100]), np.ones((3, 3)))}
  paths = cifar_features_figures.draw_coupled(res, tmp_path, traj)
  assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.exists() for p in paths)

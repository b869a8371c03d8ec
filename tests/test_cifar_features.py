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
from gs_jax import cli, dual
from tests.conftest import REPO, real_data

# Kills the process (exit 3, no cleanup) once `step` training steps are done, keeping the
# experiment's own chunk callback (conftest's run_experiment replaces it).
_KILLED = """
import importlib, os, sys
from gs_jax import train
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

TINY = ["--train_limit=24", "--epochs=2", "--seeds=1", "--k=3", "--k_spectrum=4",
        "--n_images=2", "--response_every=4", "--chunk=8", "--feature_passes=3",
        "--feature_batch=12", "--no_progress"]


def _run(args, kill_after=None):
  code = ["-m", "experiments.cifar_features"] if kill_after is None else \
      ["-c", _KILLED.format(step=kill_after)]
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, *code, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=900)


def _z_lines(out_dir):
  z = {}
  with open(os.path.join(out_dir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if r["kind"] == "z":
        z[(r["arm"], r["step"])] = r["z"]   # a redone step keeps its last line
  return z


def test_eq17_lambda_and_sd_prediction():
  cfg = cli.parse(configs, [], prog="t")
  from experiments import cifar_features as exp
  assert exp.eq17_lambda(cfg) == pytest.approx(0.1)          # batch 1, sd_coef 0.1
  assert exp.eq17_lambda(cli.overrides(cfg, batch_size=4)) == pytest.approx(0.4)
  U = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 3)))[0]
  z = exp.sd_prediction(U, 0.1)
  a = 0.1 * z[0] / U[:, 0].sum()
  np.testing.assert_allclose(np.log((1 - a) / a), a / 0.1, rtol=1e-10)   # eq 18 fixed point
  alpha = dual.fixed_point(U, np.ones(3), 0.1, dynamics="sd")
  np.testing.assert_allclose(z, dual.responses_at(U, np.ones(3), 0.1, alpha, "sd"), rtol=1e-10)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_responses(tmp_path):
  """1.4–5 minutes on 2 shared cores (three subprocesses compile the batch-1 scan)."""
  real_data("cifar10", "cifar10.npz")
  whole = _run(TINY + [f"--out_dir={tmp_path / 'whole'}"])
  assert whole.returncode == 0, whole.stderr[-3000:]
  killed = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"], kill_after=32)   # ERM, in epoch 2
  assert killed.returncode == 3, killed.stderr[-3000:]
  again = _run(TINY + [f"--out_dir={tmp_path / 'resumed'}"])
  assert again.returncode == 0, again.stderr[-3000:]
  a = json.load(open(tmp_path / "whole" / "results.json"))
  b = json.load(open(tmp_path / "resumed" / "results.json"))
  for key in ("erm_s0", "sd_s0"):
    np.testing.assert_array_equal(a["per_seed"][key]["z_final"], b["per_seed"][key]["z_final"])
    assert a["per_seed"][key]["train_acc"] == b["per_seed"][key]["train_acc"]
  za, zb = _z_lines(tmp_path / "whole"), _z_lines(tmp_path / "resumed")
  assert set(za) == set(zb) and len(za) == 2 * 12          # 48 steps / 4, both arms
  for k in za:
    np.testing.assert_array_equal(za[k], zb[k])
  # the z recorded at the last step is the final response computed outside the loop
  np.testing.assert_allclose(za[("sd", 48)], a["per_seed"]["sd_s0"]["z_final"], rtol=1e-4,
                             atol=1e-5)
  for name in ("spectrum", "features", "responses", "final"):
    assert (tmp_path / "whole" / f"{name}.png").exists()
  assert "eq-18" in cifar_features_figures.report(tmp_path / "whole")

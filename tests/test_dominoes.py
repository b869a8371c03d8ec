"""MNIST–CIFAR dominoes (docs/protocols.md §3.8): the builder on generated arrays and on the
offline copies, the contrast, where features look (ntk.feature_region_shares), the analysis on
fake run directories, and experiments.dominoes end to end (quick preset)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import dominoes_figures
from gs_jax.theory import ntk
from gs_jax.data import cifar, dominoes
from tests.conftest import real_data, run_experiment


def _fake_sources(n_mnist=400, n_cifar=120, n_test_m=80, n_test_c=60, seed=0):
  """MNIST-like digits 0–9 and a two-class CIFAR whose pixels encode their own index, so that
  every image can be identified after pairing."""
  rng = np.random.default_rng(seed)

  def digits_of(n):
    y = rng.integers(0, 10, n)
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 0, 0] = np.arange(n) % 256
    x[:, 0, 1] = np.arange(n) // 256
    x[:, 5:20, 10:18] = (100 + 15 * y)[:, None, None]  # the digit's "stroke"
    return x, y

  def cifar_of(n):
    y = np.repeat([0, 1], n // 2)
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(n) % 256
    x[:, 0, 0, 1] = np.arange(n) // 256
    return x, y.astype(np.int32)

  xm, ym = digits_of(n_mnist)
  xmt, ymt = digits_of(n_test_m)
  xc, yc = cifar_of(n_cifar)
  xct, yct = cifar_of(n_test_c)
  c2 = cifar.CifarData(xc, yc, xct, yct, np.arange(n_test_c) < 10, 2, "cifar2", "fake")
  return (xm, ym, xmt, ymt), c2


def _ids(d):
  """(MNIST id, CIFAR id) of every pair, read back from the pixels."""
  m = d.x[:, 2, 2, 0].astype(int) + 256 * d.x[:, 2, 3, 0].astype(int)  # padded by 2
  c = d.x[:, 32, 0, 0].astype(int) + 256 * d.x[:, 32, 0, 1].astype(int)
  return m, c


def test_builder_shapes_pairing_and_holdout():
  mnist, c2 = _fake_sources()
  s = dominoes.build(3, mnist, c2, n_val=20)
  assert set(s) == {
    "train",
    "val",
    "val_mnist_random",
    "test",
    "test_mnist_random",
    "test_cifar_random",
  }
  n_per = min(np.sum(mnist[1] == 0), np.sum(mnist[1] == 1), 60) - 10  # 10 per class held out
  assert len(s["train"]) == 2 * min(n_per, 50)
  assert len(s["test"]) == 2 * min(np.sum(mnist[3] == 0), np.sum(mnist[3] == 1), 30)
  for name, d in s.items():
    assert d.x.shape == (len(d), 64, 32, 3) and d.x.dtype == np.uint8, name
    assert d.y.dtype == np.int32 and set(np.unique(d.y)) <= {0, 1}
    assert np.sum(d.y == 0) == np.sum(d.y == 1), name  # balanced
    # the MNIST half is the zero-padded digit in all three channels
    assert np.all(d.x[:, :2] == 0) and np.all(d.x[:, 30:32] == 0)
    assert np.all(d.x[:, :32, :, 0] == d.x[:, :32, :, 2])
  for name in ("train", "val", "test"):
    d = s[name]
    assert np.all(d.digit == np.asarray(dominoes.DIGITS)[d.y]), name  # intact: both halves
    assert np.all(d.cifar_class == d.y), name  # predict the label
  # the CIFAR half is the CIFAR image itself
  m_id, c_id = _ids(s["test"])
  np.testing.assert_array_equal(s["test"].x[:, 32:], c2.x_test[c_id])
  np.testing.assert_array_equal(s["test"].x[:, 2:30, 2:30, 0], mnist[2][m_id])
  np.testing.assert_array_equal(s["test"].cifar_lossless, c2.test_is_lossless[c_id])
  # validation pairs never reuse a training image; no image twice within a split
  tm, tc = _ids(s["train"])
  vm, vc = _ids(s["val"])
  assert not set(tm) & set(vm) and not set(tc) & set(vc)
  assert len(set(tm)) == len(tm) and len(set(tc)) == len(tc)
  # randomised variants: same images, the other half untouched
  for half, other in (("mnist", slice(32, 64)), ("cifar", slice(0, 32))):
    r = s[f"test_{half}_random"]
    np.testing.assert_array_equal(r.x[:, other], s["test"].x[:, other])
    np.testing.assert_array_equal(r.y, s["test"].y)
    key = slice(0, 32) if half == "mnist" else slice(32, 64)
    a = np.sort(s["test"].x[:, key].reshape(len(r), -1), axis=0)
    np.testing.assert_array_equal(np.sort(r.x[:, key].reshape(len(r), -1), axis=0), a)


def test_builder_is_deterministic_per_seed():
  mnist, c2 = _fake_sources()
  a, b, c = (dominoes.build(s, mnist, c2, n_val=10) for s in (5, 5, 6))
  for name in a:
    np.testing.assert_array_equal(a[name].x, b[name].x)
  assert not np.array_equal(a["train"].x, c["train"].x)


def test_builder_rejects_bad_input():
  mnist, c2 = _fake_sources()
  with pytest.raises(ValueError, match="even"):
    dominoes.build(0, mnist, c2, n_val=3)
  with pytest.raises(ValueError, match="two different"):
    dominoes.build(0, mnist, c2, digits=(1, 1))
  with pytest.raises(ValueError, match="exceeds"):
    dominoes.build(0, mnist, c2, n_val=2000)
  with pytest.raises(ValueError, match="mnist"):
    dominoes.randomise(dominoes.build(0, mnist, c2)["test"], "top", np.random.default_rng(0))
  with pytest.raises(ValueError, match="shape"):
    dominoes.to_float(np.zeros((2, 32, 32, 3), np.uint8), 1.0)


def test_contrast_scales_the_mnist_half_only():
  x = np.random.default_rng(0).integers(0, 256, (3, 64, 32, 3)).astype(np.uint8)
  f = {a: np.asarray(dominoes.to_float(x, a)) for a in (0.0, 0.25, 1.0)}
  for v in f.values():
    assert v.dtype == np.float32 and v.shape == x.shape
    assert v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_allclose(v[:, 32:], x[:, 32:] / 255.0, rtol=1e-6)  # CIFAR untouched
  np.testing.assert_allclose(f[1.0][:, :32], x[:, :32] / 255.0, rtol=1e-6)
  np.testing.assert_allclose(f[0.25][:, :32], 0.25 * x[:, :32] / 255.0, rtol=1e-6)
  assert np.all(f[0.0][:, :32] == 0.0)  # blank at a = 0
  g = np.asarray(dominoes.to_float(x, 0.0, background=0.5))
  assert np.all(g[:, :32] == 0.5)  # = the background
  # linear in a: the digit's differences from the background scale by a
  h = np.asarray(dominoes.to_float(x, 0.5, background=0.5))
  np.testing.assert_allclose(h[:, :32] - 0.5, 0.5 * (x[:, :32] / 255.0 - 0.5), atol=1e-6)
  # traceable: a as a traced scalar inside jit
  out = jax.jit(dominoes.to_float)(jnp.asarray(x), jnp.float32(0.25))
  np.testing.assert_allclose(np.asarray(out), f[0.25], rtol=1e-6)


def _agreement_bound(n, sigmas=4.0):
  """|k/n − 1/2| for k ~ Binomial(n, 1/2) (a permutation's hypergeometric count varies less)
  exceeds sigmas·0.5/√n with probability < 1e-4 at 4σ."""
  return sigmas * 0.5 / np.sqrt(n)


def test_randomised_half_is_independent_of_the_label_real_data():
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  s, sources = dominoes.load(0, n_val=1000)
  assert sources["mnist"].startswith("$GS_DATA_DIR") and "cifar10" in sources["cifar"]
  test = s["test"]
  assert len(test) == 2 * 980 and test.x.shape == (1960, 64, 32, 3)  # MNIST has 980 zeros
  assert len(s["train"]) == 2 * 4500 and len(s["val"]) == 1000
  assert np.all(test.digit == test.y) and np.all(test.cifar_class == test.y)
  for name, agree in (
    ("test_mnist_random", lambda d: d.digit == d.y),
    ("test_cifar_random", lambda d: d.cifar_class == d.y),
    ("val_mnist_random", lambda d: d.digit == d.y),
  ):
    d = s[name]
    rate = float(np.mean(agree(d)))
    assert abs(rate - 0.5) < _agreement_bound(len(d)), (name, rate)
    for c in (0, 1):  # within each class too
      rc = float(np.mean(agree(d)[d.y == c]))
      assert abs(rc - 0.5) < _agreement_bound(np.sum(d.y == c)), (name, c, rc)


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


def _fake_run(path, a, methods=("erm", "l2", "sd"), seeds=2):
  per = {}
  for m_i, m in enumerate(methods):
    for s in range(seeds):
      per[f"{m}_s{s}"] = {
        "method": m,
        "seed": s,
        "train_acc": 1.0,
        "test_acc": {
          "intact": 0.99,
          "mnist_random": 0.9 - a * (0.3 - 0.1 * m_i) + 0.01 * s,
          "cifar_random": 0.5 + 0.4 * a,
        },
        "z_cifar": 1.0 - a + m_i,
        "z_mnist": a,
      }
  os.makedirs(path, exist_ok=True)
  json.dump(
    {"experiment": "dominoes", "config": {"a": a}, "per_seed": per},
    open(os.path.join(path, "results.json"), "w"),
  )


def test_analysis_on_fake_runs(tmp_path):
  for a in (0.0, 0.5, 1.0):
    _fake_run(tmp_path / "runs" / f"a{a:g}", a)
  text = dominoes_figures.report(str(tmp_path / "runs" / "a*"), tmp_path / "fig")
  for ext in ("png", "pdf", "json"):
    assert (tmp_path / "fig" / f"dominoes.{ext}").exists()
  summary = json.load(open(tmp_path / "fig" / "dominoes.json"))["summary"]
  v = summary["erm"]["test_mnist_random"]["1"]
  assert (
    v["n"] == 2
    and v["mean"] == pytest.approx(0.605)
    and v["std"] == pytest.approx(0.01 / np.sqrt(2))
  )
  assert summary["sd"]["z_cifar"]["0"]["mean"] == pytest.approx(3.0)
  assert "| ERM | 1 | 2 | 60.5 ± 0.7 |" in text
  with pytest.raises(FileNotFoundError):
    dominoes_figures.report(str(tmp_path / "nothing*"), tmp_path / "fig2")


@pytest.mark.slow
def test_quick_preset_end_to_end_and_a_killed_run_resumes(tmp_path):
  """2–5 min on 2 shared cores: the quick preset (2 epochs) whole, and killed in the second
  epoch of its first method then started again, end with the same numbers."""
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  args = ["--preset=quick", "--a=0.5", "--epochs=2"]
  out = tmp_path / "a0.5"
  r = run_experiment("dominoes", args + [f"--out_dir={out}"])
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  assert res["config"]["a"] == 0.5 and res["provenance"]["git_commit"]
  assert res["data"]["mnist"].startswith("$GS_DATA_DIR")
  assert set(res["metrics"]) == {"erm", "l2", "sd"}
  for rec in res["per_seed"].values():
    assert set(rec["test_acc"]) == {"intact", "mnist_random", "cifar_random"}
    assert all(0.0 <= v <= 1.0 for v in rec["test_acc"].values())
    assert len(rec["z_final"]) == 4 and len(rec["mnist_share"]) == 4
    assert rec["n_mnist"] + rec["n_cifar"] == 4
    assert np.isfinite(rec["z_cifar"]) and np.isfinite(rec["z_mnist"])
    assert rec["steps"] == 2 * 48 // 8
  assert res["per_seed"]["l2_s0"]["weight_decay"] > 0
  assert res["per_seed"]["sd_s0"]["sd_lambda"] > 0
  # killed after 8 steps (ERM, in epoch 2), then started again with the same command
  killed = tmp_path / "killed"
  k = run_experiment("dominoes", args + [f"--out_dir={killed}"], kill_after_step=8)
  assert k.returncode == 3, k.stderr[-3000:]
  again = run_experiment("dominoes", args + [f"--out_dir={killed}"])
  assert again.returncode == 0, again.stderr[-3000:]
  res2 = json.load(open(killed / "results.json"))
  for key in res["per_seed"]:
    assert res2["per_seed"][key]["test_acc"] == res["per_seed"][key]["test_acc"], key
    np.testing.assert_array_equal(res2["per_seed"][key]["z_final"], res["per_seed"][key]["z_final"])
  text = dominoes_figures.report(str(tmp_path / "a*"), tmp_path / "fig")
  assert "SD" in text and (tmp_path / "fig" / "dominoes.png").exists()


@pytest.mark.slow
def test_sd_sweep_picks_by_the_randomised_validation_accuracy(tmp_path):
  """~40 s on 2 shared cores: the sd_lambda sweep on a quick-sized problem."""
  real_data("mnist", "mnist.npz")
  real_data("cifar10", "cifar10.npz")
  out = tmp_path / "sweep"
  r = run_experiment(
    "dominoes",
    [
      "--preset=sd_sweep",
      "--train_limit=48",
      "--n_val=16",
      "--test_limit=32",
      "--epochs=1",
      "--batch_size=8",
      "--sd_sweep=0.01,0.1",
      "--eval_batch=16",
      "--no_progress",
      f"--out_dir={out}",
    ],
  )
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.load(open(out / "results.json"))
  m = res["metrics"]
  assert set(m) == {"sd0.01", "sd0.1", "sd_choice"}
  best = max(("sd0.01", "sd0.1"), key=lambda k: (m[k]["mnist_random"]["mean"], -m[k]["sd_lambda"]))
  assert m["sd_choice"]["sd_lambda"] == m[best]["sd_lambda"]
  for key in ("sd0.01_s0", "sd0.1_s0"):
    assert "test_acc" not in res["per_seed"][key]  # the sweep never looks at test
    assert set(res["per_seed"][key]["val_acc"]) == {"intact", "mnist_random"}
  assert not (out / "features").exists()


def test_narlenet_on_dominoes_widens_only_its_first_dense_layer():
  from gs_jax.nn import models

  net = models.NarLeNet(2)
  v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 32, 3)))["params"]
  assert v["fc0"]["kernel"].shape == (2080, 240)  # 32 · 13 · 5
  assert v["conv0"]["kernel"].shape == (5, 5, 3, 12) and v["fc1"]["kernel"].shape == (240, 192)
  bound = 1 / np.sqrt(2080)  # PyTorch default U(±1/√fan_in)
  assert float(jnp.abs(v["fc0"]["kernel"]).max()) <= bound
  assert float(jnp.abs(v["fc0"]["kernel"]).max()) > 0.98 * bound
  x = jnp.asarray(np.random.default_rng(0).random((3, 64, 32, 3)), jnp.float32)
  out = net.apply({"params": v}, x)
  assert out.shape == (3, 2)
  np.testing.assert_allclose(
    out, models.NarLeNet(2, patches=False).apply({"params": v}, x), rtol=1e-4, atol=1e-5
  )

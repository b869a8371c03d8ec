"""Theorem 2 on trained models (experiments.theorem2): reduced runs, resume, the command line.

The full protocol is ``python -m experiments.theorem2`` (``configs/theorem2.py``)."""

import json

import numpy as np
import pytest

from experiments import theorem2
from gs_jax.experiment import checkpoint


# In-process runs keep the test process's JAX devices (the CLI would add one per core).
ONE_DEVICE = ("--cpu_devices=1", "--no_progress")


def _network_run(out_dir, *extra):
  return theorem2.main(
    [
      f"--out_dir={out_dir}",
      "--preset=quick",
      "--parts=network",
      "--checkpoint_seconds=0",
      *ONE_DEVICE,
      *extra,
    ]
  )


@pytest.fixture(scope="module")
def quick_network(tmp_path_factory):
  """The quick width sweep (widths 32, 1024; κ = 1, 1.5; one seed), uninterrupted."""
  out = tmp_path_factory.mktemp("uninterrupted")
  return out, _network_run(out)


@pytest.mark.integration
def test_quick_network_error_falls_with_width_and_starvation_sign(quick_network, capsys):
  out, res = quick_network
  net = res["metrics"]["network"]
  assert sorted(net, key=int) == ["32", "1024"]
  # Measured 9.7e-2 and 4.4e-3: the wide net stays in the linear regime of eq 3.
  assert net["1024"]["rel_error"]["mean"] < 0.2 * net["32"]["rel_error"]["mean"]
  assert net["1024"]["rel_error"]["mean"] < 0.02
  for m in net.values():  # dz2/d(s1²) < 0 at fixed U, in trained nets and in the dual
    assert m["frac_trained_fd_negative"] == m["frac_autodiff_negative"] == 1.0
  ps = res["per_seed"]["network"]["1024"]
  assert np.shape(ps["z_trained"]) == (1, 2, 2) and np.shape(ps["rel_error"]) == (1, 2)
  np.testing.assert_allclose(np.asarray(ps["s1"])[0, 1] / np.asarray(ps["s1"])[0, 0], 1.5)
  assert res["std_convention"] == "sample (ddof=1)"
  for name in ("theorem2_network.png", "theorem2_network.pdf", "metrics.jsonl"):
    assert (out / name).stat().st_size > 1000
  # The same command again finds both widths and trains nothing.
  capsys.readouterr()
  _network_run(out)
  text = capsys.readouterr().out
  assert text.count("not retrained") == 2 and "(b) finite networks" in text


@pytest.mark.integration
def test_killed_width_sweep_resumes_to_the_same_numbers(
  quick_network, tmp_path, monkeypatch, capsys
):
  """Killed after a checkpoint in the middle of width 1024 (width 32 finished), the same
  command skips width 32, resumes width 1024 at that step and ends with the same numbers."""
  _, full = quick_network

  class Killed(Exception):
    pass

  save = checkpoint.Checkpointer.save

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if "width_1024-" in self.directory and step == 2000:  # ckpt/<part>-<digest>
      raise Killed

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    _network_run(tmp_path)
  monkeypatch.undo()
  partial = json.loads((tmp_path / "results.json").read_text())
  assert list(partial["metrics"]["network"]) == ["32"]
  capsys.readouterr()
  resumed = _network_run(tmp_path)
  text = capsys.readouterr().out
  assert "width 32: found" in text
  assert "width 1024: resuming from the checkpoint at step 2000" in text
  assert resumed["per_seed"] == full["per_seed"]  # bit for bit
  for w, m in full["metrics"]["network"].items():
    assert {k: v for k, v in resumed["metrics"]["network"][w].items() if k != "seconds"} == {
      k: v for k, v in m.items() if k != "seconds"
    }
  assert not any((tmp_path / "ckpt").rglob("width_1024-*"))  # removed once written


@pytest.mark.integration
def test_linear_part_from_the_cli(tmp_path, capsys):
  theorem2.main(
    [
      f"--out_dir={tmp_path}",
      "--parts=linear",
      "--linear.s1=2.5,5",
      "--linear.steps=20000",
      *ONE_DEVICE,
    ]
  )
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["config"]["parts"] == ["linear"] and res["config"]["linear"]["s1"] == [2.5, 5.0]
  assert res["metrics"]["linear"]["ridge"]["max_rel_error"] < 1e-6
  assert "(a) linear model" in capsys.readouterr().out
  for name in ("theorem2_linear.png", "theorem2_linear.pdf"):
    assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.parametrize(
  "flag",
  [
    "--parts=nope",
    "--linear.lam=0",
    "--network.sweep=x",
    "--network.kappas=1",
    "--linear.m=1",
    "--lam=0.1",
  ],
)
def test_cli_rejects_bad_flags(flag):
  with pytest.raises(SystemExit):
    theorem2.main([flag, *ONE_DEVICE])


@pytest.mark.integration
@pytest.mark.slow
def test_full_protocol(tmp_path):
  res = theorem2.main([f"--out_dir={tmp_path}", *ONE_DEVICE])
  assert res["metrics"]["linear"]["ridge"]["max_rel_error"] < 1e-12
  errors = [
    res["metrics"]["network"][w]["rel_error"]["mean"] for w in ("64", "256", "1024", "4096", "8192")
  ]
  assert np.all(np.diff(errors) < 0) and errors[-1] < 2e-3

"""Colored MNIST: ERM, SD, IRM, V-REx and the grayscale oracle (Table 2, Figure 3). Presets,
commands and expected results: ``configs/colored_mnist.py``; protocol: docs/protocols.md §3.4.

All restarts train in one compiled full-batch program (``gs_jax.cmnist``), the restart axis
split over every device of every process in a multi-process run (``--coordinator_address``,
``--num_processes``, ``--process_id``; README, "Multi-process runs"): every process gets every
restart back and process 0 writes the outputs. Outputs in
``out_dir``: ``results.json`` (per restart: the final model's train/test accuracy, the released
code's last-step accuracies, accuracy and mean prediction entropy on the four Figure-3
variants; summaries as mean ± sample std; the progress table), ``metrics.jsonl`` (seed-mean
training metrics every ``log_every`` steps, written while training) and ``ckpt/``. Started
again with the same command, a finished run is not recomputed and a killed one continues from
its checkpoint to the same numbers; ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

from configs import colored_mnist as configs
from gs_jax.base import stats
from gs_jax.experiment import cli
from gs_jax.experiment.run import Run
from gs_jax.base import distributed
from gs_jax.tasks import cmnist


def validate(cfg) -> None:
  """Checks that need the library (the config module imports ml_collections only)."""
  if cfg.objective not in cmnist.OBJECTIVES:
    raise ValueError(f"--objective must be one of {cmnist.OBJECTIVES}; got {cfg.objective!r}")
  if cfg.rex_form not in cmnist.REX_FORMS:
    raise ValueError(f"--rex_form must be one of {cmnist.REX_FORMS}; got {cfg.rex_form!r}")


def _chunk_logger(writer, log_every: int):
  """``on_chunk`` that appends the seed-mean metrics of every ``log_every``-th step."""

  def on_chunk(done, hist):
    length = len(next(iter(hist.values()))[0])
    for i in range(length):
      step = done - length + i  # updates applied before these metrics were measured
      if step % log_every == 0:
        writer.log(step, **{k: float(np.mean(v[:, i])) for k, v in hist.items()})

  return on_chunk


def _truncate_log(path, before: int) -> None:
  """Drops metrics.jsonl lines from step ``before`` on (a resumed run recomputes them)."""
  if path.exists():
    lines = [l for l in path.read_text().splitlines() if json.loads(l)["step"] < before]
    path.write_text("".join(l + "\n" for l in lines))


def run(cfg, *, mnist=None) -> dict:
  """Trains ``cfg.seeds`` restarts of the configured method; writes and returns results.json.
  ``mnist`` (``(images, digits)``, optional) replaces loading MNIST from ``--data_dir``. A
  directory holding this configuration's finished results returns them (``--overwrite``
  recomputes)."""
  writer = Run(cfg, "colored_mnist")
  if writer.previous is not None:
    print(
      f"{writer.results_path}: finished with these settings, not recomputed (--overwrite reruns it)"
    )
    return writer.previous

  t0 = time.perf_counter()
  batch, variants = cmnist.build_data(cfg, cfg.run.data_dir or None, mnist=mnist)
  t_data = time.perf_counter() - t0
  ckpt = writer.checkpointer()
  start = ckpt.latest_step() or 0
  if distributed.is_main():
    _truncate_log(writer.log_path, start)
  # The precision is a hyper-parameter (matmuls in float32, not bf16 passes): scoped to this
  # computation, never a process-wide setting.
  with jax.default_matmul_precision(cfg.matmul_precision):
    states, history = cmnist.train_restarts(
      cfg,
      batch,
      progress=cfg.run.progress,
      checkpoint=ckpt,
      on_chunk=_chunk_logger(writer, cfg.log_every),
      desc=f"{cfg.get('preset', cfg.objective)} x{cfg.seeds}",
    )
    t_train = time.perf_counter() - t0 - t_data
    per_seed = cmnist.evaluate(cfg, states.params, batch, variants)
  # The released code reports the metrics of its last step, measured before that update.
  per_seed["last_step_train_acc"] = history["train_acc"][:, -1]
  per_seed["last_step_test_acc"] = history["test_acc"][:, -1]
  metrics = {k: stats.mean_std(v) for k, v in per_seed.items() if k != "variants"}
  metrics["variants"] = {
    name: {k: stats.mean_std(v) for k, v in m.items()} for name, m in per_seed["variants"].items()
  }
  logged = list(range(0, cfg.steps, cfg.log_every))
  table = cmnist.format_table({k: v.mean(0) for k, v in history.items()}, cfg.log_every)
  n_train, n_test = int(batch["y"].shape[-1]), int(batch["test_y"].shape[-1])
  writer.write(
    metrics,
    per_seed,
    n_train=n_train,
    n_test=n_test,
    table=table,
    history={"step": logged, **{k: v[:, logged] for k, v in history.items()}},
    timing_s={
      "data": t_data,
      "train": t_train,
      "resumed_from_step": start,
      "s_per_step_all_restarts": t_train / max(cfg.steps - start, 1),
    },
  )
  res = writer.read()
  if distributed.is_main():
    print(
      f"== {cfg.get('preset', cfg.objective)}: {cfg.seeds} restarts, {cfg.steps} steps, "
      f"{n_train} train / {n_test} test examples, {t_train:.1f}s training on "
      f"{jax.device_count()} devices ({jax.devices()[0].platform}, "
      f"{jax.process_count()} processes)" + (f" (resumed at step {start})" if start else "")
    )
    print(table)
    for key in ("train_acc", "test_acc", "last_step_train_acc", "last_step_test_acc"):
      m = metrics[key]
      print(
        f"{key:20s} {100 * m['mean']:6.2f} ± {100 * m['std']:.2f} % (sample std, {m['n']} restarts)"
      )
    for name, v in metrics["variants"].items():
      print(
        f"  {name:13s} accuracy {100 * v['accuracy']['mean']:6.2f} %   "
        f"entropy {v['entropy']['mean']:.3f}"
      )
    print("wrote", writer.results_path)
  return res


def main(argv=None):
  return cli.main(configs, run, argv, prog="python -m experiments.colored_mnist", validate=validate)


if __name__ == "__main__":
  main()

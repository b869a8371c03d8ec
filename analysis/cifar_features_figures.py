r"""Figures and table of the CIFAR-2 feature experiment (docs/protocols.md §3.6) from a run
directory of ``experiments.cifar_features``:

    python -m analysis.cifar_features_figures runs/cifar_features/n1000_e4

- ``spectrum.png``: the top singular values ``s_j`` of ``YΦ0`` at θ0, one line per seed;
- ``features.png``: for the top features of seed 0, the training image each weighs most
  (largest ``|u_ij|``) and the input gradient ``∇_x (∇_θ ŷ(x; θ0)·v_j)`` there;
- ``responses.png``: ``z_j(t) = u_jᵀ Y (ŷ_t − ŷ_0)`` of the top k features against training
  steps, ERM and SD side by side (mean over seeds);
- ``final.png``: the final responses of both arms per feature (mean ± std over seeds) with the
  eq-18 prediction for SD;
- ``coupled.png`` (runs with ``ridge<λ>`` / ``wd<λ>`` arms, docs/protocols.md §3.7): each such
  arm's final responses per seed beside the linearised model's prediction
  ``dual.fixed_point(U, S, λ)``, and the trajectories ``z_j(t)`` of the strongest five with
  their ``z_j*``;
- ``table.md``: the numbers quoted in the README, and for those arms the λ table — relative
  error to the prediction over features 1–k and 2–k, mean ± sample std over seeds.

**The λ mapping** (nothing is fitted). The network has two logits; its scalar logit is
``ŷ = f_1 − f_0`` (:func:`gs_jax.ntk.logit_difference`: two-logit cross-entropy is the logistic
loss of eq 5 on it). The released SD objective at batch size B is
``mean_batch CE + sd_coef·Σ_{batch,logits} f_c²``; averaged over an epoch (each example once)
and multiplied by n it is ``Σ_i CE_i + B·sd_coef·Σ_i (f_i0² + f_i1²)``. With
``f_0² + f_1² = (ŷ² + σ²)/2`` for the logit sum ``σ = f_0 + f_1``, which the cross-entropy
does not see and the penalty drives to 0, this is eq 17, ``Σ_i ℓ_i + (λ/2)‖ŷ‖²``, with
**λ = B·sd_coef** (= sd_lambda/2 in the mean form of docs/protocols.md §4; 0.1 for the released
sd_coef 0.1 at batch 1). eq 18 then gives every ``α_i* = a*(λ)`` with
``log((1−a)/a) = a/λ`` and ``z* = a*/λ · U_kᵀ 1``. The ERM arm has no weight decay: λ = 0 in
eq 5, where the fixed point does not exist (the responses grow without bound as the logistic
loss goes to 0), so no prediction is drawn for it. The theory is about the linearised,
centred network trained to convergence; the CNN is neither, and the gap is reported as is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from analysis import provenance
from gs_jax.experiment import results as results_lib

ARMS = ("erm", "sd")
LABELS = {"erm": "ERM", "sd": "SD"}


def load(run_dir) -> dict:
  """results.json, the response trajectories (deduplicated: a resumed run's redone steps keep
  their last line) and the cached features of every seed."""
  run_dir = Path(run_dir)
  res = results_lib.read_json(run_dir / "results.json")
  if res is None:
    raise FileNotFoundError(f"no results.json in {run_dir}: run experiments.cifar_features")
  z = {}
  with open(run_dir / "metrics.jsonl") as f:
    for line in f:
      r = json.loads(line)
      if r.get("kind") == "z":
        z.setdefault((r["arm"], r["seed"]), {})[r["step"]] = r["z"]
  traj = {key: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for key, v in z.items()}
  return {"res": res, "traj": traj, "features": load_features(run_dir)}


def load_features(run_dir) -> dict:
  """The cached features at θ0 of every seed, ``{seed: {"U": …, "S": …, …}}`` ({} if none)."""
  feats = {}
  for p in sorted((Path(run_dir) / "features").glob("s*.npz")):
    with np.load(p) as d:
      feats[int(p.stem[1:])] = dict(d)
  return feats


def merge(datas: list[dict]) -> dict:
  """One run from several output folders whose arms were split over processes (``--arms``;
  ``make cifar_features_coupled``): arms in the order given, per-seed results, metrics and
  trajectories joined. Every folder must have the same settings apart from ``arms`` and the
  ``run`` section, and the same features at θ0 (they depend on the seed and those settings
  only, so each process computes the same ones: checked to 1e-6 relative); the first folder's
  provenance, spectra and features are kept."""
  if not datas:
    raise ValueError("merge: no runs given")
  first = datas[0]["res"]
  out = {**datas[0], "res": json.loads(json.dumps(first)), "traj": dict(datas[0]["traj"])}
  res = out["res"]
  skip = ("arms", "run")
  base = {k: v for k, v in first["config"].items() if k not in skip}
  for d in datas[1:]:
    r = d["res"]
    other = {k: v for k, v in r["config"].items() if k not in skip}
    if other != base:
      diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
      raise ValueError(f"merge: runs differ in settings {diff}; only arms may differ")
    clash = set(res["per_seed"]) & set(r["per_seed"])
    if clash:
      raise ValueError(f"merge: the same arm-seed in two runs: {sorted(clash)}")
    for seed, f in d["features"].items():
      u0, u1 = out["features"][seed]["U"], f["U"]
      if np.linalg.norm(u1 - u0) > 1e-6 * np.linalg.norm(u0):
        raise ValueError(f"merge: seed {seed}'s features at θ0 differ between the runs")
    res["config"]["arms"] = list(res["config"]["arms"]) + list(r["config"]["arms"])
    res["per_seed"].update(r["per_seed"])
    res["metrics"].update(r.get("metrics", {}))
    out["traj"].update(d["traj"])
  return out


def load_merged(run_dirs, features_from=None) -> dict:
  """:func:`load` of one folder, or :func:`merge` of several; ``features_from``: a run folder
  of the same settings and seeds whose cached θ0 features stand in when the runs hold none."""
  data = merge([load(d) for d in run_dirs])
  if features_from and not data["features"]:
    data["features"] = load_features(features_from)
  return data


def _final(res, arm):
  runs = [v for v in res["per_seed"].values() if v["arm"] == arm]
  return np.array([v["z_final"] for v in runs]), runs


def table(data) -> str:
  res = data["res"]
  cfg = res["config"]
  S = np.array([v["S"] for v in res["spectra"].values()])
  k = cfg["k"]
  lines = [
    f"CIFAR-2 ({res['data']['classes']}), n = {res['data']['n_train']} training images, "
    f"{cfg['epochs']} epochs of batch {cfg['batch_size']}, {len(S)} seed(s); "
    f"λ(eq 17) = {res['eq17_lambda']:g}",
    "",
    "| | s_1 | s_2 | s_5 | s_10 | s_20 | s_50 | s_1/s_2 |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for seed, s in enumerate(S):
    idx = [i for i in (0, 1, 4, 9, 19, 49) if i < len(s)]
    lines.append(
      f"| seed {seed} | " + " | ".join(f"{s[i]:.3g}" for i in idx) + f" | {s[0] / s[1]:.1f} |"
    )
  shown = [i for i in (0, 1, 2, 4, 9, 19) if i < k]
  lines += [
    "",
    "Final responses (mean over seeds; each seed's own features):",
    "",
    "| arm | train acc | "
    + " | ".join(f"z_{i + 1}" for i in shown)
    + " | Σ_{j≥2} z_j | eq-18 Σ_{j≥2} z_j* | ‖z − z*‖/‖z*‖ all j | same, j ≥ 2 |",
    "|---|" + "---|" * (len(shown) + 5),
  ]
  for arm in ARMS:
    z, runs = _final(res, arm)
    if not len(z):
      continue
    zm = z.mean(axis=0)
    acc = results_lib.mean_std([r["train_acc"] for r in runs])
    row = (
      f"| {LABELS[arm]} | {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}% | "
      + " | ".join(f"{zm[i]:.3g}" for i in shown)
      + f" | {zm[1:].sum():.3g} | "
    )
    if arm == "sd":
      pred = np.array([r["z_eq18"] for r in runs])
      gap = np.linalg.norm(z - pred) / np.linalg.norm(pred)
      gap2 = np.linalg.norm(z[:, 1:] - pred[:, 1:]) / np.linalg.norm(pred[:, 1:])
      row += f"{pred.mean(axis=0)[1:].sum():.3g} | {gap:.2f} | {gap2:.2f} |"
    else:
      row += "– (λ = 0) | – | – |"
    lines.append(row)
  ze, _ = _final(res, "erm")
  zs, _ = _final(res, "sd")
  if len(ze) and len(zs) and k >= 20:
    lines += [
      "",
      "ERM/SD ratio of summed final responses by feature group (per seed):",
      "",
      "| seed | j = 2–5 | j = 6–10 | j = 11–20 |",
      "|---|---|---|---|",
    ]
    for i in range(min(len(ze), len(zs))):
      r = [ze[i, a:b].sum() / zs[i, a:b].sum() for a, b in ((1, 5), (5, 10), (10, 20))]
      lines.append(f"| {i} | " + " | ".join(f"{v:.2f}" for v in r) + " |")
  return "\n".join(lines)


def coupled_arms(res) -> list[str]:
  """The ridge<λ> / wd<λ> arms of a run (docs/protocols.md §3.7), in config order."""
  arms = res["config"].get("arms", list(ARMS))
  return [a for a in arms if a.startswith(("ridge", "wd"))]


def _groups(k: int) -> list[tuple[int, int]]:
  """Feature groups j = a+1…b of the λ table: where along the spectrum the trained network
  stops following the prediction."""
  return [(a, min(b, k)) for a, b in ((1, 5), (5, 10), (10, 20)) if a < k]


def pm(ms, digits=1) -> str:
  """``mean ± std`` of a :func:`gs_jax.base.stats.mean_std` dict."""
  return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def coupled_stats(res, features=None) -> dict:
  """Per ridge/wd arm with runs (config order), over seeds (mean ± sample std): train
  accuracy; ``err_all``/``err_j2`` = ‖z − z*‖/‖z*‖ over features 1–k / 2–k and ``err_groups``
  per :func:`_groups`; over features 2–k ``cos`` = cos(z, z*), ``ratio`` = ‖z‖/‖z*‖ and, with
  ``features``, ``control`` = cos(z, Uᵀ1) (:func:`coupled_table`); ``z_sum``/``z_dual_sum``
  the mean Σ_j z_j and Σ_j z_j*."""
  k = res["config"]["k"]
  ms = results_lib.mean_std
  out = {}
  for arm in coupled_arms(res):
    runs = [v for v in res["per_seed"].values() if v["arm"] == arm]
    if not runs:
      continue
    z = np.array([r["z_final"] for r in runs])
    zd = np.array([r["z_dual"] for r in runs])
    # direction and scale apart: the prediction's pattern over features vs its size
    n2, nd2 = np.linalg.norm(z[:, 1:], axis=1), np.linalg.norm(zd[:, 1:], axis=1)
    st = {
      "lambda": runs[0]["eq5_lambda"],
      "coefficient": runs[0]["coefficient"],
      "seeds": len(runs),
      "acc": ms([r["train_acc"] for r in runs]),
      "err_all": ms([r["rel_err_dual"]["all"] for r in runs]),
      "err_j2": ms([r["rel_err_dual"]["j2plus"] for r in runs]),
      "err_groups": [
        ms(np.linalg.norm(z[:, a:b] - zd[:, a:b], axis=1) / np.linalg.norm(zd[:, a:b], axis=1))
        for a, b in _groups(k)
      ],
      "cos": ms(np.sum(z[:, 1:] * zd[:, 1:], axis=1) / (n2 * nd2)),
      "ratio": ms(n2 / nd2),
      "z_sum": float(z.sum(axis=1).mean()),
      "z_dual_sum": float(zd.sum(axis=1).mean()),
    }
    if features:
      u1 = np.array([features[r["seed"]]["U"][:, :k].sum(axis=0)[1:] for r in runs])
      st["control"] = ms(np.sum(z[:, 1:] * u1, axis=1) / (n2 * np.linalg.norm(u1, axis=1)))
    out[arm] = st
  return out


def coupled_table(res, features=None) -> str:
  """The λ table of §3.7: per ridge/wd arm, the relative error ‖z − z*‖/‖z*‖ of the trained
  network's final responses to ``dual.fixed_point``'s prediction, features 1–k and 2–k and by
  group, the cosine and norm ratio of z and z* (features 2–k), mean ± sample std over seeds
  ("" when the run has no such arm). With ``features`` ({seed: {"U": …}}, as :func:`load`)
  also the control cos(z, Uᵀ1): every training example at one margin m gives
  z = m·Uᵀ1 − UᵀYŷ0 whatever the coupling (§3.6), so z* is informative only where it beats
  that pattern."""
  arms = coupled_arms(res)
  if not arms:
    return ""
  k = res["config"]["k"]
  groups = _groups(k)
  lines = [
    "Coupled regime (eq 5): trained responses against the linearised model's optimum "
    f"z* = S² Uᵀ α*/λ, α* = dual.fixed_point (dynamics "
    f"{res['config'].get('dual_dynamics', 'exact')}), mean ± sample std over seeds:",
    "",
    f"| arm | λ (eq 5) | c = λ/n | train acc | ‖z − z*‖/‖z*‖, j = 1–{k} | same, j = 2–{k} "
    + "".join(f"| j = {a + 1}–{b} " for a, b in groups)
    + f"| cos(z, z*), j = 2–{k} "
    + (f"| control cos(z, Uᵀ1), j = 2–{k} " if features else "")
    + f"| ‖z‖/‖z*‖, j = 2–{k} | Σ_j z_j | Σ_j z_j* |",
    "|---|---|---|---|---|---|" + "---|" * len(groups) + "---|" * (4 + bool(features)),
  ]
  for arm, st in coupled_stats(res, features).items():
    kind = "ridge ‖θ−θ0‖²" if arm.startswith("ridge") else "weight decay ‖θ‖²"
    ctrl = f"| {pm(st['control'], 2)} " if features else ""
    lines.append(
      f"| {arm} ({kind}) | {st['lambda']:g} | {st['coefficient']:.3g} "
      f"| {100 * st['acc']['mean']:.1f} ± {100 * st['acc']['std']:.1f}% "
      f"| {pm(st['err_all'], 3)} | {pm(st['err_j2'], 3)} "
      + "".join(f"| {pm(e, 3)} " for e in st["err_groups"])
      + f"| {pm(st['cos'], 2)} "
      + ctrl
      + f"| {st['ratio']['mean']:.3g} ± {st['ratio']['std']:.2g} "
      + f"| {st['z_sum']:.3g} | {st['z_dual_sum']:.3g} |"
    )
  if not res.get("spectra"):
    return "\n".join(lines)
  S = np.array([v["S"] for v in res["spectra"].values()]) ** 2
  idx = [i for i in (0, 1, 4, 9, 19) if i < S.shape[1]]
  lines += [
    "",
    "Strengths s_j² of YΦ0 at θ0 (mean over seeds), to place λ: "
    + ", ".join(f"s_{i + 1}² = {S[:, i].mean():.3g}" for i in idx)
    + ".",
  ]
  return "\n".join(lines)


def draw_coupled(res, run_dir, traj=None) -> list[Path]:
  """``coupled.png``: per ridge/wd arm (columns), top row the final responses of every seed
  against the feature index with the dual prediction z* beside them; bottom row (when the
  trajectories are given) ``z_j(t)`` of the five strongest features of the first seed with
  their ``z_j*`` as dashed lines."""
  arms = coupled_arms(res)
  runs_of = {a: [v for v in res["per_seed"].values() if v["arm"] == a] for a in arms}
  arms = [a for a in arms if runs_of[a]]
  if not arms:
    return []
  plt = results_lib.pyplot()
  k = res["config"]["k"]
  jj = np.arange(1, k + 1)
  rows = 2 if traj else 1
  fig, axes = plt.subplots(rows, len(arms), figsize=(3.0 * len(arms), 2.9 * rows), squeeze=False)
  for c, arm in enumerate(arms):
    ax = axes[0, c]
    for i, r in enumerate(runs_of[arm]):
      ax.plot(
        jj, r["z_final"], "o", ms=3, alpha=0.8, color=f"C{i}", label=f"trained, seed {r['seed']}"
      )
      ax.plot(
        jj,
        r["z_dual"],
        "_",
        ms=9,
        mew=1.3,
        color="k",
        label="dual.fixed_point z*" if i == 0 else None,
      )
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_yscale("symlog", linthresh=1e-2)
    ax.set(title=f"{arm} (λ = {runs_of[arm][0]['eq5_lambda']:g})", xlabel="feature j")
    if not traj:
      continue
    r0 = runs_of[arm][0]
    ax = axes[1, c]
    if (arm, r0["seed"]) in traj:
      steps, zs = traj[(arm, r0["seed"])]
      for j in range(min(5, k)):
        ax.plot(steps, zs[:, j], color=f"C{j}", lw=1.2, label=f"$z_{{{j + 1}}}(t)$")
        ax.axhline(r0["z_dual"][j], color=f"C{j}", ls="--", lw=0.9)
      ax.set_xscale("log")
    ax.set(xlabel="training step (batch 1)", title=f"seed {r0['seed']}; dashed: z*")
    ax.title.set_fontsize(8)
  axes[0, 0].set_ylabel("final response $z_j$")
  axes[0, 0].legend(fontsize=6)
  if traj:
    axes[1, 0].set_ylabel("$z_j(t)$")
    axes[1, 0].legend(fontsize=6)
  fig.tight_layout()
  paths = results_lib.save_figure(fig, Path(run_dir) / "coupled")
  plt.close(fig)
  return paths


def draw(data, run_dir) -> list[Path]:
  plt = results_lib.pyplot()
  run_dir = Path(run_dir)
  res, traj, feats = data["res"], data["traj"], data["features"]
  k = res["config"]["k"]
  paths = []

  fig, ax = plt.subplots(figsize=(4.2, 3.2))
  for name, v in res["spectra"].items():
    s = np.asarray(v["S"])
    ax.semilogy(np.arange(1, len(s) + 1), s, "o-", ms=2.5, lw=1, label=name.replace("s", "seed "))
  ax.axvline(k + 0.5, color="0.6", ls=":", lw=1)
  ax.set(
    xlabel="feature j",
    ylabel="strength $s_j$ (singular value of $Y\\Phi_0$)",
    title=f"Spectrum at init, n = {res['data']['n_train']}",
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths += results_lib.save_figure(fig, run_dir / "spectrum")
  plt.close(fig)

  f0 = feats.get(0)
  if f0 is not None and "input_grads" in f0:
    imgs, grads, S = f0["images"], f0["input_grads"], f0["S"]
    j = len(imgs)
    fig, axes = plt.subplots(2, j, figsize=(1.3 * j, 2.9), squeeze=False)
    for i in range(j):
      g = grads[i]
      axes[0, i].imshow(np.clip(imgs[i], 0, 1))
      axes[0, i].set_title(f"j={i + 1}\ns={S[i]:.3g}", fontsize=7)
      axes[1, i].imshow(np.clip(0.5 + g / (2 * np.abs(g).max() + 1e-30), 0, 1))
    for a in axes.ravel():
      a.set(xticks=[], yticks=[])
    axes[0, 0].set_ylabel("image", fontsize=7)
    axes[1, 0].set_ylabel("input grad.", fontsize=7)
    fig.tight_layout()
    paths += results_lib.save_figure(fig, run_dir / "features")
    plt.close(fig)

  # Trajectories of one seed (features are that seed's own: the j-th feature of another
  # initialisation is a different vector), strongest five on top, the rest below.
  seed = min(key[1] for key in traj) if traj else 0
  # Log-spaced early probes (response_early) are only visible on a log axis.
  log_x = bool(res.get("config", {}).get("response_early", 0))
  groups = [range(0, min(5, k)), range(5, k)] if k > 5 else [range(k)]
  fig, axes = plt.subplots(
    len(groups), 2, figsize=(9, 2.9 * len(groups)), squeeze=False, sharex=True
  )
  cmap = plt.get_cmap("viridis")
  for c, arm in enumerate(ARMS):
    if (arm, seed) not in traj:
      continue
    steps, zs = traj[(arm, seed)]
    for r, group in enumerate(groups):
      ax = axes[r, c]
      for j in group:
        ax.plot(
          steps,
          zs[:, j],
          color=cmap(j / max(k - 1, 1)),
          lw=1.2,
          label=f"$z_{{{j + 1}}}$" if r == 0 or j in (group[0], group[-1]) else None,
        )
      ax.axhline(0, color="0.5", lw=0.5)
      ax.set_title(
        f"{LABELS[arm]}, seed {seed}: features {group[0] + 1}–{group[-1] + 1} (own y scale)",
        fontsize=9,
      )
      if c == 0:
        ax.set_ylabel("$z_j(t)=u_j^T Y(\\hat y_t-\\hat y_0)$")
    axes[-1, c].set_xlabel("training step (batch 1)" + (", log scale" if log_x else ""))
    if log_x:
      axes[-1, c].set_xscale("log")
  # Each panel keeps its own y scale: ERM's responses grow far beyond SD's, and on a shared
  # axis SD's rise would be a flat line (the titles say so).
  for r in range(len(groups)):
    axes[r, 1].legend(fontsize=6, loc="upper left", ncol=2)
  fig.tight_layout()
  paths += results_lib.save_figure(fig, run_dir / "responses")
  plt.close(fig)

  # Final responses of every seed against the feature index, and SD against its eq-18
  # prediction (one point per feature and seed; the diagonal is agreement).
  fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
  ax = axes[0]
  jj = np.arange(1, k + 1)
  for arm, marker, dx, color in (("erm", "o", -0.15, "tab:blue"), ("sd", "s", 0.15, "tab:orange")):
    z, runs = _final(res, arm)
    for i, zz in enumerate(z):
      ax.plot(
        jj + dx,
        zz,
        marker,
        ms=3.5,
        color=color,
        alpha=0.8,
        label=f"{LABELS[arm]} (trained)" if i == 0 else None,
      )
    if arm == "sd":
      for i, r in enumerate(runs):
        ax.plot(
          jj,
          r["z_eq18"],
          "_",
          color="k",
          ms=8,
          mew=1.3,
          label=f"SD eq 18, λ={res['eq17_lambda']:g}" if i == 0 else None,
        )
  ax.axhline(0, color="0.5", lw=0.5)
  ax.set(
    xlabel="feature j (seed's own features)",
    ylabel="final response $z_j$",
    title=f"Final responses, {len(res['spectra'])} seed(s)",
  )
  ax.legend(fontsize=7)
  ax = axes[1]
  z, runs = _final(res, "sd")
  if len(z):
    pred = np.array([r["z_eq18"] for r in runs])
    for i in range(len(z)):
      ax.plot(
        pred[i, 1:],
        z[i, 1:],
        "s",
        ms=3.5,
        color="tab:orange",
        alpha=0.8,
        label="j ≥ 2" if i == 0 else None,
      )
      ax.plot(pred[i, :1], z[i, :1], "x", ms=6, color="tab:red", label="j = 1" if i == 0 else None)
    lim = [min(z.min(), pred.min(), 0), max(z.max(), pred.max())]
    ax.plot(lim, lim, "k:", lw=1)
    ax.set(xlabel="eq-18 prediction $z_j^*$", ylabel="SD trained $z_j$", title="SD vs eq 18")
    ax.legend(fontsize=7)
  fig.tight_layout()
  paths += results_lib.save_figure(fig, run_dir / "final")
  plt.close(fig)
  return paths


def report(run_dir, parts=(), features_from=None) -> str:
  """Writes table.md and the figures of ``run_dir`` (of the runs ``parts`` merged into it
  when given, :func:`merge`); returns the table. ``features_from``: a run folder of the same
  settings and seeds whose cached θ0 features stand in when the runs hold none
  (:func:`load_merged`)."""
  data = load_merged(parts or [run_dir], features_from)
  # the ERM/SD table only when the run has those arms (coupled runs have ridge/wd arms only)
  has_erm_sd = any(a in ARMS for a in data["res"]["config"].get("arms", ARMS))
  tables = [table(data) if has_erm_sd else "", coupled_table(data["res"], data["features"])]
  text = "\n\n".join(t for t in tables if t)
  Path(run_dir).mkdir(parents=True, exist_ok=True)
  (Path(run_dir) / "table.md").write_text(text + "\n")
  print(text)
  paths = draw(data, run_dir) + draw_coupled(data["res"], run_dir, data["traj"])
  print("wrote", *[p for p in paths if p.suffix == ".png"])
  return text


def main(argv=None):
  p = argparse.ArgumentParser(
    prog="python -m analysis.cifar_features_figures",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("run_dir", help="output folder of experiments.cifar_features")
  p.add_argument(
    "--merge",
    nargs="+",
    default=(),
    metavar="DIR",
    help="output folders of one preset whose arms ran as separate processes (--arms): their "
    "table and figures together, written into run_dir",
  )
  p.add_argument(
    "--features_from",
    default="",
    metavar="DIR",
    help="a run folder of the same settings and seeds whose cached features at θ0 "
    "(features/s<seed>.npz) stand in when the runs hold none",
  )
  provenance.add_flag(p)
  args = p.parse_args(argv)
  provenance.gate_files(list(args.merge) or [args.run_dir], args.allow_dirty, "NTK-feature table")
  report(args.run_dir, args.merge, args.features_from or None)


if __name__ == "__main__":
  main()

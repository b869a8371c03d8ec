# Every target builds .venv (the newest stack, constraints/newest.txt) first, when missing or
# older than pyproject.toml or its constraint file; test-oldest builds .venv-oldest (the oldest
# stack with neural-tangents, constraints/oldest.txt) the same way.
# Pass flags with ARGS="...", e.g. make two_moons ARGS="--seeds=3".
# Offline data: GS_DATA_DIR names a folder with mnist/, cifar10/, celeba/ (docs/protocols.md §5);
# it defaults to ../shared/data when that folder exists, else loaders use tfds.load (downloads).
PY := .venv/bin/python
ARGS ?=
GS_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data))
export GS_DATA_DIR
CMNIST_METHODS ?= erm sd sd_clean irm rex oracle
# Batch-1 runs (released CIFAR protocol) run side by side, one per core, each pinned to its
# lane's core (--cpu_cores); LANES=1 runs them one after another.
LANES ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: venv venv-oldest lint test test-unit test-oldest test-all two_moons two_moons_grid two_moons_dynamics theorem2 primal_dual \
        cmnist cifar cifar2_cpu cifar2_released cifar2_released_extra celeba celeba_cpu bench-two-moons bench-dual \
        bench-cmnist bench-cifar bench-distributed bench-stacks bench-eval-rules clean-venv

.venv/.installed: pyproject.toml constraints/newest.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/newest.txt -e '.[dev]'
	touch $@

.venv-oldest/.installed: pyproject.toml constraints/oldest.txt
	python3 -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install -q --upgrade pip
	.venv-oldest/bin/python -m pip install -q -c constraints/oldest.txt -e '.[dev,nt]'
	touch $@

venv: .venv/.installed

venv-oldest: .venv-oldest/.installed

# Lint: ruff's linter (rules in pyproject.toml, [tool.ruff.lint]) and formatter (--check: run
# `.venv/bin/ruff format .` to apply it), the import rule (tests/test_layers.py: every module
# imports downward only, configs import ml_collections only) and mypy on the typed core (grows
# module by module). ruff and mypy come with the dev extra at the versions of
# constraints/newest.txt, installed here too when .venv predates them.
TYPED := gs_jax/theory/dual.py gs_jax/nn/losses.py gs_jax/theory/ntk.py gs_jax/base/_compat.py \
         gs_jax/base/types.py gs_jax/base/errors.py gs_jax/base/stats.py gs_jax/base/jsonio.py \
         gs_jax/base/batching.py gs_jax/experiment/run.py gs_jax/experiment/results.py \
         gs_jax/experiment/cli.py gs_jax/experiment/checkpoint.py
lint: .venv/.installed
	@$(PY) -m pip install -q -c constraints/newest.txt ruff mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layers.py
	$(PY) -m mypy $(TYPED)

test: .venv/.installed
	@echo "GS_DATA_DIR=$(GS_DATA_DIR) (real-data tests are skipped when it is empty)"
	$(PY) -m pytest -q -m "not slow" -n 2 -rs

# The fast unit tier (under two minutes on 2 cores): no reproduction runs, no end-to-end
# experiment runs (integration), no multi-process jobs, no notebook, no `heavy` unit tests (over
# 10 s alone: a memory-measuring subprocess, a TensorFlow import); it lists its slowest tests
# (the candidates for a smaller size). Tests mirror the package: tests/<layer>/test_<module>.py,
# end-to-end runs in tests/experiments/ (markers: pyproject.toml, [tool.pytest.ini_options]).
# The tier is bound by XLA compilation: it keeps JAX's persistent compilation cache in .cache/jax
# (untracked; subprocesses inherit it), so a second run reuses the first one's executables.
test-unit: .venv/.installed
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/jax JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	  $(PY) -m pytest -q -m "not slow and not multiprocess and not notebook and not integration and not heavy" -n 2 -rs --durations=25

# The same suite on the oldest supported stack, with neural-tangents as the NTK reference.
test-oldest: .venv-oldest/.installed
	.venv-oldest/bin/python -m pytest -q -m "not slow" -n 2 -rs -p no:cacheprovider

test-all: .venv/.installed
	$(PY) -m pytest -q -n 2

# --- experiments -------------------------------------------------------------------------
two_moons: .venv/.installed
	$(PY) -m experiments.two_moons $(ARGS)

two_moons_grid: .venv/.installed
	$(PY) -m experiments.two_moons --preset=released $(ARGS)

two_moons_dynamics: .venv/.installed
	$(PY) -m experiments.two_moons_dynamics $(ARGS)

theorem2: .venv/.installed
	$(PY) -m experiments.theorem2 $(ARGS)

primal_dual: .venv/.installed
	$(PY) -m experiments.primal_dual $(ARGS)

cmnist: .venv/.installed
	for m in $(CMNIST_METHODS); do \
	  $(PY) -m experiments.colored_mnist --preset=$$m $(ARGS) || exit 1; \
	done
	$(PY) -m analysis.cmnist_table --runs_dir=runs/colored_mnist

cifar: .venv/.installed
	$(PY) -m experiments.cifar $(ARGS)

# Table 1 on this machine: CIFAR-2, cpu preset, ERM and SD, 3 seeds each, then the table and
# Figure 2. Started again, it continues unfinished runs and only re-evaluates finished ones.
cifar2_cpu: .venv/.installed
	for s in 0 1 2; do for l in 0 0.01; do \
	  $(PY) -m experiments.cifar --preset=cpu --dataset=cifar2 --sd_lambda=$$l --seed=$$s \
	    --out_dir=runs/cifar/cifar2_l$${l}_s$$s --no_progress $(ARGS) || exit 1; done; done
	$(PY) -m analysis.cifar_table --runs='runs/cifar/cifar2_*' --out_dir=runs/cifar_table

# Figure 2 / Table 1 with the authors' released protocol (airplane vs horse, NarLeNet, batch 1,
# 40 epochs): ERM, SD sd_coef 0.1 and 0.01 × seeds 0,1,2, then the table and Figure 2
# (measured: 55 min wall on 2 cores, two lanes).
cifar2_released: .venv/.installed
	for s in 0 1 2; do for c in 0 0.1 0.01; do echo $$c $$s; done; done | \
	  xargs -L 1 -P $(LANES) --process-slot-var=LANE sh -c '$(PY) -m experiments.cifar \
	    --preset=released --sd_coef=$$0 --seed=$$1 --cpu_cores=$$LANE \
	    --out_dir=runs/cifar_released/sdc$${0}_s$$1 --no_progress $(ARGS)'
	$(PY) -m analysis.cifar_table --runs='runs/cifar_released/*' --out_dir=runs/cifar_released_table

# The rest of issue 10 on CPU, seed 0: the SD-strength sweep's extra points (sd_coef 0.03, 0.3;
# 0, 0.01, 0.1 come from cifar2_released), cats vs dogs × 3 methods (margins on fewer test
# images), and CIFAR-10 (10 classes) ERM vs SD 0.1 at 40 epochs (ERM diverges at epoch 38 and
# is recorded as such) and ERM at 20 epochs; one run per lane as above.
cifar2_released_extra: .venv/.installed
	( echo --dataset=cifar10 --sd_coef=0 --out_dir=runs/cifar10_released/sdc0_s0; \
	  echo --dataset=cifar10 --sd_coef=0 --epochs=20 --out_dir=runs/cifar10_released/sdc0_s0_e20; \
	  echo --dataset=cifar10 --sd_coef=0.1 --out_dir=runs/cifar10_released/sdc0.1_s0; \
	  for c in 0.03 0.3; do echo --sd_coef=$$c --margin_n=500 --strong_n=0 \
	    --out_dir=runs/cifar_released/sdc$${c}_s0; done; \
	  for c in 0 0.1 0.01; do echo --classes=cat,dog --sd_coef=$$c --margin_n=500 --strong_n=50 \
	    --out_dir=runs/cifar_released_catdog/sdc$${c}_s0; done ) | \
	  xargs -L 1 -P $(LANES) --process-slot-var=LANE sh -c '$(PY) -m experiments.cifar \
	    --preset=released --seed=0 --cpu_cores=$$LANE --no_progress "$$@" $(ARGS)' sh
	$(PY) -m analysis.cifar_table --runs='runs/cifar_released/*' \
	  --runs='runs/cifar_released_catdog/*' --out_dir=runs/cifar_released_table
	$(PY) -m analysis.cifar_table --runs='runs/cifar10_released/*' \
	  --out_dir=runs/cifar10_released_table

celeba: .venv/.installed
	$(PY) -m experiments.celeba $(ARGS)

# Table 3 on this machine: the offline copy, cpu preset, 4 methods × 3 seeds, then the table.
# Started again, it continues unfinished runs.
celeba_cpu: .venv/.installed
	for s in 0 1 2; do for m in erm sd group_dro lff; do \
	  $(PY) -m experiments.celeba --preset=cpu --method=$$m --seed=$$s \
	    --out_dir=runs/celeba/cpu_$${m}_s$$s --no_progress $(ARGS) || exit 1; done; done
	$(PY) -m analysis.celeba_table --runs_dir=runs/celeba

# NTK features of the released CIFAR-2 CNN and their responses under ERM and SD (issue 12).
.PHONY: cifar_features_cpu cifar_features bench-ntk-features
cifar_features_cpu: .venv/.installed
	$(PY) -m experiments.cifar_features --out_dir=runs/cifar_features/cpu --no_progress $(ARGS)

cifar_features: .venv/.installed
	$(PY) -m experiments.cifar_features --preset=full --out_dir=runs/cifar_features/full $(ARGS)

# Theorem 2 on the CIFAR-2 CNN in eq 5's coupled regime: ridge ‖θ−θ0‖² at λ = 10…10000,
# 3 seeds, beside dual.fixed_point (issue 21; docs/protocols.md §3.7). Two processes, one core
# each (weak and strong λ; each computes the same features at θ0), then their table and
# figures together in runs/cifar_features/coupled/ridge. cifar_features_coupled_wd: the weight-decay
# arms the same way.
COUPLED := runs/cifar_features/coupled
.PHONY: cifar_features_coupled cifar_features_coupled_wd cifar_features_coupled_cpu dominoes_cpu dominoes_quick
cifar_features_coupled: .venv/.installed
	$(PY) -m experiments.cifar_features --preset=coupled --arms=ridge10,ridge100 \
	  --out_dir=$(COUPLED)/ridge_weak --cpu_cores=0 --no_progress $(ARGS) & \
	$(PY) -m experiments.cifar_features --preset=coupled --arms=ridge1000,ridge10000 \
	  --out_dir=$(COUPLED)/ridge_strong --cpu_cores=1 --no_progress $(ARGS); wait
	$(PY) -m analysis.cifar_features_figures $(COUPLED)/ridge --merge $(COUPLED)/ridge_weak $(COUPLED)/ridge_strong

cifar_features_coupled_wd: .venv/.installed
	$(PY) -m experiments.cifar_features --preset=coupled --arms=wd10,wd100 \
	  --out_dir=$(COUPLED)/wd_weak --cpu_cores=0 --no_progress $(ARGS) & \
	$(PY) -m experiments.cifar_features --preset=coupled --arms=wd1000,wd10000 \
	  --out_dir=$(COUPLED)/wd_strong --cpu_cores=1 --no_progress $(ARGS); wait
	$(PY) -m analysis.cifar_features_figures $(COUPLED)/wd --merge $(COUPLED)/wd_weak $(COUPLED)/wd_strong \
	  --features_from=$(COUPLED)/ridge_weak

# The same on 1,000 images at λ = 1…1000 (preset coupled_cpu): ridge and wd arms, one core each.
cifar_features_coupled_cpu: .venv/.installed
	$(PY) -m experiments.cifar_features --preset=coupled_cpu --arms=ridge1,ridge10,ridge100,ridge1000 \
	  --out_dir=runs/cifar_features/coupled_cpu_ridge --cpu_cores=0 --no_progress $(ARGS) & \
	$(PY) -m experiments.cifar_features --preset=coupled_cpu --arms=wd1,wd10,wd100,wd1000 \
	  --out_dir=runs/cifar_features/coupled_cpu_wd --cpu_cores=1 --no_progress $(ARGS); wait

# MNIST-CIFAR dominoes (issue 21; docs/protocols.md §3.8): the sd_lambda sweep, then
# a ∈ {0, 0.03, 0.1, 0.25, 0.5, 1} × ERM/L2/SD × 3 seeds (one run per a, one per lane), then the figure.
DOMINO_AS ?= 1 0.5 0.25 0.1 0.03 0
dominoes_cpu: .venv/.installed
	$(PY) -m experiments.dominoes --preset=sd_sweep --cpu_cores=0 --no_progress $(ARGS)
	SD=$$($(PY) -c "import json; print(json.load(open('runs/dominoes/sd_sweep/a1/results.json'))['metrics']['sd_choice']['sd_lambda'])"); \
	for a in $(DOMINO_AS); do echo $$a; done | \
	  xargs -L 1 -P $(LANES) --process-slot-var=LANE sh -c '$(PY) -m experiments.dominoes \
	    --a=$$0 --sd_lambda='"$$SD"' --cpu_cores=$$LANE --no_progress $(ARGS)'
	$(PY) -m analysis.dominoes_figures 'runs/dominoes/cpu/a*' --out_dir=runs/dominoes/cpu

dominoes_quick: .venv/.installed
	$(PY) -m experiments.dominoes --preset=quick $(ARGS)

# --- benchmarks (PyTorch baselines come with the dev extra) ------------------------------
bench-two-moons: .venv/.installed
	$(PY) -m benchmarks.two_moons_speed $(ARGS)

bench-dual: .venv/.installed
	$(PY) -m benchmarks.dual_speed $(ARGS)

bench-cmnist: .venv/.installed
	$(PY) -m benchmarks.cmnist_speed $(ARGS)

bench-cifar: .venv/.installed
	$(PY) -m benchmarks.cifar_speed $(ARGS)

bench-distributed: .venv/.installed
	$(PY) -m benchmarks.distributed_step $(ARGS)

# Issue 18: the speed benchmarks on both stacks, one after the other (a quiet machine), then
# the side-by-side table. They write under runs/ (outside the tracked tree, so one benchmark's
# file never makes the next one's tree dirty) and the set is copied to BENCH_OUT when all ran.
BENCH_OUT ?= docs/results/speed_stacks
BENCH_TMP := runs/speed_stacks
bench-stacks: .venv/.installed .venv-oldest/.installed
	rm -rf $(BENCH_TMP) && mkdir -p $(BENCH_TMP) $(BENCH_OUT)
	for v in .venv-oldest .venv; do s=$$( [ $$v = .venv ] && echo newest || echo oldest ); \
	  $$v/bin/python -m benchmarks.cifar_speed --protocol=released \
	    --json=$(BENCH_TMP)/cifar_released_$$s.json || exit 1; \
	  $$v/bin/python -m benchmarks.cmnist_speed --methods=sd \
	    --json=$(BENCH_TMP)/cmnist_$$s.json || exit 1; done
	cp $(BENCH_TMP)/*.json $(BENCH_OUT)/
	$(PY) -m analysis.speed_table $(BENCH_OUT)

# Released CIFAR-2, ERM and SD 0.1 side by side: evaluation time against training, and the
# first- against the last-iterate attack rule on the same checkpoints (~15 min on 2 cores).
bench-eval-rules: .venv/.installed
	for c in 0 0.1; do echo $$c; done | \
	  xargs -L 1 -P $(LANES) --process-slot-var=LANE sh -c '$(PY) -m benchmarks.cifar_eval_rules \
	    --sd_coef=$$0 --cpu_cores=$$LANE --json=runs/eval_rules/sdc$${0}_s0.json $(ARGS)'

bench-ntk-features: .venv/.installed
	$(PY) -m benchmarks.ntk_features $(ARGS)

# Every paper preset's training step for a bounded number of steps on synthetic data: steps/s,
# images/s, peak device memory, extrapolated full-run time (docs/experiments/paper_scale.md).
# On a GPU machine run it with the Python that has that machine's CUDA JAX:
#   make gpu-check GPU_PY=python3      (ARGS="--tiny" runs small shapes on CPU in CI)
.PHONY: gpu-check
GPU_PY ?= $(PY)
gpu-check: $(if $(filter $(PY),$(GPU_PY)),.venv/.installed)
	$(GPU_PY) -m benchmarks.gpu_check $(ARGS)

# README.md and docs/**/*.md: rewrite every generated block from docs/results (analysis/docs.py);
# tests/analysis/test_docs.py fails when a committed block differs from what this writes.
.PHONY: docs
docs: .venv/.installed
	$(PY) -m analysis.docs

clean-venv:
	rm -rf .venv .venv-oldest

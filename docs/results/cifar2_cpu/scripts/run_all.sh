#!/bin/bash
# The 6 CIFAR-2 --config=cpu runs (ERM and SD, seeds 0-2), one after another.
cd /work/wt/issue4-cifar
export PYTHONPATH=$PWD XLA_FLAGS=--xla_cpu_multi_thread_eigen=true
for seed in 0 1 2; do
  for lam in 0 0.01; do
    name=$([ "$lam" = 0 ] && echo erm || echo sd)
    out=runs/cifar_cpu/cifar2_${name}_s${seed}
    [ -f $out/results.json ] && continue
    nice -n 10 /work/main/.venv/bin/python -m experiments.cifar --dataset=cifar2 --config=cpu \
      --sd_lambda=$lam --seed=$seed --data_dir=/work/shared/data/cifar10/cifar10.npz \
      --out_dir=$out --resume --no_progress > $out.log 2>&1
    echo "$(date -u +%T) done $out rc=$?"
  done
done

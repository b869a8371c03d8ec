#!/bin/bash
# (1) attack-strength check on the finished seed-0 runs (re-evaluation only; training is skipped);
# (2) investigation: the same ERM/SD pair trained 4x longer (24 epochs).
cd /work/wt/issue4-cifar
export PYTHONPATH=$PWD XLA_FLAGS=--xla_cpu_multi_thread_eigen=true
D=/work/shared/data/cifar10/cifar10.npz
for spec in erm:0:500 sd:0.01:200; do
  IFS=: read name lam mn <<< "$spec"
  nice -n 10 /work/main/.venv/bin/python -m experiments.cifar --dataset=cifar2 --config=cpu --sd_lambda=$lam --seed=0 \
    --data_dir=$D --out_dir=runs/cifar_cpu/cifar2_${name}_s0 --resume --no_progress --margin_n=$mn --strong_n=300 \
    > runs/cifar_cpu/cifar2_${name}_s0.strong.log 2>&1
  echo "$(date -u +%T) strong check $name rc=$?"
done
for spec in erm:0 sd:0.01; do
  IFS=: read name lam <<< "$spec"
  out=runs/cifar_long/cifar2_${name}_s0
  mkdir -p runs/cifar_long
  nice -n 10 /work/main/.venv/bin/python -m experiments.cifar --dataset=cifar2 --config=cpu --sd_lambda=$lam --seed=0 \
    --epochs=24 --data_dir=$D --out_dir=$out --resume --no_progress --margin_n=200 > $out.log 2>&1
  echo "$(date -u +%T) long $name rc=$?"
done

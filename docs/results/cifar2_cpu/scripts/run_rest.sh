#!/bin/bash
# Remaining CIFAR-2 --config=cpu runs, one after another (margins on 200 test images to fit the time).
cd /work/wt/issue4-cifar
export PYTHONPATH=$PWD XLA_FLAGS=--xla_cpu_multi_thread_eigen=true
while kill -0 16963 2>/dev/null; do sleep 5; done
echo "$(date -u +%T) erm_s0 finished"
for spec in sd:0.01:0 erm:0:1 sd:0.01:1 erm:0:2 sd:0.01:2; do
  IFS=: read name lam seed <<< "$spec"
  out=runs/cifar_cpu/cifar2_${name}_s${seed}
  [ -f $out/results.json ] && continue
  nice -n 10 /work/main/.venv/bin/python -m experiments.cifar --dataset=cifar2 --config=cpu \
    --sd_lambda=$lam --seed=$seed --data_dir=/work/shared/data/cifar10/cifar10.npz \
    --out_dir=$out --resume --no_progress --margin_n=200 > $out.log 2>&1
  echo "$(date -u +%T) done $out rc=$?"
done

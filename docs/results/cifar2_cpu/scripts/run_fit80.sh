#!/bin/bash
# Investigation: ERM vs SD in the regime where the small CNN fits its training set
# (2,000 training images, no augmentation, 80 epochs), seed 0.
cd /work/wt/issue4-cifar
export PYTHONPATH=$PWD XLA_FLAGS=--xla_cpu_multi_thread_eigen=true
for spec in erm:0 sd:0.01; do
  IFS=: read name lam <<< "$spec"
  out=runs/cifar_fit80/cifar2_${name}_s0; mkdir -p runs/cifar_fit80
  nice -n 10 /work/main/.venv/bin/python -m experiments.cifar --dataset=cifar2 --config=cpu --sd_lambda=$lam --seed=0 \
    --epochs=80 --train_limit=2000 --no_augment --data_dir=/work/shared/data/cifar10/cifar10.npz \
    --out_dir=$out --resume --no_progress --margin_n=200 > $out.log 2>&1
  echo "$(date -u +%T) fit80 $name rc=$?"
done

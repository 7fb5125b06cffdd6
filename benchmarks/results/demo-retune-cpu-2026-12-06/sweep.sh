#!/usr/bin/env bash
# The demo's sampling settings swept again on its Min-SNR weights: 256 videos from SEED (default 1),
# fp32, one thread per run, JOBS runs side by side (default 1). Each argument is NAME=OPTIONS, where
# OPTIONS are the vdm-eval options that set the guide, its weight and the restart (and any other)
# (run from the repository root, venv active):
#   [SEED=1] [JOBS=1] [CKPT=vdm/demo/demo.safetensors] bash benchmarks/results/demo-retune-cpu-2026-12-06/sweep.sh \
#       'w1.75=--autoguide vdm/demo/guide.safetensors --autoguide-weight 1.75 --restart 0.01:6' ...
set -euo pipefail
out=benchmarks/results/demo-retune-cpu-2026-12-06
seed=${SEED:-1}; jobs=${JOBS:-1}; ckpt=${CKPT:-vdm/demo/demo.safetensors}
pids=()
for arg in "$@"; do
  name=${arg%%=*}; read -r -a options <<< "${arg#*=}"
  OMP_NUM_THREADS=1 vdm-eval "$ckpt" --device cpu --precision fp32 -n 256 --seed "$seed" --loss-batches 0 \
      "${options[@]}" > "$out/vdm-eval-$name-seed$seed.txt" 2>&1 & pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait

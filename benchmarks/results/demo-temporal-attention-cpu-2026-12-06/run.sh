#!/usr/bin/env bash
# Score a checkpoint as the demo samples by default (guided by vdm/demo/guide.safetensors at 1.5,
# UniPC 6, restarted once from SNR 0.01 in 6 steps): 256 videos from each SEED, fp32, one thread a
# run, two runs side by side, logs into OUT (default: this folder) (run from the repository root, venv active):
#   [OUT=folder] bash benchmarks/results/demo-temporal-attention-cpu-2026-12-06/run.sh NAME CHECKPOINT [SEED...]
set -euo pipefail
out=${OUT:-benchmarks/results/demo-temporal-attention-cpu-2026-12-06}
name=$1; ckpt=$2; shift 2
seeds=(1 2 3); [ $# -gt 0 ] && seeds=("$@")
pids=()
for seed in "${seeds[@]}"; do
  OMP_NUM_THREADS=1 vdm-eval "$ckpt" --device cpu --precision fp32 -n 256 --seed "$seed" --loss-batches 0 \
      --autoguide vdm/demo/guide.safetensors --autoguide-weight 1.5 --restart 0.01:6 \
      > "$out/vdm-eval-$name-seed$seed.txt" 2>&1 & pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait

#!/usr/bin/env bash
# Score fine-tunes of the demo as the demo is sampled by default (guided by its guide at 1.5, UniPC 6,
# restarted once from SNR 0.01 in 6 steps), beside the demo itself, one thread each, two at a time
# (run from the repository root, venv active):
#   bash benchmarks/results/demo-finetune-cpu-2026-12-06/run.sh NAME=CHECKPOINT...
# A checkpoint named "demo" is vdm/demo/demo.safetensors.
set -euo pipefail
out=benchmarks/results/demo-finetune-cpu-2026-12-06
score() {
  local name=$1 ckpt=$2
  OMP_NUM_THREADS=1 vdm-eval "$ckpt" --device cpu --precision fp32 -n 256 --seed 1 --loss-batches 8 \
      --autoguide vdm/demo/guide.safetensors --autoguide-weight 1.5 --restart 0.01:6 \
      --from-snr 0.01,0.1,1,3 --json $out/reports/$name.json > $out/vdm-eval-$name.txt 2>&1
  gzip -f $out/reports/$name.json
}
pids=()
for arg in "$@"; do
  name=${arg%%=*}; ckpt=${arg#*=}
  [ "$ckpt" = demo ] && ckpt=vdm/demo/demo.safetensors
  score "$name" "$ckpt" & pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait

#!/usr/bin/env bash
# A second set of 256 videos (seed 2), sampled as the demo is by default, one thread each, side by side
# (run from the repository root, venv active):
#   bash benchmarks/results/demo-finetune-cpu-2026-12-06/fresh.sh [NAME=CHECKPOINT...]
# With no argument: the demo at step 13000 (then vdm/demo/demo.safetensors) and the Min-SNR fine-tune.
set -euo pipefail
out=benchmarks/results/demo-finetune-cpu-2026-12-06
[ $# -gt 0 ] || set -- demo=vdm/demo/demo.safetensors min-snr-2000=runs/FTMS/step2000.safetensors
for arg in "$@"; do
  name=${arg%%=*}; ckpt=${arg#*=}
  OMP_NUM_THREADS=1 vdm-eval "$ckpt" --device cpu --precision fp32 -n 256 --seed 2 --loss-batches 0 \
      --autoguide vdm/demo/guide.safetensors --autoguide-weight 1.5 --restart 0.01:6 \
      > $out/vdm-eval-$name-seed2.txt 2>&1 &
done
wait

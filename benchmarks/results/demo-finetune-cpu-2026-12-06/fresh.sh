#!/usr/bin/env bash
# 256 videos from SEED (default 2: a second set beside run.sh's seed 1), sampled as the demo is by
# default, without run.sh's held-out clips; one thread each, side by side
# (run from the repository root, venv active):
#   [SEED=1] bash benchmarks/results/demo-finetune-cpu-2026-12-06/fresh.sh [NAME=CHECKPOINT...]
# With no argument: the demo at step 13000 (then vdm/demo/demo.safetensors) and the Min-SNR fine-tune.
set -euo pipefail
out=benchmarks/results/demo-finetune-cpu-2026-12-06
seed=${SEED:-2}
[ $# -gt 0 ] || set -- demo=vdm/demo/demo.safetensors min-snr-2000=runs/FTMS/step2000.safetensors
for arg in "$@"; do
  name=${arg%%=*}; ckpt=${arg#*=}
  OMP_NUM_THREADS=1 vdm-eval "$ckpt" --device cpu --precision fp32 -n 256 --seed $seed --loss-batches 0 \
      --autoguide vdm/demo/guide.safetensors --autoguide-weight 1.5 --restart 0.01:6 \
      > $out/vdm-eval-$name-seed$seed.txt 2>&1 &
done
wait

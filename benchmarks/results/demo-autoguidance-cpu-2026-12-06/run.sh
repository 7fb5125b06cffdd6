#!/usr/bin/env bash
# The demo with and without its guide, through vdm-eval (run from the repository root, venv active):
#   bash benchmarks/results/demo-autoguidance-cpu-2026-12-06/run.sh
set -euo pipefail
out=benchmarks/results/demo-autoguidance-cpu-2026-12-06
export OMP_NUM_THREADS=2
for w in 1.5 1; do
  tag=$([ "$w" = 1 ] && echo alone || echo guided)
  # the issue's command (bf16 on this CPU)
  vdm-eval -n 32 --autoguide-weight $w --json $out/reports/issue-$tag.json > $out/vdm-eval-issue-$tag.txt 2>&1
  # fp32, 64 videos, and the from-SNR profile
  vdm-eval --device cpu --precision fp32 -n 64 --autoguide-weight $w --loss-batches 8 --from-snr 0.01,0.1,1,3 \
      --json $out/reports/fp32-64-$tag.json > $out/vdm-eval-fp32-64-$tag.txt 2>&1
  # 256 videos from noise, another seed
  vdm-eval --device cpu --precision fp32 -n 256 --seed 1 --autoguide-weight $w --loss-batches 0 \
      --json $out/reports/fp32-256-seed1-$tag.json > $out/vdm-eval-fp32-256-seed1-$tag.txt 2>&1
done
gzip -f $out/reports/*.json
# the stochastic sampler, 20 steps, guided at weight 2 and alone (added after the sweep, sweep-sde.txt)
for w in 2 1; do
  tag=$([ "$w" = 1 ] && echo alone || echo guided-w2)
  vdm-eval --device cpu --precision fp32 -n 256 --seed 1 --sampler dpm++2m-sde --steps 20 --autoguide-weight $w \
      --loss-batches 0 --json $out/reports/sde20-256-seed1-$tag.json > $out/vdm-eval-sde20-256-seed1-$tag.txt 2>&1
done
gzip -f $out/reports/sde20-*.json

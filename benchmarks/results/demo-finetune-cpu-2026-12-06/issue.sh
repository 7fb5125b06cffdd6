#!/usr/bin/env bash
# The issue's command on the shipped demo (vdm/demo/demo.safetensors, its default guide and restart;
# bf16 on this CPU, 2 threads), seed 0 in full, then seeds 1-7, one summary line each
# (run from the repository root, venv active):
#   bash benchmarks/results/demo-finetune-cpu-2026-12-06/issue.sh
set -euo pipefail
out=benchmarks/results/demo-finetune-cpu-2026-12-06
OMP_NUM_THREADS=2 vdm-eval -n 32 --json $out/reports/issue.json > $out/vdm-eval-issue.txt 2>&1
gzip -f $out/reports/issue.json
for seed in 1 2 3 4 5 6 7; do
  printf 'seed %s ' $seed
  OMP_NUM_THREADS=2 vdm-eval -n 32 --seed $seed --loss-batches 0 | grep '^pass rate'
done > $out/vdm-eval-issue-seeds.txt 2>&1

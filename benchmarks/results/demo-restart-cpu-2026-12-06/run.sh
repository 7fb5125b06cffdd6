#!/usr/bin/env bash
# The demo restarted (the new default: --restart 0.01:6) and not (--restart none), through vdm-eval and
# vdm-run (run from the repository root, venv active):
#   bash benchmarks/results/demo-restart-cpu-2026-12-06/run.sh
set -euo pipefail
out=benchmarks/results/demo-restart-cpu-2026-12-06
for restart in 0.01:6 none; do
  tag=$([ "$restart" = none ] && echo no-restart || echo restarted)
  # the issue's command (bf16 on this CPU, 2 threads); autoguided by the demo's guide, as by default
  OMP_NUM_THREADS=2 vdm-eval -n 32 --restart $restart --json $out/reports/issue-$tag.json > $out/vdm-eval-issue-$tag.txt 2>&1
  # fp32, 64 videos, seed 0
  OMP_NUM_THREADS=2 vdm-eval --device cpu --precision fp32 -n 64 --restart $restart \
      --json $out/reports/fp32-64-$tag.json > $out/vdm-eval-fp32-64-$tag.txt 2>&1
done
# 256 videos from noise, seed 1 (one thread each, run side by side): guided and alone, both restarted. The
# same without restarts is in ../demo-autoguidance-cpu-2026-12-06 (17/256 guided, 12/256 alone).
for w in 1.5 1; do
  tag=$([ "$w" = 1 ] && echo alone || echo guided)
  OMP_NUM_THREADS=1 vdm-eval --device cpu --precision fp32 -n 256 --seed 1 --loss-batches 0 --autoguide-weight $w \
      --json $out/reports/fp32-256-seed1-restarted-$tag.json > $out/vdm-eval-fp32-256-seed1-restarted-$tag.txt 2>&1
done
gzip -f $out/reports/*.json
# the issue's command at seeds 1-7 ("any seed"), restarted and not: one summary line per run
for seed in 1 2 3 4 5 6 7; do
  for restart in 0.01:6 none; do
    printf 'seed %s, --restart %-6s ' $seed $restart
    OMP_NUM_THREADS=2 vdm-eval -n 32 --seed $seed --restart $restart --loss-batches 0 | grep '^pass rate'
  done
done > $out/vdm-eval-issue-seeds.txt 2>&1
# vdm-run out of the box (the demo, 4 videos, bf16, 2 threads), three times, then once without the restart
for i in 1 2 3; do OMP_NUM_THREADS=2 vdm-run --out /tmp/vdm-run-restart; done > $out/vdm-run.txt 2>&1
OMP_NUM_THREADS=2 vdm-run --restart none --out /tmp/vdm-run-restart >> $out/vdm-run.txt 2>&1

#!/usr/bin/env bash
# The shipped demo (guidance 5, its default) with other samplers and step counts: 128 videos from
# seed 100 in fp32, as the sweeps of ../demo-colors-finetune-cpu-2026-12-07 were scored.
#   bash benchmarks/results/demo-shapes-cpu-2026-12-07/sweep.sh "SAMPLER STEPS RESTART" ... >> LOG
set -euo pipefail
for plan in "$@"; do
    read -r sampler steps restart <<<"$plan"
    echo "== $sampler $steps steps, restart $restart"
    vdm-eval -n 128 --seed 100 --precision fp32 --loss-batches 0 --one-step-snr 0 \
        --sampler "$sampler" --steps "$steps" --restart "$restart" | grep -E '^(sampled|pass rate|  (count|size|shape|motion))'
done

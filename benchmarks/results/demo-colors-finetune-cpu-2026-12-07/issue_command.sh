#!/usr/bin/env bash
# The issue's command (vdm-eval -n 32, default sampler and steps, restarted once as the demo is) at
# seeds 0-7 for each MODEL[:GUIDANCE] given ("demo" = the bundled demo, its own defaults); one line
# per seed with the pass count and the property scores, then the total over the 256 videos.
#   bash benchmarks/results/demo-colors-finetune-cpu-2026-12-07/issue_command.sh PRECISION MODEL[:GUIDANCE]...
set -euo pipefail
precision=$1; shift
for spec in "$@"; do
    model=${spec%%:*}; guidance=1; [[ $spec == *:* ]] && guidance=${spec#*:}
    args=(-n 32 --precision "$precision" --loss-batches 0 --one-step-snr 0)
    [[ $model == demo ]] || args+=("$model" --restart 0.01:6 --guidance "$guidance")
    total=0
    for seed in 0 1 2 3 4 5 6 7; do
        out=$(vdm-eval "${args[@]}" --seed "$seed")
        passed=$(grep -o 'pass rate [0-9.]* ([0-9]*' <<<"$out" | grep -o '[0-9]*$')
        total=$((total + passed))
        echo "$spec $precision seed $seed: $passed/32; $(grep -E '^  (count|size|shape|motion)' <<<"$out" | tr -s ' ' | tr '\n' ';')"
    done
    echo "$spec $precision seeds 0-7: $total/256"
done

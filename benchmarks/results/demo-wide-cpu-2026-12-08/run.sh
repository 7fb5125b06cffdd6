#!/usr/bin/env bash
# The demo's first command (vdm/demo/TRAINING.md) with twice the channels at full resolution
# (wide.toml: channel_multiples = [2, 2, 4]), at the same compute as the demo's run: its steps run at
# 0.77 times the demo's rate (train_step.py, below), so 10000 steps instead of 13000, cosine to the end.
# Against the demo's own run to step 13000 (demo-shared-count-cpu-2026-12-07): same seed, clips, batch
# and precision. Run from the repository root, alone on the machine:
#   RUNS=/work/runs bash benchmarks/results/demo-wide-cpu-2026-12-08/run.sh speed    (~3 min)
#   RUNS=/work/runs bash benchmarks/results/demo-wide-cpu-2026-12-08/run.sh train    (~100 min)
#   RUNS=/work/runs bash benchmarks/results/demo-wide-cpu-2026-12-08/run.sh score    (~10 min)
set -euo pipefail
HERE=benchmarks/results/demo-wide-cpu-2026-12-08
S=benchmarks/results
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=2

case "${1:-}" in
speed)
    # Training steps per second, the demo's config against wide.toml (bf16, batch 16, 2 threads).
    for config in $S/demo-shared-count-cpu-2026-12-07/count.toml $HERE/wide.toml; do
        name=$(basename "$config" .toml)
        python benchmarks/train_step.py --config "$config" --batch-size 16 --world-sizes 1 --threads 2 \
            --precisions bf16 --steps 5 --repeats 3 --name "speed-$name" --out "$RUNS/wide-speed" > /dev/null
        cp "$RUNS/wide-speed/speed-$name/results.md" "$HERE/speed-$name.md"
    done
    ;;
train)
    RUN="$RUNS/wide"
    vdm-train --preset tiny --config $HERE/wide.toml --steps 10000 --batch-size 16 --lr 1e-3 \
        --ema-decay 0.999 --lr-schedule cosine --seed 0 --sample-every 0 --checkpoint-every 500 \
        --precision bf16 --out "$RUN"
    python -m vdm.demo "$RUN/checkpoints/latest.safetensors" "$RUNS/wide-10000.safetensors"
    cp "$RUN/metrics.jsonl" "$HERE/metrics.jsonl"
    ;;
score)
    # What the demo's run was scored by: the held-out loss, 64 one-shape and 256 videos from seed 100
    # (the data's labels, guidance 5, the default sampler, fp32), and the issue's command (bf16).
    echo "wide-10000: $(vdm-eval "$RUNS/wide-10000.safetensors" -n 8 --precision fp32 \
        --loss-batches 16 --one-step-snr 0 | grep held-out)" > "$HERE/held-out-loss.txt"
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/wide-10000.safetensors" \
        > "$HERE/extents-seed100-64.txt"
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/wide-10000.safetensors" \
        > "$HERE/by-count-seed100-256.txt"
    bash $S/demo-colors-finetune-cpu-2026-12-07/issue_command.sh bf16 "$RUNS/wide-10000.safetensors:5" \
        > "$HERE/issue-command-seeds0-7.txt"
    ;;
*)
    echo "usage: run.sh speed|train|score" >&2
    exit 2
    ;;
esac

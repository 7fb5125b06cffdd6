#!/usr/bin/env bash
# The demo's first command (vdm/demo/TRAINING.md) from scratch with a shared colour-and-shape label
# embedding plus a vector per number of shapes (count.toml: label_embedding = "shared_count"), in bf16
# on a CPU with AMX, against the same run without the count vector (demo-shared-labels-cpu-2026-12-07)
# and with the demo's own labels (demo-bf16-cpu-2026-12-07): same seed, steps, batch and precision.
# Run from the repository root, alone on the machine:
#   RUNS=/work/runs bash benchmarks/results/demo-shared-count-cpu-2026-12-07/run.sh train   (~100 min)
#   RUNS=/work/runs bash benchmarks/results/demo-shared-count-cpu-2026-12-07/run.sh score   (~12 min)
#   RUNS=/work/runs bash benchmarks/results/demo-shared-count-cpu-2026-12-07/run.sh issue   (~5 min)
#   RUNS=/work/runs bash benchmarks/results/demo-shared-count-cpu-2026-12-07/run.sh finetune (~22 min)
#   RUNS=/work/runs bash benchmarks/results/demo-shared-count-cpu-2026-12-07/run.sh timing   (~1 min)
set -euo pipefail
HERE=benchmarks/results/demo-shared-count-cpu-2026-12-07
S=benchmarks/results
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=2

case "${1:-}" in
train)
    RUN="$RUNS/shared-count"
    resume=()  # the first part starts the run, the second resumes it
    for stop in 8000 13000; do
        vdm-train --preset tiny --config $HERE/count.toml --steps 13000 --batch-size 16 --lr 1e-3 \
            --ema-decay 0.999 --lr-schedule cosine --seed 0 --sample-every 0 --checkpoint-every 500 \
            --precision bf16 "${resume[@]}" --stop-at $stop --out "$RUN"
        python -m vdm.demo "$RUN/checkpoints/latest.safetensors" "$RUNS/count-$stop.safetensors"
        resume=(--resume)
    done
    cp "$RUN/metrics.jsonl" "$HERE/metrics.jsonl"
    ;;
score)
    # Held-out loss of the EMA weights (fp32, the held-out clips of demo-bf16's score stage), then what
    # TRAINING.md's sections score: 64 one-shape videos and 256 videos from seed 100 (the data's labels,
    # guidance 5, the default sampler, fp32). The other runs' figures are in their folders, on this machine.
    for checkpoint in count-8000 count-13000; do
        echo "$checkpoint: $(vdm-eval "$RUNS/$checkpoint.safetensors" -n 8 --precision fp32 \
            --loss-batches 16 --one-step-snr 0 | grep held-out)"
    done > "$HERE/held-out-loss.txt"
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/count-8000.safetensors" \
        "$RUNS/count-13000.safetensors" > "$HERE/extents-seed100-64.txt"
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/count-13000.safetensors" \
        > "$HERE/by-count-seed100-256.txt"
    ;;
issue)
    # The issue's own command (vdm-eval -n 32 at seeds 0-7, bf16) for the shipped demo and this model.
    bash $S/demo-colors-finetune-cpu-2026-12-07/issue_command.sh bf16 demo "$RUNS/count-13000.safetensors:5" \
        > "$HERE/issue-command-seeds0-7.txt"
    ;;
finetune)
    # The demo's second command (2000 steps, Min-SNR-γ 5, lr 2e-4) in bf16, so the recipe is whole, then
    # the same two scores as `score` and the issue's command.
    vdm-train --preset tiny --config $HERE/count.toml --init-from "$RUNS/count-13000.safetensors" \
        --steps 2000 --batch-size 16 --lr 2e-4 --ema-decay 0.998 --lr-schedule cosine --min-snr-gamma 5 --seed 1 \
        --sample-every 0 --precision bf16 --out "$RUNS/count-minsnr"
    python -m vdm.demo "$RUNS/count-minsnr/checkpoints/latest.safetensors" "$RUNS/count-minsnr.safetensors"
    cp "$RUNS/count-minsnr/metrics.jsonl" "$HERE/finetune-metrics.jsonl"
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/count-minsnr.safetensors" \
        > "$HERE/extents-finetune-seed100-64.txt"
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/count-minsnr.safetensors" \
        > "$HERE/by-count-finetune-seed100-256.txt"
    bash $S/demo-colors-finetune-cpu-2026-12-07/issue_command.sh bf16 "$RUNS/count-minsnr.safetensors:5" \
        > "$HERE/issue-command-finetune-seeds0-7.txt"
    ;;
timing)
    # `vdm-run` out of the box after the fine-tuned model became the demo (commit 5b254b0 held the
    # colour-label demo before it): each one's sampling time for 4 videos, three alternating runs.
    git show 5b254b0:vdm/demo/demo.safetensors > "$RUNS/colour-demo.safetensors"
    for run in 1 2 3; do
        echo "shape-label demo (out of the box), run $run: $(vdm-run --out "$RUNS/timing" 2>&1 | grep 'videos (')"
        echo "colour-label demo (its defaults), run $run: $(vdm-run "$RUNS/colour-demo.safetensors" --guidance 5 \
            --restart 0.01:6 --out "$RUNS/timing" 2>&1 | grep 'videos (')"
    done > "$HERE/vdm-run-timing.txt"
    ;;
*)
    echo "usage: run.sh train|score|issue|finetune|timing" >&2
    exit 2
    ;;
esac

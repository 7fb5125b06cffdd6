#!/usr/bin/env bash
# The demo's whole recipe (vdm/demo/TRAINING.md) in bf16 on a CPU with AMX: the seed-0 bf16 run of
# train-precision-cpu-2026-12-07 (step 3000) resumed to step 13000, then the demo's Min-SNR fine-tune.
# Run from the repository root, alone on the machine (RUNS must hold that run's folder):
#   RUNS=/work/runs bash benchmarks/results/demo-bf16-cpu-2026-12-07/run.sh train      (~75 min)
#   RUNS=/work/runs bash benchmarks/results/demo-bf16-cpu-2026-12-07/run.sh finetune   (~15 min)
#   RUNS=/work/runs bash benchmarks/results/demo-bf16-cpu-2026-12-07/run.sh score      (~12 min)
#   RUNS=/work/runs bash benchmarks/results/demo-bf16-cpu-2026-12-07/run.sh confirm    (~5 min)
#   RUNS=/work/runs bash benchmarks/results/demo-bf16-cpu-2026-12-07/run.sh issue      (~10 min)
set -euo pipefail
HERE=benchmarks/results/demo-bf16-cpu-2026-12-07
S=benchmarks/results
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=2

# The demo's first command, seed 0, in bf16 (what `--precision auto` picks on a CPU with AMX).
demo_first_stage() {
    vdm-train --preset tiny --config vdm/demo/demo.toml --steps 13000 --batch-size 16 --lr 1e-3 --ema-decay 0.999 \
        --lr-schedule cosine --seed 0 --sample-every 0 --checkpoint-every 500 --precision bf16 "$@"
}

case "${1:-}" in
train)
    RUN="$RUNS/precision-bf16"
    for stop in 8000 13000; do
        demo_first_stage --resume --stop-at $stop --out "$RUN"
        python -m vdm.demo "$RUN/checkpoints/latest.safetensors" "$RUNS/bf16-$stop.safetensors"
    done
    cp "$RUN/metrics.jsonl" "$HERE/first-stage-metrics.jsonl"
    ;;
finetune)
    # The demo's second command, in bf16.
    vdm-train --preset tiny --config vdm/demo/demo.toml --init-from "$RUNS/bf16-13000.safetensors" \
        --steps 2000 --batch-size 16 --lr 2e-4 --ema-decay 0.998 --lr-schedule cosine --min-snr-gamma 5 --seed 1 \
        --sample-every 0 --precision bf16 --out "$RUNS/bf16-minsnr"
    python -m vdm.demo "$RUNS/bf16-minsnr/checkpoints/latest.safetensors" "$RUNS/bf16-minsnr.safetensors"
    cp "$RUNS/bf16-minsnr/metrics.jsonl" "$HERE/finetune-metrics.jsonl"
    ;;
score)
    # Held-out loss of the EMA weights (fp32, the same held-out clips for every checkpoint).
    for checkpoint in bf16-8000 bf16-13000 bf16-minsnr; do
        echo "$checkpoint: $(vdm-eval "$RUNS/$checkpoint.safetensors" -n 8 --precision fp32 \
            --loss-batches 16 --one-step-snr 0 | grep held-out)"
    done > "$HERE/held-out-loss.txt"
    echo "demo: $(vdm-eval vdm/demo/demo.safetensors -n 8 --precision fp32 --loss-batches 16 --one-step-snr 0 \
        | grep held-out)" >> "$HERE/held-out-loss.txt"
    # What TRAINING.md's sections score: 64 one-shape videos with their boxes, and 256 videos from seed
    # 100 with the data's labels (guidance 5, the default sampler, fp32), the shipped demo beside them.
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/bf16-8000.safetensors" \
        "$RUNS/bf16-13000.safetensors" "$RUNS/bf16-minsnr.safetensors" > "$HERE/extents-seed100-64.txt"
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/bf16-minsnr.safetensors" \
        "$RUNS/bf16-13000.safetensors" vdm/demo/demo.safetensors > "$HERE/by-count-seed100-256.txt"
    ;;
confirm)
    # The candidate on videos no run was picked by (seed 200; the demo's 56 of 256 there is in
    # train-precision-cpu-2026-12-07, on this machine).
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 200 "$RUNS/bf16-minsnr.safetensors" \
        > "$HERE/by-count-seed200-256.txt"
    ;;
issue)
    # The issue's own command (vdm-eval -n 32 at seeds 0-7; bf16, vdm-eval's default on this CPU) for the
    # shipped demo and the bf16 model, in one run.
    bash $S/demo-colors-finetune-cpu-2026-12-07/issue_command.sh bf16 demo "$RUNS/bf16-minsnr.safetensors:5" \
        > "$HERE/issue-command-seeds0-7.txt"
    ;;
*)
    echo "usage: run.sh train|finetune|score|confirm|issue" >&2
    exit 2
    ;;
esac

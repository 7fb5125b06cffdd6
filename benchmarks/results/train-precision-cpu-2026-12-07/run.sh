#!/usr/bin/env bash
# Does vdm-train's bf16 autocast on a CPU with AMX train as well as fp32, and how much faster is it?
# Run from the repository root with the project installed, the stages in this order (they ran so,
# 2 threads, one at a time); RUNS (default runs/) takes the run folders and checkpoints.
#   run.sh train      the demo's first command to step 1500 of its 13000-step schedule, fp32 then bf16 (30 min)
#   run.sh speed      step times of both precisions, oneDNN allowed AMX, held to AVX-512 bf16, to AVX-512 VNNI
#   run.sh train-on   both runs resumed to step 3000 (30 min)
#   run.sh score      held-out losses at 1500 and 3000; the demo's quality checks at 3000 (20 min)
#   run.sh seed1      a second bf16 run (seed 1) to step 3000, scored the same way (30 min)
#   run.sh fresh      the best of them and the shipped demo on 256 other videos (10 min)
#   run.sh intervals  the 95 % intervals of the pass counts (seconds)
#   (run.sh losses    the training losses and rates from the logs: score and seed1 run it)
set -euo pipefail
HERE=benchmarks/results/train-precision-cpu-2026-12-07
S=benchmarks/results
RUNS=${RUNS:-runs}
export OMP_NUM_THREADS=2

# The demo's first command (vdm/demo/TRAINING.md), at the seed given first (0 for the demo's run): the
# same seed gives both precisions the same initial weights, clips, timesteps and noise.
demo_first_stage() {
    local seed=$1; shift
    vdm-train --preset tiny --config vdm/demo/demo.toml --steps 13000 --batch-size 16 --lr 1e-3 --ema-decay 0.999 \
        --lr-schedule cosine --seed "$seed" --sample-every 0 --checkpoint-every 500 "$@"
}

case "${1:-}" in
train)
    for precision in fp32 bf16; do
        demo_first_stage 0 --stop-at 1500 --precision $precision --out "$RUNS/precision-$precision"
        cp "$RUNS/precision-$precision/metrics.jsonl" "$HERE/$precision-metrics.jsonl"
    done
    ;;
speed)
    # One optimizer step of the demo's model (batch 16, 2 threads): median of 5 blocks of 5 steps.
    for isa in ALL AVX512_CORE_BF16 AVX512_CORE_VNNI; do
        ONEDNN_MAX_CPU_ISA=$isa python benchmarks/train_step.py --config vdm/demo/demo.toml --batch-size 16 \
            --world-sizes 1 --threads 2 --precisions fp32,bf16 --name "train-precision-cpu-2026-12-07/speed-$isa"
    done
    ;;
train-on)
    for precision in fp32 bf16; do
        cp "$RUNS/precision-$precision/checkpoints/latest.safetensors" "$RUNS/precision-$precision-1500.safetensors"
        demo_first_stage 0 --stop-at 3000 --resume --precision $precision --out "$RUNS/precision-$precision"
        cp "$RUNS/precision-$precision/checkpoints/latest.safetensors" "$RUNS/precision-$precision-3000.safetensors"
        cp "$RUNS/precision-$precision/metrics.jsonl" "$HERE/$precision-metrics.jsonl"
    done
    ;;
score)
    # Held-out loss of the EMA weights (scored in fp32, the same held-out clips for every checkpoint).
    for checkpoint in fp32-1500 bf16-1500 fp32-3000 bf16-3000; do
        echo "$checkpoint: $(vdm-eval "$RUNS/precision-$checkpoint.safetensors" -n 8 --precision fp32 \
            --loss-batches 16 --one-step-snr 0 | grep held-out)"
    done > "$HERE/held-out-loss.txt"
    bash "$0" losses
    # What the demo's sections score (vdm/demo/TRAINING.md): 256 videos from seed 100 with the data's
    # labels, guidance 5, the default sampler, fp32; and 64 one-shape videos with their boxes.
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/precision-fp32-3000.safetensors" \
        "$RUNS/precision-bf16-3000.safetensors" > "$HERE/by-count-seed100-256.txt"
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/precision-fp32-3000.safetensors" \
        "$RUNS/precision-bf16-3000.safetensors" > "$HERE/extents-seed100-64.txt"
    ;;
seed1)
    # bf16 passed far more videos than fp32 at step 3000: a second bf16 run, seed 1, to see whether
    # that holds for another draw of the weights, clips and noise, or was this run's luck.
    demo_first_stage 1 --stop-at 3000 --precision bf16 --out "$RUNS/precision-bf16-seed1"
    cp "$RUNS/precision-bf16-seed1/checkpoints/latest.safetensors" "$RUNS/precision-bf16-seed1-3000.safetensors"
    cp "$RUNS/precision-bf16-seed1/metrics.jsonl" "$HERE/bf16-seed1-metrics.jsonl"
    echo "bf16-seed1-3000: $(vdm-eval "$RUNS/precision-bf16-seed1-3000.safetensors" -n 8 --precision fp32 \
        --loss-batches 16 --one-step-snr 0 | grep held-out)" >> "$HERE/held-out-loss.txt"
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 "$RUNS/precision-bf16-seed1-3000.safetensors" \
        >> "$HERE/by-count-seed100-256.txt"
    python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 "$RUNS/precision-bf16-seed1-3000.safetensors" \
        | tail -n +5 >> "$HERE/extents-seed100-64.txt"
    bash "$0" losses
    ;;
losses)
    # Training loss (the mean of the logged 10-step means) over each run's last 500 steps to 1500 and to
    # 3000, and the median logged steps/s of steps 1501-3000 (the test suite ran beside the first part).
    python - "$HERE" <<'PY' > "$HERE/training-loss.txt"
import json, os, statistics, sys
for precision in ("fp32", "bf16", "bf16-seed1"):  # the last once the seed1 stage has run
    if not os.path.exists(f"{sys.argv[1]}/{precision}-metrics.jsonl"):
        continue
    lines = [json.loads(line) for line in open(f"{sys.argv[1]}/{precision}-metrics.jsonl")]
    for end in (1500, 3000):
        window = [line["loss"] for line in lines if end - 500 < line["step"] <= end]
        print(f"{precision}: steps {end - 499}-{end}: mean loss {sum(window) / len(window):.4f} ({len(window)} lines)")
    rates = [line["steps_per_s"] for line in lines if 1500 < line["step"] <= 3000]
    print(f"{precision}: steps 1501-3000: median {statistics.median(rates):.2f} steps/s ({len(rates)} lines)")
PY
    ;;
fresh)
    # The seed-0 bf16 run's step 3000 passed as many as the shipped demo on the 256 videos above, which
    # picked it among three runs: both again on 256 other videos (seed 200), so the pick is not scored
    # on the videos it was picked by.
    python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 200 "$RUNS/precision-bf16-3000.safetensors" \
        vdm/demo/demo.safetensors > "$HERE/by-count-seed200-256.txt"
    ;;
intervals)
    # The 95 % Wilson intervals results.md quotes, from the pass counts the stages above wrote.
    (python - "$HERE" <<'PY'
import re, sys
from vdm.metrics import wilson_interval
for name, pattern in (("by-count-seed100-256.txt", r"^(\S+) .*: (\d+)/(\d+) pass"),
                      ("by-count-seed200-256.txt", r"^(\S+) .*: (\d+)/(\d+) pass"),
                      ("extents-seed100-64.txt", r"^(\S+): (\d+)/(\d+) pass")):
    for line in open(f"{sys.argv[1]}/{name}"):
        if match := re.match(pattern, line):
            passed, total = int(match[2]), int(match[3])
            low, high = wilson_interval(passed, total)
            print(f"{name}: {match[1]}: {passed}/{total}: {low:.3f}-{high:.3f}")
PY
    ) > "$HERE/intervals.txt"
    ;;
*)
    echo "usage: $0 train|speed|train-on|score|seed1|fresh|intervals|losses" >&2; exit 2 ;;
esac

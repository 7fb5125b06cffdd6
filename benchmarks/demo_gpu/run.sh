#!/usr/bin/env bash
# Train candidate demo networks on a lent GPU in one device call, and score them (issue #17).
#
#   bash benchmarks/demo_gpu/run.sh prepare   here: the wheels the GPU machine lacks (vdm itself and
#                                             imageio-ffmpeg, for its Python 3.12) into .device/wheels
#   bash benchmarks/demo_gpu/run.sh train     there, through the device tool, in one call:
#       run(command="bash benchmarks/demo_gpu/run.sh train", carry=[".device/wheels"], timeout_s=590)
#
# `train` trains every CONFIGS entry at once, since one tiny-preset step leaves an H200 mostly idle
# (~1.6 TFLOP/s at batch 64: ../shared/GPU.md). A PROBE_STEPS-step run of each, all side by side,
# measures its steps/s under that shared load; the real run's cosine schedule is then sized to end
# after TRAIN_SECONDS. Then `vdm-eval` scores each: the issue's command (`-n 32`, default sampler and
# precision) and, in fp32, 64 videos from noise and from held-out clips noised to FROM_SNR; videos
# from noise restarted as the demo's are (RESTART; `none` for the sampler alone); a class-conditional
# run's videos get the data's labels, with classifier-free guidance GUIDANCE.
# Everything lands in OUT: logs, metrics.jsonl, vdm-eval's text and JSON, float16 weights.
#
# Knobs (environment): CONFIGS, BATCH, LR, EMA, TRAIN_SECONDS, PROBE_STEPS, FROM_SNR, EVAL_N, RESTART, GUIDANCE, DEVICE
# (cuda; cpu for a dry run here), PYTHON (python3), OUT (the device tool sets it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="$ROOT/.device/wheels"

CONFIGS="${CONFIGS:-vdm/demo/demo.toml benchmarks/demo_gpu/palette.toml benchmarks/demo_gpu/w64.toml}"
BATCH="${BATCH:-64}"
LR="${LR:-1e-3}"
EMA="${EMA:-0.999}"
TRAIN_SECONDS="${TRAIN_SECONDS:-330}"
PROBE_STEPS="${PROBE_STEPS:-60}"
FROM_SNR="${FROM_SNR:-0.01,0.1,1,3}"
EVAL_N="${EVAL_N:-64}"
RESTART="${RESTART:-0.01:6}"
GUIDANCE="${GUIDANCE:-3}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/out/demo-gpu}"

prepare() {
    # vdm as a wheel (no dependencies: the GPU machine has torch and the rest), and imageio-ffmpeg,
    # the one runtime dependency it lacks, built for its Python.
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    python -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" "$ROOT"
    python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --dest "$WHEELS" "imageio-ffmpeg>=0.4.9"
    du -sh "$WHEELS"/*
}

install() {
    # Unpacked onto PYTHONPATH: needs neither pip nor venv there, and the machine's torch (with CUDA)
    # stays the one imported. Zip files drop the exec bit of imageio-ffmpeg's ffmpeg: restore it.
    local site=/tmp/vdm-site
    rm -rf "$site" && mkdir -p "$site"
    for wheel in "$WHEELS"/*.whl; do
        "$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$site"
    done
    chmod +x "$site"/imageio_ffmpeg/binaries/* 2>/dev/null || true
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    cd /tmp  # import the unpacked vdm, not the checkout's
    "$PYTHON" -c "import torch, vdm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'vdm', vdm.__file__)"
}

checkpoint() {  # NAME: where vdm-train leaves a run's latest weights
    echo "$OUT/runs/$1/checkpoints/latest.safetensors"
}

last_rate() {  # steps/s of a run's last metrics.jsonl line
    "$PYTHON" -c "import json, sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['steps_per_s'])" \
        "$1/metrics.jsonl"
}

train_one() {  # NAME CONFIG STEPS: killed past its budget, a run keeps its last checkpoint
    timeout $((TRAIN_SECONDS + 120)) "$PYTHON" -m vdm.train --preset tiny --config "$2" --steps "$3" \
        --batch-size "$BATCH" --lr "$LR" --ema-decay "$EMA" --lr-schedule cosine --seed 0 --sample-every 0 \
        --checkpoint-every 250 --device "$DEVICE" --out "$OUT/runs/$1" > "$OUT/$1-train.log" 2>&1
}

wait_for() {  # PIDS...: wait for each; say which failed (their logs are in OUT)
    for pid in "$@"; do
        wait "$pid" || echo "process $pid exited with $?" | tee -a "$OUT/plan.txt"
    done
}

train() {
    mkdir -p "$OUT/runs"
    if [ -d "$WHEELS" ]; then install; fi
    { date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true; } \
        | tee "$OUT/machine.txt"

    local names=() configs=() pids=()
    for config in $CONFIGS; do
        names+=("$(basename "$config" .toml)")
        configs+=("$ROOT/$config")
    done

    echo "probe: $PROBE_STEPS steps of each, side by side"
    mkdir -p "$OUT/probe/runs"
    for i in "${!names[@]}"; do
        OUT="$OUT/probe" train_one "${names[$i]}" "${configs[$i]}" "$PROBE_STEPS" &
        pids+=($!)
    done
    wait_for "${pids[@]}"

    local steps=()
    for i in "${!names[@]}"; do
        local rate; rate="$(last_rate "$OUT/probe/runs/${names[$i]}")"
        steps+=("$("$PYTHON" -c "print(max(1, int($rate * $TRAIN_SECONDS)))")")
        echo "${names[$i]}: $rate steps/s in the probe -> ${steps[$i]} steps of batch $BATCH" | tee -a "$OUT/plan.txt"
    done

    pids=()
    for i in "${!names[@]}"; do
        train_one "${names[$i]}" "${configs[$i]}" "${steps[$i]}" &
        pids+=($!)
    done
    wait_for "${pids[@]}"

    local trained=()
    for name in "${names[@]}"; do
        if [ -f "$(checkpoint "$name")" ]; then trained+=("$name"); fi
    done
    pids=()
    for name in "${trained[@]}"; do
        evaluate "$name" &
        pids+=($!)
    done
    wait_for "${pids[@]}"
    for name in "${trained[@]}"; do tail -n 4 "$OUT/$name-eval-n32.txt"; done

    # Bring back what fits (the device tool returns 8 files of 16 MiB at most, 64 MiB in all): every
    # text file in one archive, and the float16 weights of the run passing most videos, split in
    # 15 MiB parts where larger (`cat NAME-fp16.safetensors.part* > NAME-fp16.safetensors`).
    local best; best="$(best_run "${trained[@]}")"
    echo "most passes: $best" | tee -a "$OUT/plan.txt"
    "$PYTHON" -m vdm.demo "$(checkpoint "$best")" "$OUT/$best-fp16.safetensors"
    split --bytes=15M --numeric-suffixes "$OUT/$best-fp16.safetensors" "$OUT/$best-fp16.safetensors.part"
    rm "$OUT/$best-fp16.safetensors"
    rm -rf "$OUT/probe" "$OUT/runs"/*/checkpoints "$OUT/runs"/*/samples
    tar -czf /tmp/reports.tar.gz -C "$OUT" --exclude='*.part*' .
    find "$OUT" -mindepth 1 -maxdepth 1 ! -name '*.part*' -exec rm -rf {} +
    mv /tmp/reports.tar.gz "$OUT/"
    ls -l "$OUT"
}

evaluate() {  # NAME: the issue's command, then 64 videos in fp32 with the from-SNR profile
    local ckpt guidance; ckpt="$(checkpoint "$1")"
    guidance="$("$PYTHON" -c "import sys; from vdm.checkpoint import read_checkpoint
print($GUIDANCE if read_checkpoint(sys.argv[1])[1].conditional else 1)" "$ckpt")"
    "$PYTHON" -m vdm.cli.eval "$ckpt" --device "$DEVICE" -n 32 --restart "$RESTART" --guidance "$guidance" \
        > "$OUT/$1-eval-n32.txt" 2>&1
    "$PYTHON" -m vdm.cli.eval "$ckpt" --device "$DEVICE" --precision fp32 -n "$EVAL_N" --restart "$RESTART" \
        --guidance "$guidance" --loss-batches 8 --from-snr "$FROM_SNR" --json "$OUT/$1-eval.json" > "$OUT/$1-eval.txt" 2>&1
}

best_run() {  # NAMES...: the one whose fp32 videos pass most often (of those scored)
    "$PYTHON" - "$OUT" "$@" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
scored = [name for name in names if os.path.exists(f"{out}/{name}-eval.json")]
print(max(scored, key=lambda name: json.load(open(f"{out}/{name}-eval.json"))["pass_rate"]))
PY
}

case "${1:-}" in
    prepare) prepare ;;
    train) train ;;
    *) echo "usage: bash benchmarks/demo_gpu/run.sh prepare|train" >&2; exit 2 ;;
esac

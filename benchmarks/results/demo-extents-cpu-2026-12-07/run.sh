#!/usr/bin/env bash
# Every run behind results.md, in the order they ran (2 threads each, one at a time), from the repo root.
# Checkpoints: runs/cs3000 and runs/cs13000 are the run CS (the demo's first command) at steps 3000 and
# 13000; runs/csm2000 is vdm/demo/demo.safetensors before packing to float16; runs/sh2000 is the run SH
# of ../demo-shapes-cpu-2026-12-07 at step 2000; runs/td1000 and td2000 copies of TD0's checkpoint.
set -euo pipefail
R=benchmarks/results/demo-extents-cpu-2026-12-07
export OMP_NUM_THREADS=2
# 1. The demo's fine-tune with temporal downsampling off (td0.toml), from the shipped weights, as SH was
#    fine-tuned (lr 3e-4 cosine, plain loss, EMA 0.998, seed 2), 2000 steps
vdm-train --preset tiny --config $R/td0.toml --init-from runs/csm2000.safetensors --steps 2000 \
    --batch-size 16 --lr 3e-4 --ema-decay 0.998 --lr-schedule cosine --seed 2 --sample-every 0 \
    --checkpoint-every 500 --out runs/TD0
cp runs/TD0/metrics.jsonl $R/TD0-metrics.jsonl
# 2. Pass rates by shape count (the demo's and SH's 128 videos are in ../demo-shapes-cpu-2026-12-07)
python benchmarks/results/demo-shapes-cpu-2026-12-07/by_count.py 128 100 runs/td2000.safetensors \
    > $R/by-count-TD0-seed100-128.txt
# 3. Single shapes: what fails in their frames, along the demo's training and in the two fine-tunes
python $R/extents.py 64 100 runs/cs3000.safetensors runs/cs13000.safetensors vdm/demo/demo.safetensors \
    runs/sh2000.safetensors runs/td1000.safetensors runs/td2000.safetensors > $R/extents-seed100-64.txt
# 4. TD0's held-out loss, as the other runs'
vdm-eval runs/td2000.safetensors -n 8 --precision fp32 --loss-batches 8 --one-step-snr 0 \
    | grep -E "held-out|sampled" > $R/held-out-loss-TD0.txt
# 5. The demo fine-tuned on one-shape clips only (S1), as TD0 with the demo's config; step 1000 copied
python $R/one_shape.py --preset tiny --config vdm/demo/demo.toml --init-from runs/csm2000.safetensors \
    --steps 2000 --batch-size 16 --lr 3e-4 --ema-decay 0.998 --lr-schedule cosine --seed 2 --sample-every 0 \
    --checkpoint-every 500 --out runs/S1
cp runs/S1/metrics.jsonl $R/S1-metrics.jsonl
(python $R/extents.py 64 100 runs/s1-1000.safetensors runs/s1-2000.safetensors | tail -8
 python $R/extents.py 64 100 vdm/demo/demo.safetensors:1 runs/s1-2000.safetensors:1 | tail -8
 python $R/extents.py 64 100 runs/s1-2000.safetensors:2 runs/s1-2000.safetensors:3 | tail -8) \
    > $R/extents-S1-seed100-64.txt
# 6. F, S1's control: the same fine-tune on the data's own mix; then both guided against the demo's null class
vdm-train --preset tiny --config vdm/demo/demo.toml --init-from runs/csm2000.safetensors --steps 2000 \
    --batch-size 16 --lr 3e-4 --ema-decay 0.998 --lr-schedule cosine --seed 2 --sample-every 0 \
    --checkpoint-every 500 --out runs/F
cp runs/F/metrics.jsonl $R/F-metrics.jsonl
python $R/extents.py 64 100 runs/f2000.safetensors | tail -4 > $R/extents-F-seed100-64.txt
(python $R/cross_guidance.py 64 100 runs/f2000.safetensors vdm/demo/demo.safetensors 3 5
 python $R/cross_guidance.py 64 100 runs/s1-2000.safetensors vdm/demo/demo.safetensors 2 3 5) \
    > $R/cross-seed100-64.txt

#!/usr/bin/env bash
# Every run behind results.md, in the order they ran (2 threads each, one at a time), from the directory
# that holds runs/ and this checkout as main/. runs/cs13000.safetensors is the demo's first stage (step
# 13000 of run CS, ../demo-colors-13000-cpu-2026-12-07), which the shipped demo was fine-tuned from.
set -euo pipefail
R=main/benchmarks/results/demo-long-finetune-cpu-2026-12-07
S=main/benchmarks/results
export OMP_NUM_THREADS=2
# 1. L6: the demo's second command (lr 2e-4 cosine, Min-SNR-γ 5, EMA 0.998, seed 1) three times as long,
#    6000 steps instead of 2000; the only difference from the shipped demo's run is --steps. While it
#    ran, a loop copied runs/L6/checkpoints/latest.safetensors to runs/l6-2000.safetensors and
#    runs/l6-4000.safetensors once those steps' checkpoints were written (the checkpoint records its
#    step). They are not the shipped demo's run: the lr there is still 1.5e-4 and 5e-5.
vdm-train --preset tiny --config main/vdm/demo/demo.toml --init-from runs/cs13000.safetensors \
    --steps 6000 --batch-size 16 --lr 2e-4 --ema-decay 0.998 --lr-schedule cosine --min-snr-gamma 5 --seed 1 \
    --sample-every 0 --out runs/L6
cp runs/L6/checkpoints/latest.safetensors runs/l6-6000.safetensors
cp runs/L6/metrics.jsonl $R/L6-metrics.jsonl
# 2. Every checkpoint of L6 on the 256 videos the shipped demo was scored on (../demo-second-finetune-cpu-2026-12-07)
python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 runs/l6-6000.safetensors runs/l6-4000.safetensors \
    runs/l6-2000.safetensors > $R/by-count-seed100-256.txt
# 3. B64: the demo's second command with the same clips at four times the batch (four micro-batches of
#    16: one batch of 64 took about 5.1 s a step here, four of 16 3.1 s), lr x sqrt(4), EMA 0.998^4
vdm-train --preset tiny --config main/vdm/demo/demo.toml --init-from runs/cs13000.safetensors \
    --steps 500 --batch-size 64 --grad-accum 4 --lr 4e-4 --ema-decay 0.992 --lr-schedule cosine --min-snr-gamma 5 \
    --seed 1 --sample-every 0 --out runs/B64
cp runs/B64/checkpoints/latest.safetensors runs/b64-500.safetensors
cp runs/B64/metrics.jsonl $R/B64-metrics.jsonl
python $S/demo-shapes-cpu-2026-12-07/by_count.py 256 100 runs/b64-500.safetensors >> $R/by-count-seed100-256.txt
# 4. Held-out losses (L6's ran on 1 thread while B64 trained; a loss does not depend on the load)
for c in l6-2000 l6-4000 l6-6000 b64-500; do
    echo "== $c"
    vdm-eval runs/$c.safetensors -n 8 --precision fp32 --loss-batches 8 --one-step-snr 0 | grep held-out
done > $R/held-out-loss.txt
# 5. One-shape videos and their boxes (64, as ../demo-extents-cpu-2026-12-07 measured the demo: 12 of 64)
python $S/demo-extents-cpu-2026-12-07/extents.py 64 100 runs/l6-6000.safetensors runs/b64-500.safetensors \
    > $R/extents-seed100-64.txt
# 6. The 95 % intervals in results.md, from the pass counts in by-count-seed100-256.txt
python -c "from vdm.metrics import wilson_interval as w
for k in (75, 70, 66, 65): print(k, '%.3f-%.3f' % w(k, 256))"

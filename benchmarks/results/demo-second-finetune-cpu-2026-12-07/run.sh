#!/usr/bin/env bash
# Every run behind results.md, in the order they ran (2 threads each, one at a time), from the repo root.
# runs/csm2000.safetensors is vdm/demo/demo.safetensors before packing to float16 (../demo-colors-finetune-cpu-2026-12-07).
set -euo pipefail
R=benchmarks/results/demo-second-finetune-cpu-2026-12-07
export OMP_NUM_THREADS=2
# 1. A restart pass at low noise after the default one, to smooth the outlines (vdm-eval's own videos;
#    stopped after the first plan: it ran beside step 2, on 1 thread)
vdm-eval -n 128 --seed 100 --precision fp32 --loss-batches 0 --one-step-snr 0 --restart 0.01:6,10:1 \
    > $R/polish-seed100-128.txt
# 2. M2: the demo's own fine-tune (lr 2e-4 cosine, Min-SNR 5, EMA 0.998) run a second time, from the
#    shipped weights, seed 3
vdm-train --preset tiny --config vdm/demo/demo.toml --init-from runs/csm2000.safetensors --steps 2000 \
    --batch-size 16 --lr 2e-4 --ema-decay 0.998 --lr-schedule cosine --min-snr-gamma 5 --seed 3 \
    --sample-every 0 --checkpoint-every 1000 --out runs/M2
cp runs/M2/checkpoints/latest.safetensors runs/m2-2000.safetensors
cp runs/M2/metrics.jsonl $R/M2-metrics.jsonl
# 3. MX: M2 with half the clips replaced by one-shape clips, trained on their labels only (the null
#    class keeps the data's mix)
EXTRA=0.5 python $R/one_shape_mix.py --preset tiny --config vdm/demo/demo.toml --init-from runs/csm2000.safetensors \
    --steps 2000 --batch-size 16 --lr 2e-4 --ema-decay 0.998 --lr-schedule cosine --min-snr-gamma 5 --seed 3 \
    --sample-every 0 --checkpoint-every 1000 --out runs/MX
cp runs/MX/checkpoints/latest.safetensors runs/mx-2000.safetensors
cp runs/MX/metrics.jsonl $R/MX-metrics.jsonl
# 4. Both fine-tunes: one-shape videos (64, as ../demo-extents-cpu-2026-12-07 measured the demo: 12 of
#    64), and all videos by shape count (256; the demo's again, in the same run)
python benchmarks/results/demo-extents-cpu-2026-12-07/extents.py 64 100 runs/m2-2000.safetensors \
    runs/mx-2000.safetensors > $R/extents-seed100-64.txt
python benchmarks/results/demo-shapes-cpu-2026-12-07/by_count.py 256 100 runs/m2-2000.safetensors \
    runs/mx-2000.safetensors vdm/demo/demo.safetensors > $R/by-count-seed100-256.txt
# 5. The mean of the demo's weights and M2's
python $R/soup.py runs/soup-csm-m2.safetensors runs/csm2000.safetensors runs/m2-2000.safetensors
python benchmarks/results/demo-shapes-cpu-2026-12-07/by_count.py 256 100 runs/soup-csm-m2.safetensors \
    >> $R/by-count-seed100-256.txt
# 6. UniPC's step into t = 0 at first order; held-out losses
python $R/final_order.py vdm/demo/demo.safetensors 128 100 > $R/final-order-seed100-128.txt
for c in m2-2000 mx-2000 soup-csm-m2; do
    echo "== $c"
    vdm-eval runs/$c.safetensors -n 8 --precision fp32 --loss-batches 8 --one-step-snr 0 | grep held-out
done > $R/held-out-loss.txt
# 7. The fine-tunes' conditional predictions guided against the demo's null class (as S1 and F were)
(python benchmarks/results/demo-extents-cpu-2026-12-07/cross_guidance.py 64 100 runs/mx-2000.safetensors vdm/demo/demo.safetensors 5
 python benchmarks/results/demo-extents-cpu-2026-12-07/cross_guidance.py 64 100 runs/m2-2000.safetensors vdm/demo/demo.safetensors 5) \
    > $R/cross-seed100-64.txt
# 8. MXP: MX's data with S1's recipe (lr 3e-4 cosine, plain loss, seed 2)
EXTRA=0.5 python $R/one_shape_mix.py --preset tiny --config vdm/demo/demo.toml --init-from runs/csm2000.safetensors \
    --steps 2000 --batch-size 16 --lr 3e-4 --ema-decay 0.998 --lr-schedule cosine --seed 2 \
    --sample-every 0 --checkpoint-every 1000 --out runs/MXP
cp runs/MXP/checkpoints/latest.safetensors runs/mxp-2000.safetensors
cp runs/MXP/metrics.jsonl $R/MXP-metrics.jsonl
# 9. MXP measured as M2 and MX were
python benchmarks/results/demo-extents-cpu-2026-12-07/extents.py 64 100 runs/mxp-2000.safetensors | tail -4 \
    >> $R/extents-seed100-64.txt
python benchmarks/results/demo-extents-cpu-2026-12-07/cross_guidance.py 64 100 runs/mxp-2000.safetensors \
    vdm/demo/demo.safetensors 5 >> $R/cross-seed100-64.txt
python benchmarks/results/demo-shapes-cpu-2026-12-07/by_count.py 256 100 runs/mxp-2000.safetensors \
    >> $R/by-count-seed100-256.txt
(echo "== mxp-2000"
 vdm-eval runs/mxp-2000.safetensors -n 8 --precision fp32 --loss-batches 8 --one-step-snr 0 | grep held-out) \
    >> $R/held-out-loss.txt

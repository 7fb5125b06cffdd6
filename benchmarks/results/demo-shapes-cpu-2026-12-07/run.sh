#!/usr/bin/env bash
# Every run behind results.md, in the order they ran (2 threads each, one at a time), from the repo root.
set -euo pipefail
R=benchmarks/results/demo-shapes-cpu-2026-12-07
export OMP_NUM_THREADS=2
# 1. The shipped demo with more steps of other samplers
bash $R/sweep.sh "ddpm 50 none" "dpm++2m-sde 20 none" "ddim 25 none" > $R/sweep-seed100-128.txt
# 2. Do stretched boxes stretch along the motion? (run again in step 6)
python $R/stretch.py vdm/demo/demo.safetensors 128 100 > $R/stretch-seed100-128.txt
# 3. Where videos are lost: finishing held-out clips from each SNR
vdm-eval -n 64 --seed 0 --precision fp32 --loss-batches 8 --one-step-snr 0 --from-snr 0.1,0.3,1,3,10 > $R/from-snr-demo.txt
# 4. The shapes-labelled fine-tune of the shipped weights (csm2000 = vdm/demo/demo.safetensors before
#    packing to float16; shapes.toml = vdm/demo/demo.toml with num_classes = 728, class_label = "shapes")
vdm-train --preset tiny --config $R/shapes.toml --init-from runs/csm2000.safetensors --steps 5000 \
    --batch-size 16 --lr 3e-4 --ema-decay 0.998 --lr-schedule cosine --seed 2 --sample-every 0 \
    --checkpoint-every 1000 --out runs/SH
# 5. Pass rates by shape count, the fine-tune and the shipped demo; does each draw the shapes asked for?
python $R/by_count.py 128 100 runs/SH/checkpoints/latest.safetensors vdm/demo/demo.safetensors > $R/by-count-seed100-128.txt
python $R/kinds.py 128 100 runs/SH/checkpoints/latest.safetensors vdm/demo/demo.safetensors > $R/kinds-seed100-128.txt
# 6. Step 2 again, now with the boxes' skew against the data's; could the model rank its own videos?
python $R/stretch.py vdm/demo/demo.safetensors 128 100 > $R/stretch-seed100-128.txt
python $R/rank.py vdm/demo/demo.safetensors 128 100 > $R/rank-seed100-128.txt
python $R/contact.py vdm/demo/demo.safetensors 128 100 > $R/contact-seed100-128.txt
vdm-eval runs/SH/checkpoints/latest.safetensors -n 8 --precision fp32 --loss-batches 8 --one-step-snr 0 | grep -E "held-out|sampled" > $R/held-out-loss-SH.txt

"""Scratch: training-step time of the demo's network with and without MotionAlign at level 0, in one
run (batch 16, 8 x 32 x 32, AdamW; the median of 5 steps after one warm-up), and a check that the
added blocks start as the identity. usage: OMP_NUM_THREADS=1 python step_cost.py"""
import dataclasses
import statistics
import time

import torch

from vdm.config import presets
from vdm.unet import Unet3D

cfg = dataclasses.replace(presets()["tiny"].model, temporal_downsample=True)
torch.manual_seed(0)
base = Unet3D(cfg)
aligned = Unet3D(dataclasses.replace(cfg, motion_align_levels=(0,)))
aligned.load_state_dict(base.state_dict(), strict=False)
x, t = torch.randn(16, 3, 8, 32, 32), torch.randint(0, 1000, (16,))
for model in (base, aligned):  # a non-zero output head, so the output depends on every block
    torch.manual_seed(1)
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)
print("starts as the identity:", torch.allclose(base(x, t), aligned(x, t), atol=1e-6))
for name, model in (("P16's network", base), ("with motion_align_levels = [0]", aligned)):
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    times = []
    for step in range(6):
        start = time.perf_counter()
        loss = model(x, t).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    print(f"{name}: {statistics.median(times[1:]):.3f} s per step, {sum(p.numel() for p in model.parameters())} parameters")

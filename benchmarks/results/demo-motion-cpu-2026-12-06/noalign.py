"""Scratch ablation: a vdm CLI run with MotionAlign's motion held at rest, so each frame gathers its
neighbours at the same pixel (a learned temporal 1x1x5 mixing) instead of along the motion. Same
weights, same cost; the motion convolution gets no gradient and stays at its zero start.
usage: python noalign.py train|eval ARGS...   (vdm-train's or vdm-eval's arguments)"""
import sys

import torch

import vdm.unet

aligned_grid = vdm.unet.motion_grid
vdm.unet.motion_grid = lambda flow, offset: aligned_grid(torch.zeros_like(flow), offset)

command = sys.argv.pop(1)
sys.argv[0] = f"vdm-{command}"
if command == "train":
    from vdm.train import main
elif command == "eval":
    from vdm.cli.eval import main
else:
    raise SystemExit(f"usage: python noalign.py train|eval ARGS...; got {command!r}")
main()

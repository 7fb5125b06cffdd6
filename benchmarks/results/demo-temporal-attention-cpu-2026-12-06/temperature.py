"""The palette fine-tune sampled alone (UniPC 6, restarted once from SNR 0.01 in 6 steps, no guide: the
demo's guide predicts v), with its logits divided by TAU before the softmax at every call: is it too
sure of its colours (TAU > 1 would help) or not sure enough (TAU < 1)? N videos from seed 1, fp32,
2 threads (run from the repository root, venv active):
  python benchmarks/results/demo-temporal-attention-cpu-2026-12-06/temperature.py CHECKPOINT TAU,... [N]"""
import sys

import torch
import torch.nn.functional as F

from vdm.metrics import score_videos
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(2)
backend = load_backend("torch", sys.argv[1], "cpu", "fp32")
mix = backend.model.palette_mix
n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
for tau in (float(s) for s in sys.argv[2].split(",")):
    mix.forward = lambda logits, tau=tau: F.conv3d(torch.softmax(logits.float() / tau, dim=1), mix.weight)
    videos = VideoGenerator(backend=backend).generate(n, seed=1, restarts=parse_restarts("0.01:6"))
    report = score_videos(videos)
    print(f"tau {tau:g}: {sum(v.passed for v in report.videos)}/{n} pass, "
          + ", ".join(f"{k} {rate * n:.0f}" for k, rate in report.property_pass_rates.items())
          + f", colours {report.colors_per_video:.2f}", flush=True)

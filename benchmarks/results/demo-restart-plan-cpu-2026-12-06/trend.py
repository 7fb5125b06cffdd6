"""What in the trend between the restart pass's first two estimates helps? The restart pass on PLAN
with that trend (the first estimate's change to the second, which UniPC's second step extrapolates)
kept, or replaced:

    keep          as sampled
    zero          no trend: the second step first order
    reflect       reversed: the first estimate replaced by 2 x0(second) - x0(first)
    gains=R,G,B   a synthetic trend, d x0 / d lambda = gain[channel] * (x0 + 1) / 2 clamped to [0, 1]:
                  a dimming (gain < 0) of lit pixels by channel, as jitter.py measures for 872 -> 871

usage: python trend.py N SEED0 PLAN MODE...    env DEMO (vdm/demo/demo.safetensors), THREADS (2)"""
import math
import os
import sys

import torch

from vdm.diffusion import Schedule
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, step_generator
from vdm.samplers import UniPC

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
DEMO = os.environ.get("DEMO", "vdm/demo/demo.safetensors")
n, seed0, plan, modes = int(sys.argv[1]), int(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")], sys.argv[4:]
guided = load_autoguided("torch", DEMO, "vdm/demo/guide.safetensors", 1.5, "cpu", "fp32")
alphas_cumprod = Schedule.from_config(guided.diffusion_config).alphas_cumprod
lam = lambda t: 0.5 * math.log(alphas_cumprod[t] / (1 - alphas_cumprod[t]))


class Retrended(UniPC):
    """UniPC whose steps from the second on see the first estimate rewritten by `mode`."""

    mode = "keep"

    def update(self, x_s, s, order, new_x0):
        if s == 1 and new_x0 is None and self.mode != "keep":  # the predictor from the second step
            first, second = self.x0_history
            if self.mode == "zero":
                first = second
            elif self.mode == "reflect":
                first = 2 * second - first
            else:  # gains=R,G,B
                gains = torch.tensor([float(g) for g in self.mode.split("=")[1].split(",")])
                lit = ((second + 1) / 2).clamp(0, 1)
                first = second - (lam(plan[1]) - lam(plan[0])) * gains[None, :, None, None, None] * lit
            self.x0_history[0] = first
        return super().update(x_s, s, order, new_x0)


gen = VideoGenerator(backend=guided)
first_pass = [gen.generate(8, seed=seed0 + b, sampler="unipc", num_steps=6) for b in range(n // 8)]
print(f"{DEMO}, {n} videos from seed {seed0}, plan {plan}")
for mode in modes:
    finished = []
    for b, videos in enumerate(first_pass):
        sampler = Retrended(alphas_cumprod, len(plan))
        sampler.mode, sampler.timesteps = mode, plan
        sampler.abars = [float(alphas_cumprod[t]) for t in plan] + [1.0]
        generator = step_generator(seed0 + b, torch.device("cpu"))
        abar = sampler.abars[0]
        noised = math.sqrt(abar) * videos + math.sqrt(1 - abar) * sampler.fresh_noise(videos, generator)
        finished.append(sample(guided, noised, sampler, None, 1.0, generator))
    report = score_videos(torch.cat(finished))
    passed = sum(v.passed for v in report.videos)
    kept = sum(v.properties["count"].passed for v in report.videos)
    print(f"{mode:22s} pass {passed:3d}/{n}  count kept {kept:3d}  colours {report.colors_per_video:.2f}", flush=True)

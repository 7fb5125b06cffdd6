"""The restart pass's timesteps, paired: the demo's first pass (guided 1.5, UniPC 6) is sampled once,
then finished again by each plan from the same fresh noise (the generator vdm-run's restart uses).

usage: python plans.py N SEED0 PLAN...    env DEMO (vdm/demo/demo.safetensors), THREADS (2)
PLAN: comma-separated timesteps, noisiest first, ending at 0 (the default restart, 0.01:6, is
872,871,738,441,106,0); its first timestep is where the videos are noised again. UniPC throughout.
Prints, per plan, videos passing, keeping their count, passing `shape`, blank, and colours per video."""
import math
import os
import sys

import torch

from vdm.diffusion import Schedule
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sampler_for, step_generator

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
DEMO = os.environ.get("DEMO", "vdm/demo/demo.safetensors")
n, seed0, plans = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
guided = load_autoguided("torch", DEMO, "vdm/demo/guide.safetensors", 1.5, "cpu", "fp32")
alphas_cumprod = Schedule.from_config(guided.diffusion_config).alphas_cumprod
batches = range(n // 8)


def tally(videos: torch.Tensor) -> str:
    report = score_videos(videos)
    count = lambda test: sum(bool(test(v)) for v in report.videos)
    return (f"pass {count(lambda v: v.passed):3d}/{len(videos)}  count kept {count(lambda v: v.properties['count'].passed):3d}"
            f"  shape {count(lambda v: v.properties['shape'].passed):3d}"
            f"  blank {count(lambda v: '0 shapes' in v.properties['count'].detail):2d}"
            f"  colours {report.colors_per_video:.2f}")


gen = VideoGenerator(backend=guided)
first = [gen.generate(8, seed=seed0 + b, sampler="unipc", num_steps=6) for b in batches]
print(f"{DEMO}, {n} videos from seed {seed0}", flush=True)
print(f"{'first pass only':34s} {tally(torch.cat(first))}", flush=True)
for plan in plans:
    timesteps = [int(t) for t in plan.split(",")]
    finished = []
    for b in batches:
        sampler = sampler_for(guided, "unipc", len(timesteps))
        sampler.timesteps = timesteps
        sampler.abars = [float(alphas_cumprod[t]) for t in timesteps] + [1.0]
        generator = step_generator(seed0 + b, torch.device("cpu"))  # as sample_plan's restart draws it
        abar = sampler.abars[0]
        noised = math.sqrt(abar) * first[b] + math.sqrt(1 - abar) * sampler.fresh_noise(first[b], generator)
        finished.append(sample(guided, noised, sampler, None, 1.0, generator))
    print(f"{plan:34s} {tally(torch.cat(finished))}", flush=True)

"""The restart pass's timesteps, paired: the demo's first pass is sampled once, then finished again by
each plan from the same fresh noise (common.py).

usage: python plans.py N SEED0 PLAN...    env DEMO, THREADS (common.py)
PLAN: comma-separated timesteps, noisiest first, ending at 0 (the default restart, 0.01:6, is
872,871,738,441,106,0); its first timestep is where the videos are noised again. UniPC throughout."""
import sys

import torch

from common import DEMO, first_pass, load_guided, noised_again, plan_sampler, schedule_of, tally
from vdm.runtime.sampling import sample

n, seed0, plans = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
guided = load_guided()
alphas_cumprod = schedule_of(guided)
first = first_pass(guided, n, seed0)
print(f"{DEMO}, {n} videos from seed {seed0}", flush=True)
print(f"{'first pass only':34s} {tally(torch.cat(first))}", flush=True)
for plan in plans:
    timesteps = [int(t) for t in plan.split(",")]
    finished = []
    for b, videos in enumerate(first):
        sampler = plan_sampler(alphas_cumprod, timesteps)
        noised, generator = noised_again(videos, sampler, seed0 + b)
        finished.append(sample(guided, noised, sampler, None, 1.0, generator))
    print(f"{plan:34s} {tally(torch.cat(finished))}", flush=True)

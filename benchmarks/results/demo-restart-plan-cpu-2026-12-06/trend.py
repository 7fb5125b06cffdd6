"""What in the trend between the restart pass's first two estimates helps? The restart pass on PLAN
with that trend (the first estimate's change to the second, which UniPC's second step extrapolates)
kept, or replaced:

    keep          as sampled
    zero          no trend: the second step first order
    reflect       reversed: the first estimate replaced by 2 x0(second) - x0(first)
    gains=R,G,B   a synthetic trend, d x0 / d lambda = gain[channel] * (x0 + 1) / 2 clamped to [0, 1]:
                  a dimming (gain < 0) of lit pixels by channel, as jitter.py measures for 872 -> 871

usage: python trend.py N SEED0 PLAN MODE...    env DEMO, THREADS (common.py)"""
import math
import sys

import torch

from common import DEMO, first_pass, load_guided, noised_again, plan_sampler, schedule_of, tally
from vdm.runtime.sampling import sample
from vdm.samplers import UniPC

n, seed0, plan, modes = int(sys.argv[1]), int(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")], sys.argv[4:]
guided = load_guided()
alphas_cumprod = schedule_of(guided)
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


first = first_pass(guided, n, seed0)
print(f"{DEMO}, {n} videos from seed {seed0}, plan {plan}")
for mode in modes:
    finished = []
    for b, videos in enumerate(first):
        sampler = plan_sampler(alphas_cumprod, plan, Retrended)
        sampler.mode = mode
        noised, generator = noised_again(videos, sampler, seed0 + b)
        finished.append(sample(guided, noised, sampler, None, 1.0, generator))
    print(f"{mode:22s} {tally(torch.cat(finished))}", flush=True)

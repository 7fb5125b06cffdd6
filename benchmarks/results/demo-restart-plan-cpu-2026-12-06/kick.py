"""Two deliberate changes to the restart pass's first estimate, on PLAN (no neighbouring pair):

    none          as sampled
    guide=W       the first call autoguided at weight W instead of 1.5
    posterior=K   the first estimate moved toward a sample of the posterior: x0 + K (s^2 / a) J z, where
                  J z = (x0(x + e z) - x0(x)) / e (one more call, e = 0.01, z standard normal) and
                  (s^2 / a) J is Tweedie's covariance of the clean video given x at that noise

usage: python kick.py N SEED0 PLAN MODE...    env DEMO, THREADS (common.py)"""
import math
import sys

import torch

from common import DEMO, first_pass, load_guided, noised_again, plan_sampler, schedule_of, tally
from vdm.diffusion import split_prediction

n, seed0, plan, modes = int(sys.argv[1]), int(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")], sys.argv[4:]
guided = load_guided()
alphas_cumprod = schedule_of(guided)
STEP = 0.01  # e: the finite difference's step in x


def estimate(backend, x: torch.Tensor, t: int, abar: float) -> tuple[torch.Tensor, torch.Tensor]:
    out = backend.predict(x, torch.full((len(x),), t), None)
    return split_prediction(out, x, abar, backend.diffusion_config.prediction, True)


first = first_pass(guided, n, seed0)
print(f"{DEMO}, {n} videos from seed {seed0}, plan {plan}")
for mode in modes:
    kind, _, value = mode.partition("=")
    first_call = load_guided(float(value)) if kind == "guide" else guided
    directions = torch.Generator().manual_seed(seed0)
    finished = []
    with torch.no_grad():
        for b, videos in enumerate(first):
            sampler = plan_sampler(alphas_cumprod, plan)
            x, generator = noised_again(videos, sampler, seed0 + b)
            for i, t in enumerate(plan):
                abar = sampler.abars[i]
                x0, eps = estimate(first_call if i == 0 else guided, x, t, abar)
                if i == 0 and kind == "posterior":
                    z = torch.randn(x.shape, generator=directions)
                    moved, _ = estimate(guided, x + STEP * z, t, abar)
                    x0 = (x0 + float(value) * (1 - abar) / math.sqrt(abar) * (moved - x0) / STEP).clamp(-1, 1)
                    eps = (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
                x = sampler.step(i, x, x0, eps, generator)
            finished.append(x.clamp(-1, 1))
    print(f"{mode:14s} {tally(torch.cat(finished))}", flush=True)

"""How the demo's clean-video estimate changes with the timestep alone, at a fixed noisy input: restart
inputs (the first pass's videos noised to t=872, SNR 0.01) denoised at neighbouring timesteps.

usage: python jitter.py N SEED0    env DEMO, THREADS (common.py)
For each pair (p, q): d = (x0(q) - x0(p)) / (lambda(q) - lambda(p)), lambda = half log SNR, the finite
difference UniPC's second-order step scales by the step it takes. Prints its RMS, its mean per channel
where the estimate is lit (> -0.5) and the cosine between neighbouring pairs' differences."""
import math
import sys

import torch
import torch.nn.functional as F

from common import DEMO, first_pass, load_guided, schedule_of
from vdm.diffusion import split_prediction

n, seed0 = int(sys.argv[1]), int(sys.argv[2])
guided = load_guided()
abar = schedule_of(guided)
first = torch.cat(first_pass(guided, n, seed0))
a = float(abar[872])
x = math.sqrt(a) * first + math.sqrt(1 - a) * torch.randn(first.shape, generator=torch.Generator().manual_seed(seed0))
lam = lambda t: 0.5 * math.log(abar[t] / (1 - abar[t]))
x0 = {}
with torch.no_grad():
    for t in (880, 879, 873, 872, 871, 870, 866, 860, 859):
        x0[t], _ = split_prediction(guided.predict(x, torch.full((n,), t), None), x, float(abar[t]),
                                    guided.diffusion_config.prediction, True)


def slope(p: int, q: int) -> torch.Tensor:
    return (x0[q] - x0[p]) / (lam(q) - lam(p))  # (N, C, T, H, W)


lit = (x0[872] > -0.5).float()
print(f"{DEMO}: {n} restart inputs at t=872 (SNR {a / (1 - a):.4f}), seed {seed0}")
print(f"{'pair':10s} {'d lambda':>8s} {'RMS':>6s}  mean where lit (R, G, B)")
for p, q in ((880, 879), (873, 872), (872, 871), (871, 870), (860, 859), (872, 866), (872, 860)):
    d = slope(p, q)
    lit_mean = [(d[:, c] * lit[:, c]).sum().item() / lit[:, c].sum().item() for c in range(3)]
    print(f"{p}->{q:<5d} {lam(q) - lam(p):8.4f} {d.pow(2).mean().sqrt().item():6.3f}  "
          + ", ".join(f"{m:+.2f}" for m in lit_mean))
cos = lambda u, v: F.cosine_similarity(u.flatten(1), v.flatten(1)).mean().item()
print("cosine between the differences of")
for (p, q), (r, s) in ((((873, 872), (872, 871))), (((872, 871), (871, 870))), (((880, 879), (872, 871))),
                       (((872, 871), (872, 866))), (((872, 866), (872, 860)))):
    print(f"  {p}->{q} and {r}->{s}: {cos(slope(p, q), slope(r, s)):+.2f}")

"""Epsilon scaling (Ning et al. 2024, "Elucidating the exposure bias in diffusion models"): the demo's
noise prediction divided by LAMBDA at every call (its clean-video estimate re-derived from it), sampled
as by default (guided, UniPC 6, restarted once; fp32, 2 threads). LAMBDA > 1 counters a network that
over-predicts the noise on its own, slightly off-distribution, sampling states.
    python benchmarks/results/demo-input-perturbation-cpu-2026-12-06/eps_scale.py N SEED LAMBDA..."""
import sys

import torch

from vdm.demo import DEMO_CHECKPOINT, DEMO_GUIDE, DEMO_GUIDE_WEIGHT, DEMO_RESTARTS
from vdm.diffusion import Schedule, clean_from_output, split_prediction, v_target
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import AutoguidedBackend
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(2)
n, seed = int(sys.argv[1]), int(sys.argv[2])
net = load_backend("torch", DEMO_CHECKPOINT, "cpu", "fp32")
guide = load_backend("torch", DEMO_GUIDE, "cpu", "fp32")
alphas_cumprod = Schedule.from_config(net.diffusion_config).alphas_cumprod


class EpsScaled(AutoguidedBackend):
    """The guided demo with its eps divided by `lam`: v -> eps at x (unclamped), eps / lam, the x0 it
    implies, back to v."""

    lam = 1.0

    def predict(self, x, t, y):
        abar = float(alphas_cumprod[int(t[0])])
        _, eps = split_prediction(super().predict(x, t, y), x, abar, "v", clip=False)
        eps = eps / self.lam
        x0 = clean_from_output(eps, x, abar ** 0.5, (1 - abar) ** 0.5, "epsilon")
        return v_target(x0, eps, torch.tensor(abar))


for lam in map(float, sys.argv[3:]):
    backend = EpsScaled(net, guide, DEMO_GUIDE_WEIGHT)
    backend.lam = lam
    gen = VideoGenerator(backend=backend)
    videos = torch.cat([gen.generate(32, seed=seed + i, restarts=parse_restarts(DEMO_RESTARTS)) for i in range(n // 32)])
    report = score_videos(videos)
    print(f"lambda {lam:g}: {sum(v.passed for v in report.videos)}/{n} pass, "
          + ", ".join(f"{k} {rate * n:.0f}" for k, rate in report.property_pass_rates.items())
          + f", colours {report.colors_per_video:.2f}", flush=True)

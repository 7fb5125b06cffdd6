"""The demo (trained with independent noise per frame) sampled as by default (guided, UniPC 6, restarted
once; fp32, 2 threads) with frame-correlated noise at sampling time only (vdm.diffusion.correlate_frames:
every two frames' noise `C`-correlated): in the initial noise, in the restart's fresh noise, or both.
If each frame chose its colour from its own noise, noise shared by the frames would make them agree.
    python benchmarks/results/demo-input-perturbation-cpu-2026-12-06/correlated_noise.py N SEED init|restart|both C..."""
import sys

import torch

import vdm.runtime.generator as generator_module
import vdm.runtime.sampling as sampling
from vdm.demo import DEMO_CHECKPOINT, DEMO_GUIDE, DEMO_GUIDE_WEIGHT, DEMO_RESTARTS
from vdm.diffusion import correlate_frames
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import AutoguidedBackend
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(2)
n, seed, where = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
net = load_backend("torch", DEMO_CHECKPOINT, "cpu", "fp32")
guide = load_backend("torch", DEMO_GUIDE, "cpu", "fp32")
independent_initial_noise, independent_noised_again = sampling.initial_noise, sampling.noised_again
for c in map(float, sys.argv[4:]):
    def initial_noise(shape, s, device, _trained_correlation=0.0, c=c):
        return independent_initial_noise(shape, s, device, c if where in ("init", "both") else 0.0)

    def noised_again(videos, sampler, generator, c=c):
        """vdm's own, with the restart sampler's fresh noise correlated (UniPC draws none in its steps)."""
        if where in ("restart", "both"):
            fresh_noise = sampler.fresh_noise
            sampler.fresh_noise = lambda x, g: correlate_frames(fresh_noise(x, g), c)
        return independent_noised_again(videos, sampler, generator)

    generator_module.initial_noise, sampling.noised_again = initial_noise, noised_again
    gen = VideoGenerator(backend=AutoguidedBackend(net, guide, DEMO_GUIDE_WEIGHT))
    videos = torch.cat([gen.generate(32, seed=seed + i, restarts=parse_restarts(DEMO_RESTARTS)) for i in range(n // 32)])
    report = score_videos(videos)
    print(f"{where} corr {c:g}: {sum(v.passed for v in report.videos)}/{n} pass, "
          + ", ".join(f"{k} {rate * n:.0f}" for k, rate in report.property_pass_rates.items())
          + f", colours {report.colors_per_video:.2f}", flush=True)

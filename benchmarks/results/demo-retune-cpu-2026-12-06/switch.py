"""The demo sampled as by default (guided by its guide at 1.5, UniPC 6, restarted once from SNR 0.01 in
6 steps), with its network handed over to another where SNR(t) >= SWITCH: HIGH predicts where
SNR(t) < SWITCH, LOW above, the guide guides both. LOW may predict the clean video (a palette
network): its x0, clamped, becomes the v the sampler expects.
Scores N videos from SEED, fp32, one thread (run from the repository root, venv active):
  python benchmarks/results/demo-retune-cpu-2026-12-06/switch.py HIGH LOW SWITCH [N] [SEED]"""
import sys

import torch

from vdm.demo import DEMO_GUIDE, DEMO_GUIDE_WEIGHT, DEMO_RESTARTS
from vdm.diffusion import Schedule, split_prediction, v_target
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import AutoguidedBackend
from vdm.runtime.backend import Backend, load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(1)
high_path, low_path, switch = sys.argv[1], sys.argv[2], float(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 256
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
high, low = (load_backend("torch", path, "cpu", "fp32") for path in (high_path, low_path))
assert high.diffusion_config.prediction == "v", "HIGH must be a v-prediction network, as the demo is"
alphas_cumprod = torch.as_tensor(Schedule.from_config(high.diffusion_config).alphas_cumprod)
snr = alphas_cumprod / (1 - alphas_cumprod)  # (num_timesteps,)


def as_v(out: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
    """LOW's output (B, C, T, H, W) as a v prediction."""
    if low.diffusion_config.prediction == "v":
        return out
    abar = alphas_cumprod[t]
    x0, eps = split_prediction(out, x, float(abar), low.diffusion_config.prediction)  # x0 clamped to [-1, 1]
    return v_target(x0, eps, abar)


class Switched(type(high)):
    """HIGH's backend with predict() handing the low-noise timesteps to LOW (one timestep per batch)."""

    def __init__(self, high: Backend):
        self.__dict__.update(high.__dict__)

    def predict(self, x, t, y):
        step = int(t[0])
        return as_v(low.predict(x, t, y), x, step) if float(snr[step]) >= switch else high.predict(x, t, y)


guide = load_backend("torch", DEMO_GUIDE, "cpu", "fp32")
backend = AutoguidedBackend(Switched(high), guide, DEMO_GUIDE_WEIGHT)
videos = VideoGenerator(backend=backend).generate(n, seed=seed, restarts=parse_restarts(DEMO_RESTARTS))
report = score_videos(videos)
print(f"{high_path} below SNR {switch:g}, {low_path} above: {sum(v.passed for v in report.videos)}/{n} pass, "
      + ", ".join(f"{k} {rate * n:.0f}" for k, rate in report.property_pass_rates.items())
      + f", colours {report.colors_per_video:.2f}")

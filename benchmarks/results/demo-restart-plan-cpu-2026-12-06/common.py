"""What this folder's scripts share: the demo guided as it samples by default (weight 1.5), its first
pass (UniPC 6), a restart pass on an explicit plan started from the same fresh noise as vdm-run's, and
the tally each prints.    env DEMO (vdm/demo/demo.safetensors), THREADS (2), PRECISION (fp32)"""
import os

import numpy as np
import torch

from vdm.diffusion import Schedule
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.runtime import sampling
from vdm.runtime.sampling import step_generator
from vdm.samplers import Sampler, UniPC

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
DEMO = os.environ.get("DEMO", "vdm/demo/demo.safetensors")
GUIDE = "vdm/demo/guide.safetensors"
PRECISION = os.environ.get("PRECISION", "fp32")  # bf16: as `vdm-eval` samples on a CPU with AVX-512 bf16
BATCH = 8


def load_guided(weight: float = 1.5):
    return load_autoguided("torch", DEMO, GUIDE, weight, "cpu", PRECISION)


def first_pass(guided, n: int, seed0: int) -> list[torch.Tensor]:
    """n videos from noise, in batches of BATCH (B, C, T, H, W), batch b from seed seed0 + b."""
    gen = VideoGenerator(backend=guided)
    return [gen.generate(BATCH, seed=seed0 + b, sampler="unipc", num_steps=6) for b in range(n // BATCH)]


def plan_sampler(alphas_cumprod: np.ndarray, plan: list[int], sampler_type: type[Sampler] = UniPC) -> Sampler:
    """A sampler calling the network on exactly `plan`'s timesteps (noisiest first, ending at 0)."""
    sampler = sampler_type(alphas_cumprod, len(plan))
    sampler.timesteps, sampler.abars = plan, [float(alphas_cumprod[t]) for t in plan] + [1.0]
    sampler.reset()
    return sampler


def noised_again(videos: torch.Tensor, sampler: Sampler, seed: int) -> tuple[torch.Tensor, torch.Generator]:
    """The finished videos noised to the plan's first timestep, with the fresh noise sample_plan draws
    for that seed's restart; and the generator, for the pass to go on with."""
    generator = step_generator(seed, torch.device("cpu"))
    return sampling.noised_again(videos, sampler, generator), generator


def schedule_of(guided) -> np.ndarray:
    return Schedule.from_config(guided.diffusion_config).alphas_cumprod


def tally(videos: torch.Tensor) -> str:
    """Videos passing, keeping their count, passing `shape`, with no shape at all; colours per video."""
    report = score_videos(videos)
    count = lambda test: sum(bool(test(v)) for v in report.videos)
    return (f"pass {count(lambda v: v.passed):3d}/{len(videos)}  count kept {count(lambda v: v.properties['count'].passed):3d}"
            f"  shape {count(lambda v: v.properties['shape'].passed):3d}"
            f"  blank {count(lambda v: '0 shapes' in v.properties['count'].detail):2d}"
            f"  colours {report.colors_per_video:.2f}")

"""The sampling loop, written once for every backend: DDPM/DDIM, classifier-free guidance, DDIM inversion.

The latent stays on the backend's device in float32 for the whole loop; per-step coefficients are
Python floats taken from the float64 schedule, so no step copies anything to or from the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from vdm.diffusion import (Schedule, abar_before, ddim_sigma, ddim_step, ddpm_step, sampling_timesteps,
                           split_prediction)
from vdm.runtime.backend import Backend

SamplerKind = Literal["ddpm", "ddim"]


@dataclass
class SamplingOptions:
    sampler: SamplerKind = "ddim"  # DDIM (deterministic at eta=0) or DDPM ancestral sampling
    num_steps: int = 50  # network calls (a respaced subset of the training timesteps)
    eta: float = 0.0  # DDIM stochasticity: 0 deterministic, 1 matches DDPM's variance
    guidance: float = 1.0  # classifier-free guidance scale (1 = plain conditional prediction)
    clip_x0: bool = True  # clamp the predicted clean video to [-1, 1] at each step


def guided_prediction(backend: Backend, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                      guidance: float) -> torch.Tensor:
    """The network output, with classifier-free guidance as one batched call of [conditional; null-class]."""
    if y is None or guidance == 1.0:
        return backend.predict(x, t, y)
    null = torch.full_like(y, backend.model_config.num_classes)
    out = backend.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def initial_noise(shape: tuple[int, ...], seed: int | None, device: torch.device) -> torch.Tensor:
    """x_T: drawn on the CPU from `seed` then moved once, so a seed gives the same noise on every device."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(shape, generator=generator).to(device)


def step_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """The generator for per-step noise (DDPM, DDIM eta>0): lives on the device, so no per-step copies."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed + 1)


def sample(backend: Backend, noise: torch.Tensor, options: SamplingOptions, y: torch.Tensor | None = None,
           generator: torch.Generator | None = None,
           on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Denoise x_T = noise (B, C, T, H, W) into videos (B, C, T, H, W) in [-1, 1]."""
    schedule = Schedule.from_config(backend.diffusion_config)
    timesteps = sampling_timesteps(schedule.num_timesteps, options.num_steps)
    batch = noise.shape[0]
    t_all = torch.tensor(timesteps, device=noise.device).unsqueeze(1).expand(-1, batch)  # (steps, B), one copy
    x = noise.float()
    for i, t in enumerate(timesteps):
        out = guided_prediction(backend, x, t_all[i], y, options.guidance)
        abar_t = float(schedule.alphas_cumprod[t])
        abar_prev = abar_before(schedule.alphas_cumprod, timesteps, i)
        x0, eps = split_prediction(out, x, abar_t, schedule.prediction, options.clip_x0)
        last = i == len(timesteps) - 1
        if options.sampler == "ddim":
            sigma = 0.0 if last else ddim_sigma(abar_t, abar_prev, options.eta)
            z = torch.randn(x.shape, generator=generator, device=x.device) if sigma > 0 else None
            x = ddim_step(x0, eps, abar_prev, sigma, z)
        elif options.sampler == "ddpm":
            z = None if last else torch.randn(x.shape, generator=generator, device=x.device)
            x = ddpm_step(x, x0, abar_t, abar_prev, z)
        else:
            raise ValueError(f"unknown sampler {options.sampler!r}; use 'ddpm' or 'ddim'")
        if on_step is not None:
            on_step(i, len(timesteps))
    return x.clamp(-1, 1)


def ddim_invert(backend: Backend, video: torch.Tensor, num_steps: int, y: torch.Tensor | None = None,
                guidance: float = 1.0) -> torch.Tensor:
    """Run deterministic DDIM backwards: a clean video (B, C, T, H, W) -> the x_T that DDIM decodes to it."""
    schedule = Schedule.from_config(backend.diffusion_config)
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps)[::-1]  # ascending: clean -> noise
    batch = video.shape[0]
    x = video.float()
    abar_cur = 1.0
    for t in timesteps:
        t_batch = torch.full((batch,), t, device=x.device, dtype=torch.long)
        out = guided_prediction(backend, x, t_batch, y, guidance)
        abar_next = float(schedule.alphas_cumprod[t])
        # The network sees x at the next timestep: the usual first-order DDIM-inversion approximation.
        _, eps = split_prediction(out, x, abar_next, schedule.prediction, clip=False)
        x0 = (x - math.sqrt(1 - abar_cur) * eps) / math.sqrt(abar_cur)
        x = math.sqrt(abar_next) * x0 + math.sqrt(1 - abar_next) * eps
        abar_cur = abar_next
    return x


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors of the same shape (weight 0 -> a, 1 -> b)."""
    a_flat, b_flat = a.flatten(), b.flatten()
    cos = torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm())
    omega = torch.arccos(cos.clamp(-1, 1)).item()
    if omega < 1e-6:
        return (1 - weight) * a + weight * b
    return (math.sin((1 - weight) * omega) * a + math.sin(weight * omega) * b) / math.sin(omega)

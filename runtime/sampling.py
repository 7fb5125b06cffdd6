"""The sampling loop, written once for every backend and sampler: classifier-free guidance,
seeding, restarts, DDIM inversion.

The loop asks the network for its prediction and hands it to a sampler (vdm/samplers.py), which
owns the update rule and any multistep state. The latent stays on the backend's device in float32
for the whole loop; per-step coefficients are Python floats taken from the float64 schedule, so no
step copies anything to or from the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from vdm.config import ModelConfig
from vdm.diffusion import Schedule, correlate_frames, split_prediction, timestep_at_snr, with_estimate
from vdm.errors import VdmError
from vdm.runtime.backend import Backend
from vdm.samplers import Restart, Sampler, make_sampler


def network_batch(num_samples: int, guidance: float) -> int:
    """The batch the network sees: guidance runs the conditional and null-class halves as one call."""
    return num_samples * (2 if guidance != 1.0 else 1)


def guided_prediction(backend: Backend, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                      guidance: float) -> torch.Tensor:
    """The network output, with classifier-free guidance as one batched call of [conditional; null-class]."""
    if y is None or guidance == 1.0:
        return backend.predict(x, t, y)
    null = torch.full_like(y, backend.model_config.null_class)
    out = backend.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def network_input(model_config: ModelConfig, x: torch.Tensor, estimate: torch.Tensor | None = None) -> torch.Tensor:
    """What the network reads for the latent x (B, C, T, H, W): x itself, or for a self-conditioning
    network x and its clean-video estimate (zeros where there is none yet), (B, 2C, T, H, W)."""
    if not model_config.self_condition:
        return x
    return with_estimate(x, torch.zeros_like(x) if estimate is None else estimate)


def initial_noise(shape: tuple[int, ...], seed: int | None, device: torch.device,
                  frame_noise_correlation: float = 0.0) -> torch.Tensor:
    """x_T (B, C, T, H, W): drawn on the CPU from `seed` then moved once, so a seed gives the same noise
    on every device; its frames correlated as the model was trained (DiffusionConfig)."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return correlate_frames(torch.randn(shape, generator=generator), frame_noise_correlation).to(device)


def step_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """The generator for per-step noise (DDPM, DDIM eta>0): lives on the device, so no per-step copies."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed + 1)


def sampler_for(backend: Backend, name: str, num_steps: int, spacing: str | None = None,
                eta: float = 0.0, start: int | None = None) -> Sampler:
    """Sampler `name` (vdm.samplers.SAMPLERS) on the training schedule of the backend's model.

    With `start`, its plan spans timestep `start` (not T-1) down to 0: it finishes a video already
    noised to that timestep. The sampler sees the schedule cut after `start`, so every spacing rule
    applies unchanged.
    """
    diffusion = backend.diffusion_config
    alphas_cumprod = Schedule.from_config(diffusion).alphas_cumprod
    if start is not None:
        alphas_cumprod = alphas_cumprod[: start + 1]
    return make_sampler(name, alphas_cumprod, num_steps, spacing, eta, diffusion.frame_noise_correlation)


def sampler_from_snr(backend: Backend, name: str, num_steps: int, snr: float, spacing: str | None = None,
                     eta: float = 0.0) -> Sampler:
    """Sampler `name` finishing videos noised to the timestep nearest `snr`: its plan starts there, in
    `num_steps` calls (fewer where fewer timesteps lie below)."""
    start = timestep_at_snr(Schedule.from_config(backend.diffusion_config).alphas_cumprod, snr)
    return sampler_for(backend, name, min(num_steps, start + 1), spacing, eta, start=start)


def sample(backend: Backend, noise: torch.Tensor, sampler: Sampler, y: torch.Tensor | None = None,
           guidance: float = 1.0, generator: torch.Generator | None = None, clip_x0: bool = True,
           on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Denoise x_T = noise (B, C, T, H, W) into videos (B, C, T, H, W) in [-1, 1].

    One network call per sampler step; `clip_x0` clamps each predicted clean video to [-1, 1]. A
    latent that turns NaN or infinite is an error naming the first step it happened at, found
    without a per-step host sync (the step is recorded on the device and read once at the end).
    """
    prediction = backend.diffusion_config.prediction
    sampler.reset()
    num_steps = len(sampler.timesteps)
    t_all = torch.tensor(sampler.timesteps, device=noise.device).unsqueeze(1).expand(-1, noise.shape[0])  # (steps, B)
    steps = torch.arange(num_steps, device=noise.device)
    first_bad = torch.full((), num_steps, device=noise.device)  # num_steps: every latent was finite
    x = noise.float()
    x0 = None  # the previous step's clean-video estimate, which a self-conditioning network reads
    for i in range(num_steps):
        out = guided_prediction(backend, network_input(backend.model_config, x, x0), t_all[i], y, guidance)
        x0, eps = split_prediction(out, x, sampler.abars[i], prediction, clip_x0)
        x = sampler.step(i, x, x0, eps, generator)
        first_bad = torch.where(torch.isfinite(x).all(), first_bad, torch.minimum(first_bad, steps[i]))
        if on_step is not None:
            on_step(i, num_steps)
    check_finite_latent(int(first_bad), sampler, backend)
    return x.clamp(-1, 1)


@dataclass
class SamplingPlan:
    """What a generation runs: `sampler` from pure noise, then each restart pass's sampler, whose plan
    starts at its restart's timestep (vdm.samplers.Restart)."""

    sampler: Sampler
    restarts: tuple[Sampler, ...] = ()

    @property
    def passes(self) -> tuple[Sampler, ...]:
        return (self.sampler, *self.restarts)

    @property
    def num_calls(self) -> int:
        """Network calls over every pass."""
        return sum(len(sampler.timesteps) for sampler in self.passes)

    def describe(self) -> str:
        if not self.restarts:
            return self.sampler.describe()
        again = ", ".join(f"t={r.timesteps[0]} in {len(r.timesteps)} steps" for r in self.restarts)
        return f"{self.sampler.describe()}; restarted from {again} ({self.num_calls} network calls)"


def sampling_plan(backend: Backend, name: str, num_steps: int, spacing: str | None = None, eta: float = 0.0,
                  restarts: Sequence[Restart] = ()) -> SamplingPlan:
    """The sampler `name` for a generation from noise, then one of its kind per restart (sampler_from_snr)."""
    restarted = tuple(sampler_from_snr(backend, name, r.steps, r.snr, spacing, eta) for r in restarts)
    return SamplingPlan(sampler_for(backend, name, num_steps, spacing, eta), restarted)


def noised_again(videos: torch.Tensor, sampler: Sampler, generator: torch.Generator | None) -> torch.Tensor:
    """Finished videos (B, C, T, H, W) noised to `sampler`'s first timestep with fresh noise from
    `generator`: where a restart pass starts."""
    abar = sampler.abars[0]
    return math.sqrt(abar) * videos + math.sqrt(1 - abar) * sampler.fresh_noise(videos, generator)


def sample_plan(backend: Backend, noise: torch.Tensor, plan: SamplingPlan, y: torch.Tensor | None = None,
                guidance: float = 1.0, generator: torch.Generator | None = None,
                on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """sample() from x_T = noise (B, C, T, H, W), then each restart: the videos noised again to the
    restart's first timestep with fresh noise (from `generator`, on the device) and finished again.
    on_step counts network calls over every pass."""
    done = 0

    def counted(i: int, _: int) -> None:
        on_step(done + i, plan.num_calls)

    per_call = counted if on_step is not None else None
    videos = noise
    for k, sampler in enumerate(plan.passes):
        if k:  # a restart: noised again from the finished videos
            videos = noised_again(videos, sampler, generator)
        videos = sample(backend, videos, sampler, y, guidance, generator, on_step=per_call)
        done += len(sampler.timesteps)
    return videos


class SamplingDiverged(VdmError):
    """The sampling loop produced NaN/inf: nothing is written (exit 1, a failed run, not a misused flag)."""

    exit_code = 1


def check_finite_latent(first_bad: int, sampler: Sampler, backend: Backend) -> None:
    """Raise when the loop's latent stopped being finite (at step index first_bad < the step count)."""
    if first_bad >= len(sampler.timesteps):
        return
    raise SamplingDiverged(f"the latent became NaN/inf at sampling step {first_bad + 1} of {len(sampler.timesteps)} "
                           f"(t={sampler.timesteps[first_bad]}) on {backend.describe()}: the network's output is "
                           "not finite (NaN weights, or an overflow in a low precision: try --precision fp32); "
                           "no videos were written")


def ddim_invert(backend: Backend, video: torch.Tensor, timesteps: list[int], y: torch.Tensor | None = None,
                guidance: float = 1.0) -> torch.Tensor:
    """Run deterministic DDIM backwards over `timesteps` (a DDIM plan, noisiest first): a clean video
    (B, C, T, H, W) -> the x_T that DDIM on that plan decodes back to it."""
    alphas_cumprod = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    prediction = backend.diffusion_config.prediction
    batch = video.shape[0]
    x = clean = video.float()
    abar_cur = 1.0
    for t in reversed(timesteps):  # ascending: clean -> noise
        t_batch = torch.full((batch,), t, device=x.device, dtype=torch.long)
        # A self-conditioning network's estimate is the clean video itself: here it is known.
        out = guided_prediction(backend, network_input(backend.model_config, x, clean), t_batch, y, guidance)
        abar_next = float(alphas_cumprod[t])
        # The network sees x at the next timestep: the usual first-order DDIM-inversion approximation.
        _, eps = split_prediction(out, x, abar_next, prediction, clip=False)
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

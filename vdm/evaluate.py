"""How good is a model? Sample quality on the bouncing shapes, and the held-out denoising loss (vdm-eval).

Two numbers, both for models trained on the synthetic bouncing shapes (`--data synthetic`):

- the pass rate of generated videos under `vdm.metrics` (do they obey the data's rules?), and
- the denoising loss on clips the model never saw in training: data seed HELD_OUT_SEED, fixed
  timesteps spread over the whole schedule, fixed noise. It needs only `backend.predict`, so it
  compares backends and precisions of one model as well as checkpoints of one run.
"""
from __future__ import annotations

import torch

from vdm.errors import VdmError
from vdm.runtime.backend import Backend

HELD_OUT_SEED = 10_000  # data (and noise) seed of the held-out clips; training uses TrainConfig.seed (0)
LOSS_BATCH_SIZE = 8  # clips per held-out loss batch


def loss_timesteps(num_timesteps: int, batches: int, batch_size: int) -> torch.Tensor:
    """(batches, batch_size) int64: batches * batch_size timesteps evenly spread over the schedule,
    dealt out so that every batch spans it from low to high noise."""
    count = batches * batch_size
    spread = ((torch.arange(count, dtype=torch.float64) + 0.5) * num_timesteps / count).long()
    return spread.reshape(batch_size, batches).T  # batch i takes every batches-th timestep from i


def held_out_loss(backend: Backend, batches: int, batch_size: int = LOSS_BATCH_SIZE,
                  seed: int = HELD_OUT_SEED) -> float:
    """Mean training loss (vdm.diffusion.training_loss) of `backend` over `batches` held-out batches.

    Batch i: synthetic clips i*B .. i*B + B - 1 of data seed `seed` at the model's frames and size,
    the i-th row of `loss_timesteps`, and noise from generator seed `seed + i` (drawn on the CPU, so
    every device sees the same). A class-conditional model is asked for its unconditional prediction.
    """
    from vdm.data import SyntheticShapes
    from vdm.diffusion import Schedule, q_sample, training_loss

    cfg = backend.model_config
    if cfg.in_channels != 3:
        raise VdmError(f"the held-out loss uses RGB clips; this model has {cfg.in_channels} channels "
                       f"(pass --loss-batches 0 to skip it)")
    backend.check_shape(batch_size, cfg.frames, cfg.size, cfg.size)
    schedule = Schedule.from_config(backend.diffusion_config)
    data = SyntheticShapes(cfg.frames, cfg.size, seed=seed)
    timesteps = loss_timesteps(schedule.num_timesteps, batches, batch_size)
    y = torch.full((batch_size,), cfg.null_class, device=backend.device) if cfg.conditional else None
    losses = []
    for i in range(batches):
        x0 = data.batch(i, batch_size)  # (B, C, T, H, W)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i))
        x0, noise, t = x0.to(backend.device), noise.to(backend.device), timesteps[i].to(backend.device)
        x_t = q_sample(x0, t, noise, schedule.alphas_cumprod)
        losses.append(training_loss(backend.predict(x_t, t, y), x0, noise, t, schedule).item())
    return sum(losses) / len(losses)

"""How good is a model? Sample quality on the bouncing shapes, and the held-out denoising loss (vdm-eval).

Two numbers, both for models trained on the synthetic bouncing shapes (`--data synthetic`):

- the pass rate of generated videos under `vdm.metrics` (do they obey the data's rules?), and
- the denoising loss on clips the model never saw in training: data seed HELD_OUT_SEED, fixed
  timesteps spread over the whole schedule, fixed noise. It needs only `backend.predict`, so it
  compares backends and precisions of one model as well as checkpoints of one run.

And a diagnosis: the same metric on the clean videos the network predicts in one call from
held-out clips noised to one signal-to-noise ratio (`one_step_videos`). Sampling from pure noise
decides a video's content at high noise, from the network's own earlier guesses; from a real clip
at the same noise, the network only has to keep what the clip says. A model that keeps a clip's
colours there but whose sampled videos change colour fails in sampling, not in reading the clip.
And its sequel (`finished_videos`): the sampler run to the end from such clips, at several SNRs,
locates the noise levels where sampled videos lose what the metric asks for.
"""
from __future__ import annotations

from typing import Iterator

import torch

from vdm.diffusion import correlate_frames, timestep_at_snr
from vdm.errors import VdmError
from vdm.runtime.backend import Backend
from vdm.runtime.sampling import network_input, sample, sampler_from_snr, step_generator

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

    Batch i: the clips and noise of `held_out_batches`, at the i-th row of `loss_timesteps`. A
    class-conditional model is given each clip's own label, as in training. An x0 model (a palette model)
    is scored on the v its clean video implies, so its loss compares with a v model's.
    """
    from vdm.diffusion import Schedule, gather, implied_v_loss, q_sample, training_loss

    schedule = Schedule.from_config(backend.diffusion_config)
    timesteps = loss_timesteps(schedule.num_timesteps, batches, batch_size)
    losses = []
    clips = held_out_batches(backend, batches, batch_size, seed, "the held-out loss")
    for i, ((x0, noise), y) in enumerate(zip(clips, held_out_labels(backend, batches, batch_size, seed))):
        t = timesteps[i].to(backend.device)
        x_t = q_sample(x0, t, noise, schedule.alphas_cumprod)
        out = backend.predict(network_input(backend.model_config, x_t), t, y)  # no self-conditioning estimate
        loss = (implied_v_loss(out, x0, gather(schedule.alphas_cumprod, t, x0.ndim)) if schedule.prediction == "x0"
                else training_loss(out, x0, noise, t, schedule))
        losses.append(loss.item())
    return sum(losses) / len(losses)


def one_step_videos(backend: Backend, snr: float, batches: int, batch_size: int = LOSS_BATCH_SIZE,
                    seed: int = HELD_OUT_SEED) -> tuple[torch.Tensor, int]:
    """The clean videos (N, C, T, H, W) the network predicts in one call from the held-out clips of
    `held_out_loss` noised to the timestep whose SNR is nearest `snr`, and that timestep."""
    from vdm.diffusion import Schedule, q_sample, split_prediction

    schedule = Schedule.from_config(backend.diffusion_config)
    abar = schedule.alphas_cumprod
    step = timestep_at_snr(abar, snr)
    t = torch.full((batch_size,), step, device=backend.device)
    videos = []
    clips = held_out_batches(backend, batches, batch_size, seed, "the one-step check")
    for (x0, noise), y in zip(clips, held_out_labels(backend, batches, batch_size, seed)):
        x_t = q_sample(x0, t, noise, abar)
        out = backend.predict(network_input(backend.model_config, x_t), t, y)  # one call: no estimate yet
        videos.append(split_prediction(out, x_t, float(abar[step]), schedule.prediction)[0])
    return torch.cat(videos), step


def finished_videos(backend: Backend, snr: float, sampler_name: str, num_steps: int, spacing: str | None,
                    batches: int, batch_size: int = LOSS_BATCH_SIZE,
                    seed: int = HELD_OUT_SEED) -> tuple[torch.Tensor, list[int]]:
    """The videos (N, C, T, H, W) a sampler finishes from the held-out clips of `held_out_loss` noised
    to the timestep whose SNR is nearest `snr`, and its plan: `num_steps` calls (fewer where the
    schedule has fewer timesteps below) from that timestep down to 0.

    Where one_step_videos asks whether one call keeps a clip's content, this asks whether the whole
    rest of sampling does. The pass rate against `snr` shows at which noise levels a model loses
    what its sampled videos lack.
    """
    from vdm.diffusion import Schedule, q_sample

    abar = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    sampler = sampler_from_snr(backend, sampler_name, num_steps, snr, spacing)
    t = torch.full((batch_size,), sampler.timesteps[0], device=backend.device)
    videos = []
    clips = held_out_batches(backend, batches, batch_size, seed, "the finishing check")
    for i, ((x0, noise), y) in enumerate(zip(clips, held_out_labels(backend, batches, batch_size, seed))):
        x_t = q_sample(x0, t, noise, abar)
        videos.append(sample(backend, x_t, sampler, y, generator=step_generator(seed + i, backend.device)))
    return torch.cat(videos), sampler.timesteps


def held_out_batches(backend: Backend, batches: int, batch_size: int, seed: int,
                     purpose: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batch i: synthetic clips i*B .. i*B + B - 1 of data seed `seed` at the model's frames and size,
    and noise from generator seed `seed + i` (drawn on the CPU, so every device sees the same), both
    (B, C, T, H, W) on the backend's device."""
    from vdm.data import SyntheticShapes

    cfg = backend.model_config
    if cfg.in_channels != 3:
        raise VdmError(f"{purpose} uses RGB clips; this model has {cfg.in_channels} channels")
    backend.check_shape(batch_size, cfg.frames, cfg.size, cfg.size)
    data = SyntheticShapes(cfg.frames, cfg.size, seed=seed)
    for i in range(batches):
        x0 = data.batch(i, batch_size)  # (B, C, T, H, W)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i))
        noise = correlate_frames(noise, backend.diffusion_config.frame_noise_correlation)  # as in training
        yield x0.to(backend.device), noise.to(backend.device)


def held_out_shape_counts(backend: Backend, batches: int, batch_size: int = LOSS_BATCH_SIZE,
                          seed: int = HELD_OUT_SEED) -> list[int]:
    """How many shapes each clip of `held_out_batches` holds (1-3), in order."""
    from vdm.data import SyntheticShapes

    cfg = backend.model_config
    data = SyntheticShapes(cfg.frames, cfg.size, seed=seed)
    return [len(data.tracks(i)) for i in range(batches * batch_size)]


def passes_by_shape_count(passed: list[bool], shape_counts: list[int]) -> dict[int, tuple[int, int]]:
    """{shapes in the clip: (videos passing, videos)} for videos made from held-out clips."""
    table: dict[int, tuple[int, int]] = {}
    for ok, shapes in zip(passed, shape_counts, strict=True):
        passing, total = table.get(shapes, (0, 0))
        table[shapes] = (passing + ok, total + 1)
    return dict(sorted(table.items()))


def held_out_labels(backend: Backend, batches: int, batch_size: int, seed: int) -> list[torch.Tensor | None]:
    """Per batch of `held_out_batches`, the labels a class-conditional model is given: (B,) int64, each
    clip's own (vdm.data.data_labels, as training gives them, so the checks ask what sampling with the
    data's labels asks); None per batch for an unconditional model."""
    from vdm.data import data_labels

    cfg = backend.model_config
    if not cfg.conditional:
        return [None] * batches
    labels = torch.tensor(data_labels(cfg.class_label, batches * batch_size, seed), device=backend.device)
    return list(labels.reshape(batches, batch_size))  # one copy to the device for every batch

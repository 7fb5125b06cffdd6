"""`vdm-eval`: how good is a model? Sample quality on the bouncing shapes, and the held-out denoising loss.

Two numbers, both for models trained on the synthetic bouncing shapes (`--data synthetic`):

- the pass rate of generated videos under `vdm.metrics` (do they obey the data's rules?), and
- the denoising loss on clips the model never saw in training: data seed HELD_OUT_SEED, fixed
  timesteps spread over the whole schedule, fixed noise. It needs only `backend.predict`, so it
  compares backends and precisions of one model as well as checkpoints of one run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from vdm.errors import VdmError, cli_errors
from vdm.runtime.backend import BACKENDS, Backend, synchronize
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SPACINGS

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
    y = torch.full((batch_size,), cfg.num_classes, device=backend.device) if cfg.conditional else None
    losses = []
    for i in range(batches):
        x0 = data.batch(i, batch_size)  # (B, C, T, H, W)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + i))
        x0, noise, t = x0.to(backend.device), noise.to(backend.device), timesteps[i].to(backend.device)
        x_t = q_sample(x0, t, noise, schedule.alphas_cumprod)
        losses.append(training_loss(backend.predict(x_t, t, y), x0, noise, t, schedule).item())
    return sum(losses) / len(losses)


def check_flags(num_samples: int, steps: int, loss_batches: int, json_path: str | None) -> None:
    """Flag mistakes, before anything loads."""
    if num_samples < 1:
        raise VdmError(f"--num-samples must be at least 1, got {num_samples}")
    if steps < 1:
        raise VdmError(f"--steps must be at least 1, got {steps}")
    if loss_batches < 0:
        raise VdmError(f"--loss-batches must be 0 (skip the held-out loss) or more, got {loss_batches}")
    if json_path is not None and not Path(json_path).parent.is_dir():
        raise VdmError(f"--json {json_path}: directory {Path(json_path).parent} does not exist; create it first")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path())
@click.option("--backend", default="torch", show_default=True, type=click.Choice(list(BACKENDS)))
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--num-samples", "-n", default=16, show_default=True, type=int, help="Videos to generate and score.")
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int, help="Sampling steps (network calls).")
@click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True, type=click.Choice(list(SAMPLERS)))
@click.option("--spacing", type=click.Choice(SPACINGS), help="Timesteps of the steps (default: the sampler's own).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampled videos.")
@click.option("--loss-batches", default=4, show_default=True, type=int,
              help=f"Held-out batches of {LOSS_BATCH_SIZE} clips for the denoising loss; 0 skips it.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the full report here.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(model, backend, device, num_samples, steps, sampler, spacing, seed, loss_batches, json_path, debug):
    """Score MODEL (a checkpoint .safetensors or an exported bundle directory) trained on the synthetic
    bouncing shapes: the pass rate of generated videos under vdm.metrics, and the held-out loss.

    Without MODEL, the bundled demo model is used.
    """
    from vdm.atomic import atomic_write_text
    from vdm.metrics import score_videos
    from vdm.runtime.generator import VideoGenerator

    check_flags(num_samples, steps, loss_batches, json_path)
    if model is None:
        from vdm.demo import demo_model_path

        model = demo_model_path(backend)
        click.echo(f"model: the bundled demo ({model})")
    seconds = {}
    start = time.perf_counter()
    generator = VideoGenerator(model, backend=backend, device=device)
    seconds["load"] = time.perf_counter() - start
    click.echo(f"backend: {generator.backend.describe()}, loaded in {seconds['load']:.2f} s")

    start = time.perf_counter()
    videos = generator.generate(num_samples, num_steps=steps, sampler=sampler, spacing=spacing,
                                seed=seed)  # (N, C, T, H, W)
    synchronize(generator.device)
    seconds["sample"] = time.perf_counter() - start
    click.echo(f"sampled {num_samples} videos {tuple(videos.shape[1:])} ({sampler}, {steps} steps, "
               f"seed {seed}) in {seconds['sample']:.2f} s")

    start = time.perf_counter()
    report = score_videos(videos)
    seconds["score"] = time.perf_counter() - start
    click.echo(report.summary())

    loss = None
    if loss_batches:
        start = time.perf_counter()
        loss = held_out_loss(generator.backend, loss_batches)
        seconds["loss"] = time.perf_counter() - start
        click.echo(f"held-out loss {loss:.4f} ({loss_batches} x {LOSS_BATCH_SIZE} clips, data seed "
                   f"{HELD_OUT_SEED}) in {seconds['loss']:.2f} s")

    if json_path is not None:
        result = {
            "model": str(model), "backend": generator.backend.describe(), "num_samples": num_samples,
            "steps": steps, "sampler": sampler, "spacing": spacing or SAMPLERS[sampler].default_spacing,
            "seed": seed, "video_shape": list(videos.shape[1:]),
            "held_out_loss": loss, "loss_batches": loss_batches, "loss_batch_size": LOSS_BATCH_SIZE,
            "held_out_seed": HELD_OUT_SEED, "seconds": seconds, **report.to_dict(),
        }
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()

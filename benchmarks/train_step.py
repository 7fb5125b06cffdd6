"""How fast does one training step run on this CPU, per memory layout and thread count?

    python benchmarks/train_step.py [--preset tiny] [--batch-size 4] [--threads 1 --threads 2]

Times the UNet's forward + backward (mean-square loss) at the preset's clip shape, in the default
(contiguous) layout and in channels-last 3D, the layout `vdm.train.Trainer` uses on CPU. Prints the
CPU, its flags, the software versions and the median of 7 timed steps after warm-up.
"""
from __future__ import annotations

import datetime
import platform

import click
import torch

from cpu_precision_probe import BF16_FLAGS, cpu_name, median_seconds  # the sibling script: benchmarks/ is on sys.path
from vdm.config import get_preset
from vdm.runtime.precision import cpu_flags
from vdm.unet import Unet3D

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}


def step_seconds(preset: str, batch_size: int, memory_format: torch.memory_format, runs: int = 7) -> float:
    """Median seconds of forward + backward for one batch of random clips."""
    settings = get_preset(preset)
    cfg = settings.model
    torch.manual_seed(0)
    model = Unet3D(cfg).to(memory_format=memory_format)
    x = torch.randn(batch_size, cfg.in_channels, cfg.frames, cfg.size, cfg.size)  # (B, C, T, H, W)
    x = x.contiguous(memory_format=memory_format)
    t = torch.randint(0, settings.diffusion.num_timesteps, (batch_size,))

    def step():
        model.zero_grad(set_to_none=True)
        model(x, t).square().mean().backward()

    return median_seconds(step, runs=runs)


@click.command()
@click.option("--preset", default="tiny", show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--threads", "thread_counts", type=int, multiple=True, default=(1, 2), show_default=True)
def main(preset: str, batch_size: int, thread_counts: tuple[int, ...]):
    flags = cpu_flags()
    print(f"{datetime.date.today()}  {cpu_name()}  flags: {' '.join(f for f in BF16_FLAGS if f in flags) or 'none'}")
    print(f"python {platform.python_version()}, torch {torch.__version__}; preset {preset}, batch {batch_size}")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        seconds = {name: step_seconds(preset, batch_size, fmt) for name, fmt in LAYOUTS.items()}
        ratio = seconds["contiguous"] / seconds["channels_last_3d"]
        print(f"threads {threads}: " + ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in seconds.items())
              + f"  (channels-last {ratio:.2f}x)")


if __name__ == "__main__":
    main()

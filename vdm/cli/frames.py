"""`python -m vdm.cli.frames`: a PNG of a model's videos frame by frame, scored by vdm.metrics.

    python -m vdm.cli.frames --out docs/demo-frames.png    # the demo, as in the README
    python -m vdm.cli.frames CHECKPOINT --videos 6 --real 2 --out frames.png
    python -m vdm.cli.frames --sampler dpm++2m-sde --steps 10 --out sde.png

Rows of training clips (`--real`) come first, for comparison; then the model's videos, generated
from `--seed` with the sampler and steps asked for (default: vdm-run's). Left of each row: a green
bar for a video that passes every rule of `vdm.metrics`, red for one that fails; right of it: the
colours the metric found (the data never has more than three, and a shape keeps its colour).
"""
from __future__ import annotations

from pathlib import Path

import click
import torch

from vdm.atomic import atomic_write_bytes
from vdm.cli.flags import (autoguide_flags, chosen_guidance, chosen_labels, chosen_restarts, class_flags,
                           load_generator, model_and_guide, sampler_flags)
from vdm.demo.frames import frames_sheet, png_bytes
from vdm.errors import VdmError, cli_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--videos", "num_videos", default=6, show_default=True, type=click.IntRange(1, 64),
              help="Generated videos (rows).")
@click.option("--real", "num_real", default=2, show_default=True, type=click.IntRange(0, 64),
              help="Training clips shown above them.")
@autoguide_flags
@sampler_flags
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the generated videos.")
@class_flags
@click.option("--out", default="demo-frames.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG to write (atomically).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(model, num_videos, num_real, autoguide, autoguide_weight, sampler, steps, spacing, restart, seed,
         class_label, guidance, out, debug):
    """Write a PNG of MODEL's videos (default: the bundled demo, with each video's shapes label,
    classifier-free guidance and one restart), frame by frame, scored by vdm.metrics."""
    from vdm.data import SyntheticShapes

    restarts = chosen_restarts(restart, demo=model is None)
    guidance = chosen_guidance(guidance, demo=model is None)
    model, autoguide, weight = model_and_guide(model, "torch", autoguide, autoguide_weight)
    generator = load_generator(model, "torch", "cpu", "auto", {}, autoguide, weight)
    cfg = generator.model_config
    if cfg.in_channels != 3:
        raise VdmError(f"the metric reads RGB videos; this model has {cfg.in_channels} channels")
    labels = chosen_labels(cfg, class_label, num_videos, seed)
    _, plan = generator.check_request(num_videos, num_steps=steps, sampler=sampler, guidance=guidance,
                                      class_label=labels, spacing=spacing, restarts=restarts)
    videos = generator.generate(num_videos, num_steps=steps, sampler=sampler, spacing=spacing, seed=seed,
                                guidance=guidance, class_label=labels, restarts=restarts)  # (N, 3, T, H, W)
    real = SyntheticShapes(cfg.frames, cfg.size, seed=seed).batch(0, num_real) if num_real else videos[:0]
    sheet, reports = frames_sheet(torch.cat([real, videos]).numpy())
    atomic_write_bytes(Path(out), png_bytes(sheet))
    passed = sum(r.passed for r in reports[num_real:])
    click.echo(f"wrote {out}: {num_real} training clips, then {num_videos} videos ({plan.describe()}; "
               f"{passed}/{num_videos} pass the metric)")


if __name__ == "__main__":
    main()

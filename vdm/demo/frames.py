"""A PNG of a model's videos frame by frame, each row marked with what the quality metric found.

    python -m vdm.demo.frames --out docs/demo-frames.png    # the demo, as in the README
    python -m vdm.demo.frames CHECKPOINT --videos 6 --real 2 --out frames.png
    python -m vdm.demo.frames --sampler dpm++2m-sde --steps 10 --out sde.png

Rows of training clips (`--real`) come first, for comparison; then the model's videos, generated
from `--seed` with the sampler and steps asked for (default: vdm-run's). Left of each row: a green bar for a video
that passes every rule of `vdm.metrics`, red for one that fails; right of it: the colours the
metric found (the data never has more than three, and a shape keeps its colour).
"""
from __future__ import annotations

import io
from pathlib import Path

import click
import numpy as np
import torch
from PIL import Image

from vdm.atomic import atomic_write_bytes
from vdm.cli.flags import sampler_flags
from vdm.demo import DEMO_CHECKPOINT
from vdm.errors import VdmError, cli_errors
from vdm.metrics import VideoReport, score_frames
from vdm.video import to_uint8_frames

SCALE = 3  # nearest-neighbour upscaling of each frame, so 32 px frames are visible on a page
GAP = 2  # px between frames and rows, after scaling
BAR = 6  # px: width of the pass/fail bar
SWATCH = 10  # px: width of each found-colour swatch
PASS_COLOR, FAIL_COLOR, GAP_COLOR = (40, 200, 80), (220, 50, 50), (255, 255, 255)


def video_row(frames: np.ndarray, report: VideoReport) -> np.ndarray:
    """(T, H, W, 3) uint8 frames -> (H*SCALE, width, 3) uint8: a pass/fail bar, the frames, the colours found."""
    t, h, w, _ = frames.shape
    height = h * SCALE
    big = frames.repeat(SCALE, axis=1).repeat(SCALE, axis=2)  # (T, H*S, W*S, 3)
    pieces = [np.full((height, BAR, 3), PASS_COLOR if report.passed else FAIL_COLOR, np.uint8)]
    for frame in big:
        pieces += [np.full((height, GAP, 3), GAP_COLOR, np.uint8), frame]
    pieces.append(np.full((height, GAP, 3), GAP_COLOR, np.uint8))
    swatches = np.full((height, SWATCH * 6, 3), GAP_COLOR, np.uint8)  # room for all six palette colours
    for i, color in enumerate(report.colors):
        swatches[:, i * SWATCH:(i + 1) * SWATCH - GAP] = color
    pieces.append(swatches)
    return np.concatenate(pieces, axis=1)


def frames_sheet(videos: np.ndarray) -> tuple[np.ndarray, list[VideoReport]]:
    """(N, 3, T, H, W) videos in [-1, 1] -> one (rows, width, 3) uint8 image and each row's report."""
    rows, reports = [], []
    for i, video in enumerate(videos):
        frames = to_uint8_frames(video)  # (T, H, W, 3)
        reports.append(score_frames(frames, i))
        rows.append(video_row(frames, reports[-1]))
    gap = np.full((GAP, rows[0].shape[1], 3), GAP_COLOR, np.uint8)
    sheet = np.concatenate([piece for row in rows for piece in (row, gap)][:-1], axis=0)
    return sheet, reports


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--videos", "num_videos", default=6, show_default=True, type=click.IntRange(1, 64),
              help="Generated videos (rows).")
@click.option("--real", "num_real", default=2, show_default=True, type=click.IntRange(0, 64),
              help="Training clips shown above them.")
@sampler_flags
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the generated videos.")
@click.option("--out", default="demo-frames.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG to write (atomically).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(model, num_videos, num_real, sampler, steps, spacing, seed, out, debug):
    """Write a PNG of MODEL's videos (default: the bundled demo), frame by frame, scored by vdm.metrics."""
    from vdm.data import SyntheticShapes
    from vdm.runtime.generator import VideoGenerator

    generator = VideoGenerator(model or DEMO_CHECKPOINT, backend="torch", device="cpu")
    cfg = generator.model_config
    if cfg.in_channels != 3:
        raise VdmError(f"the metric reads RGB videos; this model has {cfg.in_channels} channels")
    videos = generator.generate(num_videos, num_steps=steps, sampler=sampler, spacing=spacing,
                                seed=seed)  # (N, 3, T, H, W)
    real = SyntheticShapes(cfg.frames, cfg.size, seed=seed).batch(0, num_real) if num_real else videos[:0]
    sheet, reports = frames_sheet(torch.cat([real, videos]).numpy())
    atomic_write_bytes(Path(out), png_bytes(sheet))
    passed = sum(r.passed for r in reports[num_real:])
    click.echo(f"wrote {out}: {num_real} training clips, then {num_videos} videos ({sampler}, {steps} steps; "
               f"{passed}/{num_videos} pass the metric)")


if __name__ == "__main__":
    main()

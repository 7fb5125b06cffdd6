"""A picture of videos frame by frame, each row marked with what the quality metric found
(`python -m vdm.cli.frames` draws a model's). Left of each row: a green bar for a video
that passes every rule of `vdm.metrics`, red for one that fails; right of it: the colours the
metric found (the data never has more than three, and a shape keeps its colour).
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

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

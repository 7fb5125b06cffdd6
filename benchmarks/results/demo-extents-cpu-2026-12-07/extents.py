"""Single shapes, drawn and measured: each CKPT's N videos of one shape (the labels of N one-shape
synthetic clips of data seed SEED; guidance 5 or GUIDANCE, UniPC 6 restarted once from SNR 0.01 as
vdm-eval samples the demo, fp32, batches of 32 from seeds SEED, SEED + 1, ...), scored by
vdm.metrics, and N one-shape clips of the data measured the same way:
- videos passing, and passing each property;
- the clear frames, by what the `shape` rule finds wrong with them;
- how far a frame's box height and width stray from their medians over the video, along the axis the
  shape moves faster along and the slower one (a rigid shape only gains or loses an edge row);
- |height - width| of the clear frames' boxes, and how many of the skewed ones (2 px or more) are square
  to 1 px once the rows and columns less than half as full as the fullest are dropped (ragged edges),
  or stay skewed (a rectangle drawn).
    python benchmarks/results/demo-extents-cpu-2026-12-07/extents.py N SEED CKPT[:GUIDANCE]..."""
import collections
import os
import sys

import numpy as np
import torch

from vdm.data import SyntheticShapes, clip_label
from vdm.demo import DEMO_GUIDANCE, DEMO_RESTARTS
from vdm.metrics import (ASPECT_TOL, DISC_FILL_MIN, PROPERTIES, SQUARE_FILL_MIN, area_range, label_pixels,
                         score_videos, trace_shapes)
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts
from vdm.video import to_uint8_frames

SIZE = 32
MAX_SPEED = 10.0  # px per frame: bounds where trace_shapes looks for a hidden shape (none hide here)


def one_shape_clips(seed: int) -> SyntheticShapes:
    return SyntheticShapes(frames=8, size=SIZE, seed=seed, min_shapes=1, max_shapes=1)


def sampled_videos(gen: VideoGenerator, n: int, seed: int, guidance: float) -> torch.Tensor:
    """(N, C, T, H, W): video b * 32 + i has the label of one-shape clip i of data seed SEED + b."""
    batch = min(n, 32)
    videos = []
    for b in range(n // batch):
        clips = one_shape_clips(seed + b)
        labels = [clip_label(clips.tracks(i), gen.model_config.class_label) for i in range(batch)]
        videos.append(gen.generate(batch, seed=seed + b, class_label=labels, guidance=guidance,
                                   restarts=parse_restarts(DEMO_RESTARTS)))
    return torch.cat(videos)


def frame_faults(trace) -> collections.Counter:
    """The clear frames of one shape, by what outline_checks finds wrong with each ('ok' if nothing)."""
    square_low, square_high = area_range("square", SIZE)
    disc_low, disc_high = area_range("disc", SIZE)
    heights, widths = trace.sides.T
    faults = collections.Counter()
    for t in np.flatnonzero(trace.clear):
        area, fill = trace.areas[t], trace.areas[t] / (heights[t] * widths[t])
        found = ["skewed box"] if abs(heights[t] - widths[t]) > ASPECT_TOL else []
        if fill >= SQUARE_FILL_MIN and not square_low <= area <= square_high:
            found.append("square area")
        if fill < SQUARE_FILL_MIN and not (disc_low <= area <= disc_high and fill >= DISC_FILL_MIN):
            found.append("disc area or fill")
        faults[" + ".join(found) or "ok"] += 1
    return faults


def core_is_square(mask: np.ndarray) -> bool:
    """(H, W) bool: counting only rows and columns at least half as full as the fullest, is the box
    square to 1 px?"""
    rows, cols = mask.sum(1), mask.sum(0)
    return abs(int((rows >= rows.max() / 2).sum()) - int((cols >= cols.max() / 2).sum())) <= ASPECT_TOL


def measure(videos: torch.Tensor) -> dict:
    """Frame faults, side deviations (fast and slow axis) and |h - w| over the one-shape videos."""
    faults, skews, cores = collections.Counter(), collections.Counter(), collections.Counter()
    fast, slow = [], []
    for video in videos:
        labels = label_pixels(to_uint8_frames(video))  # (T, H, W)
        traces = trace_shapes(labels, MAX_SPEED)
        if len(traces) != 1:
            faults["not one shape"] += 1
            continue
        trace = traces[0]
        faults += frame_faults(trace)
        clear = trace.clear
        skew = np.abs(trace.sides[:, 0] - trace.sides[:, 1])  # (T,) |height - width|; NaN where absent
        skews.update(np.minimum(skew[clear], 4).astype(int).tolist())
        for t in np.flatnonzero(clear & (skew > ASPECT_TOL)):
            cores["ragged edges" if core_is_square(labels[t] == trace.color) else "a rectangle"] += 1
        if clear.sum() < 3:
            continue
        sides = trace.sides[clear]  # (F, 2) height, width
        speed = np.abs(np.diff(trace.centroids[clear], axis=0)).mean(0)  # (2,) px per clear frame, y and x
        deviation = np.abs(sides - np.median(sides, 0)).mean(0)  # (2,)
        fast.append(deviation[speed.argmax()])
        slow.append(deviation[1 - speed.argmax()])
    return {"faults": faults, "skews": skews, "cores": cores, "videos measured": len(fast),
            "fast": float(np.mean(fast)), "slow": float(np.mean(slow))}


def describe(name: str, found: dict) -> str:
    frames = sum(n for k, n in found["faults"].items() if k != "not one shape")
    skews = " ".join(f"{k if k < 4 else '4+'}:{found['skews'][k]}" for k in range(5))
    return (f"{name}\n  clear frames {frames}: " + ", ".join(f"{k} {n}" for k, n in found["faults"].most_common())
            + f"\n  |h - w| (px: frames) {skews}; the skewed: ragged edges {found['cores']['ragged edges']}, "
            + f"a rectangle {found['cores']['a rectangle']}"
            + f"\n  mean |side - its median over the video| (px, {found['videos measured']} videos): "
            + f"faster axis {found['fast']:.2f}, slower axis {found['slow']:.2f}")


def scored(name: str, videos: torch.Tensor) -> str:
    """describe() of the videos, after a line of what vdm.metrics passes."""
    report = score_videos(videos)
    passing = {p: sum(v.properties[p].passed for v in report.videos) for p in PROPERTIES}
    return describe(f"{name}: {sum(v.passed for v in report.videos)}/{len(videos)} pass; "
                    + ", ".join(f"{p} {k}" for p, k in passing.items()), measure(videos))


def main(n: int, seed: int, checkpoints: list[str]) -> None:
    clips = one_shape_clips(seed)
    print(describe(f"{n} one-shape clips of the data (seed {seed})",
                   measure(torch.stack([clips.clip(i) for i in range(n)]))), flush=True)
    for spec in checkpoints:
        ckpt, _, scale = spec.partition(":")
        gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
        print(scored(spec, sampled_videos(gen, n, seed, float(scale or DEMO_GUIDANCE))), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])

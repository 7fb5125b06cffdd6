"""Do the shipped demo's stretched shapes stretch along their motion? For every clear frame where a
shape's box is not square (|height - width| > ASPECT_TOL, the commonest `shape` failure), compare the
box's long axis with the axis the shape moves faster along (its centroid's mean |step| per frame over
the frames it shows clear). Then |height - width| over every clear frame, for these videos and for N
clips of the data (seed SEED). Videos as ../demo-colors-finetune-cpu-2026-12-07/interval.py draws them
(guidance 5, the data's labels, UniPC 6 restarted once, fp32).
    python benchmarks/results/demo-shapes-cpu-2026-12-07/stretch.py CKPT N SEED"""
import collections
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import sampled_videos  # noqa: E402
from vdm import metrics  # noqa: E402
from vdm.data import SyntheticShapes  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
videos = sampled_videos(gen, n, seed, 5.0).numpy()
along, across, excess_along, speeds = 0, 0, [], []
for video in videos:
    frames = metrics.to_uint8_frames(video)
    _, height, width, _ = frames.shape
    for tr in metrics.trace_shapes(metrics.label_pixels(frames), metrics.max_speed_of(height, width)):
        clear = np.flatnonzero(tr.clear)
        if len(clear) < 2:
            continue
        steps = np.abs(np.diff(tr.centroids[clear], axis=0)) / np.diff(clear)[:, None]  # (F - 1, 2) px/frame
        speed = steps.mean(0)  # (2,) y, x
        heights, widths = tr.sides.T
        for f in clear:
            diff = heights[f] - widths[f]
            if abs(diff) <= metrics.ASPECT_TOL:
                continue
            long_axis = 0 if diff > 0 else 1
            fast_axis = int(speed[1] > speed[0])
            along += long_axis == fast_axis
            across += long_axis != fast_axis
            excess_along.append(abs(diff))
            speeds.append(speed[long_axis])
total = along + across
print(f"{ckpt}: {total} clear frames with a box not square; long axis = faster axis in {along} "
      f"({along / max(total, 1):.0%}), the slower in {across}")
if total:
    print(f"  |height - width| median {np.median(excess_along):.0f} px; speed along the long axis median "
          f"{np.median(speeds):.2f} px/frame")


def box_skew(clips) -> str:
    """|height - width| of every clear frame's box: 'd: frames, ...'."""
    skews = collections.Counter()
    for clip in clips:
        frames = metrics.to_uint8_frames(clip)
        _, height, width, _ = frames.shape
        for tr in metrics.trace_shapes(metrics.label_pixels(frames), metrics.max_speed_of(height, width)):
            heights, widths = tr.sides.T
            skews.update(int(abs(heights[f] - widths[f])) for f in np.flatnonzero(tr.clear))
    return ", ".join(f"{d}: {k}" for d, k in sorted(skews.items()))


data = SyntheticShapes(8, 32, seed=seed)
print(f"  |height - width| of clear frames' boxes (px: frames), these videos: {box_skew(videos)}")
print(f"  the same, {n} clips of the data: {box_skew(data.clip(i).numpy() for i in range(n))}")

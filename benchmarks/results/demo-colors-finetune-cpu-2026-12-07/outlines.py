"""Why the shipped demo's videos fail `shape`: for every frame where a shape shows clear but fails
vdm.metrics.outline_checks, which of its tests fails (area out of every allowed range, fill below
a disc's, box not square), and for frames in contact, a box too large. Videos as interval.py draws
them (guidance 5, the data's labels, UniPC 6 restarted once, fp32).
    python benchmarks/results/demo-colors-finetune-cpu-2026-12-07/outlines.py CKPT N SEED"""
import collections
import os
import sys

import numpy as np
import torch

from interval import sampled_videos  # this folder's: python puts a script's folder on sys.path
from vdm import metrics
from vdm.runtime.generator import VideoGenerator

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
videos = sampled_videos(gen, n, seed, 5.0).numpy()
report = metrics.score_videos(videos)
print(f"{ckpt} guidance 5: {sum(v.passed for v in report.videos)}/{n} pass, "
      + ", ".join(f"{k} {rate * n:.0f}" for k, rate in report.property_pass_rates.items()))
tally, shapes_failing, videos_failing = collections.Counter(), 0, 0
for video in videos:
    frames = metrics.to_uint8_frames(video)
    _, height, width, _ = frames.shape
    scale = min(height, width)
    traces = metrics.trace_shapes(metrics.label_pixels(frames), metrics.max_speed_of(height, width))
    failing_here = 0
    for tr in traces:
        heights, widths = tr.sides.T
        with np.errstate(divide="ignore", invalid="ignore"):
            fill = tr.areas / (heights * widths)
        sq_lo, sq_hi = metrics.area_range("square", scale)
        disc_lo, disc_hi = metrics.area_range("disc", scale)
        ok = metrics.outline_checks(tr, scale)
        frames_judged = np.flatnonzero(tr.clear | tr.whole().all(1))
        bad = frames_judged[~ok]
        if len(bad):
            failing_here += 1
        for f in bad:
            if not tr.clear[f]:
                tally["in contact: box larger than the largest shape"] += 1
                continue
            area_ok = (sq_lo <= tr.areas[f] <= sq_hi) if fill[f] >= metrics.SQUARE_FILL_MIN else \
                (disc_lo <= tr.areas[f] <= disc_hi)
            reasons = []
            if fill[f] < metrics.DISC_FILL_MIN:
                reasons.append("fill below a disc's")
            if not area_ok:
                reasons.append("area out of range" + (" (too small)" if tr.areas[f] < min(sq_lo, disc_lo) else ""))
            if abs(heights[f] - widths[f]) > metrics.ASPECT_TOL:
                reasons.append("box not square")
            tally[" + ".join(reasons) or "other"] += 1
    shapes_failing += failing_here
    videos_failing += failing_here > 0
print(f"videos failing shape: {videos_failing}/{len(videos)}; shapes failing: {shapes_failing}")
for reason, count in tally.most_common():
    print(f"  {count:4d} failing frames: {reason}")

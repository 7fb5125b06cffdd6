"""How often do shapes touch? For N videos of CKPT (drawn as by_count.py draws them) and N clips of
the data (seed SEED): of the frames where a shape shows, the share in contact with another colour
(vdm.metrics' `contact`, judged by the loose in-contact rule of `shape` and `motion`), and whether
what it touches is another shape (a touching region of another colour of at least 10 px) or only
fragments.
    python benchmarks/results/demo-shapes-cpu-2026-12-07/contact.py CKPT N SEED"""
import collections
import os
import sys

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import sampled_videos  # noqa: E402
from vdm import metrics  # noqa: E402
from vdm.data import SyntheticShapes  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def contacts(clips) -> str:
    shown, touching = 0, collections.Counter()
    for clip in clips:
        labels = metrics.label_pixels(metrics.to_uint8_frames(clip))  # (T, H, W)
        _, height, width = labels.shape
        for tr in metrics.trace_shapes(labels, metrics.max_speed_of(height, width)):
            shown += int(tr.present.sum())
            ring = metrics.dilate(labels == tr.color)
            for f in np.flatnonzero(tr.contact):
                regions, _ = ndimage.label((labels[f] >= 0) & (labels[f] != tr.color))
                largest = max(int((regions == r).sum()) for r in np.unique(regions[ring[f]]) if r)
                touching["another shape" if largest >= 10 else "fragments"] += 1
    total = sum(touching.values())
    return (f"{total}/{shown} shape-frames in contact ({total / shown:.0%}): "
            + ", ".join(f"{what} {k}" for what, k in touching.most_common()))


gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
print(f"{ckpt}: {contacts(sampled_videos(gen, n, seed, 5.0).numpy())}")
data = SyntheticShapes(8, 32, seed=seed)
print(f"{n} clips of the data: {contacts(data.clip(i).numpy() for i in range(n))}")

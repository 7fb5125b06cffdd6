"""Does a model draw the shape its label asks for? Videos as by_count.py draws them: video b * 32 + i
gets the label of clip i of data seed SEED + b. For each colour that clip holds, every clear frame of
that colour in the video is called a square when its fill (area / box area) is at least
vdm.metrics.SQUARE_FILL_MIN, else a disc, and compared with the clip's shape of that colour (a
"colors" model is not told it: about half agree by chance).
    python benchmarks/results/demo-shapes-cpu-2026-12-07/kinds.py N SEED CKPT..."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import sampled_videos  # noqa: E402
from vdm import metrics  # noqa: E402
from vdm.data import PALETTE, SyntheticShapes  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
n, seed = int(sys.argv[1]), int(sys.argv[2])
batch = min(n, 32)
asked = [{PALETTE.index(t.color): t.kind for t in SyntheticShapes(frames=1, size=32, seed=seed + b).tracks(i)}
         for b in range(n // batch) for i in range(batch)]  # per video: palette index -> "square" / "disc"
for ckpt in sys.argv[3:]:
    gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
    agree = {"square": [0, 0], "disc": [0, 0]}  # asked kind -> [frames drawn as asked, frames]
    for video, kinds in zip(sampled_videos(gen, n, seed, 5.0).numpy(), asked):
        frames = metrics.to_uint8_frames(video)
        _, height, width, _ = frames.shape
        for tr in metrics.trace_shapes(metrics.label_pixels(frames), metrics.max_speed_of(height, width)):
            if tr.color not in kinds:
                continue
            heights, widths = tr.sides.T
            clear = np.flatnonzero(tr.clear)
            squares = tr.areas[clear] / (heights[clear] * widths[clear]) >= metrics.SQUARE_FILL_MIN
            kind = kinds[tr.color]
            agree[kind][0] += int((squares if kind == "square" else ~squares).sum())
            agree[kind][1] += len(clear)
    print(f"{ckpt} ({gen.model_config.class_label} labels): clear frames drawn as the clip's shape: "
          + ", ".join(f"{kind}s {hit}/{total} ({hit / max(total, 1):.0%})" for kind, (hit, total) in agree.items()),
          flush=True)

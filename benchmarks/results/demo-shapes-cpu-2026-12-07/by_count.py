"""Which videos pass, by how many shapes they hold: each CKPT's N videos as
../demo-colors-finetune-cpu-2026-12-07/interval.py draws them (each the label of a synthetic clip,
guidance 5 or GUIDANCE, UniPC 6 restarted once from SNR 0.01, fp32, batches of 32 from seeds SEED, SEED + 1, ...),
scored by vdm.metrics; per shape count, the videos passing and those passing each property.
    python benchmarks/results/demo-shapes-cpu-2026-12-07/by_count.py N SEED CKPT[:GUIDANCE]..."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import sampled_videos  # noqa: E402
from vdm.data import SyntheticShapes  # noqa: E402
from vdm.metrics import PROPERTIES, score_videos  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
n, seed = int(sys.argv[1]), int(sys.argv[2])
batch = min(n, 32)
# sampled_videos gives video b * 32 + i the label of clip i of data seed SEED + b: count that clip's shapes
counts = [len(SyntheticShapes(frames=1, size=32, seed=seed + b).tracks(i)) for b in range(n // batch)
          for i in range(batch)]
for spec in sys.argv[3:]:
    ckpt, _, scale = spec.partition(":")
    guidance = float(scale or 5)
    gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
    report = score_videos(sampled_videos(gen, n, seed, guidance))
    print(f"{ckpt} ({gen.model_config.class_label} labels, guidance {guidance:g}): "
          f"{sum(v.passed for v in report.videos)}/{n} pass, "
          f"colours per video {report.colors_per_video:.2f}")
    for shapes in sorted(set(counts)):
        videos = [v for v, c in zip(report.videos, counts) if c == shapes]
        passing = {p: sum(v.properties[p].passed for v in videos) for p in PROPERTIES}
        print(f"  {shapes} shape(s): {sum(v.passed for v in videos)}/{len(videos)} pass; "
              + ", ".join(f"{p} {k}" for p, k in passing.items()), flush=True)

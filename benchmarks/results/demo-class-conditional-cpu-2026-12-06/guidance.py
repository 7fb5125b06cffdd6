"""Class-conditional demo runs sampled with classifier-free guidance: each video gets the label of a
synthetic clip (vdm.data.data_labels, as vdm-eval gives them), sampled as the demo is by default
(UniPC 6, restarted once from SNR 0.01), autoguided by the shipped (unconditional) guide or not; fp32.
An unconditional checkpoint is sampled as the demo, for the baseline on the same noise.
    python benchmarks/results/demo-class-conditional-cpu-2026-12-06/guidance.py CKPT N SEED CFG:AG...
e.g. 1:1.5 3:1.5 3:1 (classifier-free guidance scale : autoguidance weight, 1 = no guide; scale 0
asks for the null class, the model's unconditional prediction); videos
in batches of 32 from seeds SEED, SEED + 1, ..., as eps_scale.py and correlated_noise.py draw them."""
import os
import sys

import torch

from vdm.data import data_labels
from vdm.demo import DEMO_GUIDE, DEMO_RESTARTS
from vdm.metrics import score_videos
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BATCH = min(n, 32)

for spec in sys.argv[4:]:
    scale, weight = map(float, spec.split(":"))
    if weight == 1:
        gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
    else:
        gen = VideoGenerator(backend=load_autoguided("torch", ckpt, DEMO_GUIDE, weight, "cpu", "fp32"))
    conditional = gen.model_config.conditional and scale != 0
    videos = []
    for b in range(n // BATCH):
        labels = data_labels(gen.model_config.class_label, BATCH, seed + b) if conditional else None
        videos.append(gen.generate(BATCH, seed=seed + b, class_label=labels, guidance=scale if conditional else 1.0,
                                   restarts=parse_restarts(DEMO_RESTARTS)))
    report = score_videos(torch.cat(videos))
    total = len(report.videos)
    print(f"{ckpt} guidance {scale:g} autoguide {weight:g}: {sum(v.passed for v in report.videos)}/{total} pass, "
          + ", ".join(f"{k} {rate * total:.0f}" for k, rate in report.property_pass_rates.items())
          + f", colours {report.colors_per_video:.2f}", flush=True)

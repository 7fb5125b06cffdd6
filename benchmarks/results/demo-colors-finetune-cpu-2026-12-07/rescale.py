"""Classifier-free guidance with its output rescaled (Lin et al. 2024, "Common Diffusion Noise Schedules
and Sample Steps are Flawed", section 3.4; diffusers' guidance_rescale): the guided prediction scaled to
the conditional one's standard deviation per video, mixed with the plain guided one by PHI. Videos as
interval.py draws them (UniPC 6 restarted once, fp32, the data's labels, batches of 32 from SEED).
    python benchmarks/results/demo-colors-finetune-cpu-2026-12-07/rescale.py CKPT N SEED SCALE:PHI..."""
import os
import sys

import torch

import vdm.runtime.sampling as sampling
from vdm.data import data_labels
from vdm.demo import DEMO_RESTARTS
from vdm.metrics import score_videos
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
BATCH = min(n, 32)
gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")

for spec in sys.argv[4:]:
    scale, phi = map(float, spec.split(":"))

    def rescaled(backend, x, t, y, guidance):
        null = torch.full_like(y, backend.model_config.null_class)
        cond, uncond = backend.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        guided = uncond + guidance * (cond - uncond)
        dims = tuple(range(1, x.ndim))
        matched = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        return phi * matched + (1 - phi) * guided

    sampling.guided_prediction = rescaled
    videos = []
    for b in range(n // BATCH):
        labels = data_labels(gen.model_config.class_label, BATCH, seed + b)
        videos.append(gen.generate(BATCH, seed=seed + b, class_label=labels, guidance=scale,
                                   restarts=parse_restarts(DEMO_RESTARTS)))
    report = score_videos(torch.cat(videos))
    total = len(report.videos)
    print(f"{ckpt} guidance {scale:g} rescaled by {phi:g}: {sum(v.passed for v in report.videos)}/{total} pass, "
          + ", ".join(f"{k} {rate * total:.0f}" for k, rate in report.property_pass_rates.items())
          + f", colours {report.colors_per_video:.2f}", flush=True)

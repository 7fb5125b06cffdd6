"""Classifier-free guidance applied only where the step's SNR is at most HI (Kynkaenniemi et al. 2024,
"Applying guidance in a limited interval"): above it the network's conditional prediction alone, one
call of the batch instead of two. Videos as guidance.py (previous folder) draws them: each the label
of a synthetic clip, UniPC 6 restarted once from SNR 0.01, fp32, batches of 32 from seeds SEED, SEED + 1...
    python benchmarks/results/demo-colors-finetune-cpu-2026-12-07/interval.py CKPT N SEED SCALE:HI...
HI inf guides every call, as the sampler does today."""
import os
import sys

import torch

import vdm.runtime.sampling as sampling
from vdm.data import data_labels
from vdm.demo import DEMO_RESTARTS
from vdm.diffusion import Schedule
from vdm.metrics import score_videos
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import parse_restarts


def sampled_videos(gen: VideoGenerator, n: int, seed: int, scale: float) -> torch.Tensor:
    """N videos (N, C, T, H, W) in batches of 32 from seeds seed, seed + 1, ... with guidance `scale`
    through whatever sampling.guided_prediction is now."""
    batch = min(n, 32)
    videos = []
    for b in range(n // batch):
        labels = data_labels(gen.model_config.class_label, batch, seed + b)
        videos.append(gen.generate(batch, seed=seed + b, class_label=labels, guidance=scale,
                                   restarts=parse_restarts(DEMO_RESTARTS)))
    return torch.cat(videos)


def scored_videos(gen: VideoGenerator, n: int, seed: int, scale: float) -> str:
    """sampled_videos, scored: 'P/N pass, count C, ...'."""
    report = score_videos(sampled_videos(gen, n, seed, scale))
    total = len(report.videos)
    return (f"{sum(v.passed for v in report.videos)}/{total} pass, "
            + ", ".join(f"{k} {rate * total:.0f}" for k, rate in report.property_pass_rates.items())
            + f", colours {report.colors_per_video:.2f}")


def main(ckpt: str, n: int, seed: int, specs: list[str]) -> None:
    everywhere = sampling.guided_prediction
    gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
    abar = Schedule.from_config(gen.backend.diffusion_config).alphas_cumprod
    snr = abar / (1 - abar)
    for spec in specs:
        scale, hi = map(float, spec.split(":"))
        calls = {"guided": 0, "plain": 0}

        def in_interval(backend, x, t, y, guidance):
            guided = float(snr[int(t[0])]) <= hi
            calls["guided" if guided else "plain"] += 1
            return everywhere(backend, x, t, y, guidance if guided else 1.0)

        sampling.guided_prediction = in_interval
        scores = scored_videos(gen, n, seed, scale)
        per_batch = {k: v // (n // min(n, 32)) for k, v in calls.items()}
        print(f"{ckpt} guidance {scale:g} where SNR <= {hi:g} ({per_batch['guided']} guided, "
              f"{per_batch['plain']} plain calls): {scores}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])

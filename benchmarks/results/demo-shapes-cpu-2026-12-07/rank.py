"""Could the model pick its own better videos? For each of N videos drawn as by_count.py draws them,
the model's denoising error (v-prediction MSE, its own label, one fixed noise draw) at SNRs 0.1 to 30;
AUC = the chance a passing video has a lower error than a failing one (0.5: no signal).
    python benchmarks/results/demo-shapes-cpu-2026-12-07/rank.py CKPT N SEED"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import sampled_videos  # noqa: E402
from vdm.data import data_labels  # noqa: E402
from vdm.diffusion import Schedule  # noqa: E402
from vdm.metrics import score_videos  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
videos = sampled_videos(gen, n, seed, 5.0)  # (N, C, T, H, W)
labels = torch.tensor([label for b in range(n // 32) for label in data_labels(gen.model_config.class_label, 32, seed + b)])
passed = torch.tensor([v.passed for v in score_videos(videos).videos])
abar = torch.as_tensor(Schedule.from_config(gen.backend.diffusion_config).alphas_cumprod)
snr = abar / (1 - abar)
noise_gen = torch.Generator().manual_seed(0)


def auc(error: torch.Tensor) -> float:
    return float((error[passed][:, None] < error[~passed][None, :]).float().mean())


total = torch.zeros(n)
print(f"{ckpt}: {int(passed.sum())}/{n} pass")
for target in (0.1, 0.3, 1, 3, 10, 30):
    t = int((snr - target).abs().argmin())
    a = abar[t].float()
    noise = torch.randn(videos.shape, generator=noise_gen)
    x = a.sqrt() * videos + (1 - a).sqrt() * noise
    with torch.no_grad():
        out = torch.cat([gen.backend.predict(x[i:i + 32], torch.full((32,), t), labels[i:i + 32]) for i in range(0, n, 32)])
    error = ((out - (a.sqrt() * noise - (1 - a).sqrt() * videos)) ** 2).mean((1, 2, 3, 4))  # (N,)
    total += error
    print(f"  SNR {target:g} (t={t}): AUC {auc(error):.3f}")
print(f"  summed over the SNRs: AUC {auc(total):.3f}")

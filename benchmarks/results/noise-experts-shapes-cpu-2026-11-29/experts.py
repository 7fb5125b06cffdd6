"""Scratch: two checkpoints as noise-level experts, one backend: HIGH predicts where SNR(t) < SWITCH,
LOW where SNR(t) >= SWITCH; an x0 (palette) checkpoint's output goes on as the v it implies (added
2026-11-30, for demo-palette-cpu-2026-11-30; v checkpoints run as before; since 2026-12-06 only when
HIGH is a v checkpoint: two x0 checkpoints need no conversion). Scores videos from noise (N) and finished from held-out clips at SNRS.
usage: python experts.py HIGH LOW SWITCH N SNRS"""
import sys, numpy as np, torch
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.evaluate import finished_videos
from vdm.diffusion import Schedule
from vdm.metrics import score_videos
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "1")))
high = load_backend("torch", sys.argv[1], "cpu", "fp32")
low = load_backend("torch", sys.argv[2], "cpu", "fp32")
switch, n = float(sys.argv[3]), int(sys.argv[4])
abar = Schedule.from_config(high.diffusion_config).alphas_cumprod
snr = torch.as_tensor(abar / (1 - abar))
class Experts(type(high)):
    def __init__(self): self.__dict__.update(high.__dict__)
    def predict(self, x, t, y):
        m = low if float(snr[int(t[0])]) >= switch else high
        out = m.predict(x, t, y)
        if m.diffusion_config.prediction == "x0" != high.diffusion_config.prediction:  # as the v it implies, for a v HIGH
            a = float(abar[int(t[0])]) ** 0.5; out = (a * x - out) / (1 - a * a) ** 0.5
        return out
b = Experts()
if n:
    vids = torch.cat([VideoGenerator(backend=b).generate(8, seed=s) for s in range(n // 8)])
    r = score_videos(vids); print(f"from noise: {sum(v.passed for v in r.videos)}/{n} pass, count {r.property_pass_rates['count']*n:.0f}, colours {r.colors_per_video:.2f}", flush=True)
for s in sys.argv[5].split(",") if len(sys.argv) > 5 else []:
    vids, _ = finished_videos(b, float(s), "unipc", 6, None, batches=8)
    r = score_videos(vids); print(f"from SNR {s}: {sum(v.passed for v in r.videos)}/64 pass, count {r.property_pass_rates['count']*64:.0f}", flush=True)

"""The guide sweep (before vdm had --autoguide): GOOD's prediction pushed away from BAD's,
out = bad + w * (good - bad), in GOOD's prediction space (an x0 BAD, a palette model, converted to the
v it implies, which runtime/autoguidance.py does not do). Scores N videos from noise (seeds 0..N/8-1,
8 per batch, fp32) and, with SNRS, 64 held-out clips finished from each SNR.
usage: python guide_sweep.py GOOD BAD W[,W...] N [SNRS]
env: THREADS (1), INTERVAL=lo,hi (guide only where lo <= SNR < hi), SAMPLER, STEPS (unipc, 6)"""
import sys, os, torch
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.evaluate import finished_videos
from vdm.diffusion import Schedule
from vdm.metrics import score_videos
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
good = load_backend("torch", sys.argv[1], "cpu", "fp32")
bad = load_backend("torch", sys.argv[2], "cpu", "fp32")
ws, n = [float(w) for w in sys.argv[3].split(",")], int(sys.argv[4])
abar = torch.as_tensor(Schedule.from_config(good.diffusion_config).alphas_cumprod)
lo, hi = [float(v) for v in os.environ.get("INTERVAL", "0,inf").split(",")]  # guide only where lo <= SNR < hi
snr = abar / (1 - abar)
def as_good(m, x, t, out):
    p, q = m.diffusion_config.prediction, good.diffusion_config.prediction
    if p == q: return out
    a = float(abar[int(t[0])]) ** 0.5; s = (1 - a * a) ** 0.5
    x0 = out if p == "x0" else a * x - s * out
    return x0 if q == "x0" else (a * x - x0) / s
class Guided(type(good)):
    def __init__(self, w): self.__dict__.update(good.__dict__); self.w = w
    def predict(self, x, t, y):
        g = good.predict(x, t, y)
        if not lo <= float(snr[int(t[0])]) < hi: return g
        b = as_good(bad, x, t, bad.predict(x, t, y))
        return b + self.w * (g - b)
for w in ws:
    m = Guided(w)
    if n:
        vids = torch.cat([VideoGenerator(backend=m).generate(8, seed=s, sampler=os.environ.get('SAMPLER', 'unipc'), num_steps=int(os.environ.get('STEPS', '6'))) for s in range(n // 8)])
        r = score_videos(vids); pr = r.property_pass_rates
        print(f"w={w} from noise: {sum(v.passed for v in r.videos)}/{n} pass, count {pr['count']*n:.0f}, " + ", ".join(f"{k} {v*n:.0f}" for k, v in pr.items() if k != 'count') + f", colours {r.colors_per_video:.2f}", flush=True)
    for s in sys.argv[5].split(",") if len(sys.argv) > 5 else []:
        vids, _ = finished_videos(m, float(s), "unipc", 6, None, batches=8)
        r = score_videos(vids); print(f"w={w} from SNR {s}: {sum(v.passed for v in r.videos)}/64 pass, count {r.property_pass_rates['count']*64:.0f}", flush=True)

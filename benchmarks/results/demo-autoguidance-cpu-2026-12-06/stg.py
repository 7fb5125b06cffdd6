"""Scratch: spatiotemporal-skip guidance (as in Hyung et al. 2024's STG) -- the bad model is the same
network with some attention skipped: out = bad + w * (good - bad).
usage: python stg.py CKPT MODE W[,W...] N [SNRS]; MODE: temporal-mid | temporal-all | attn-mid | attn-all"""
import sys, os, types, torch
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.evaluate import finished_videos
from vdm.diffusion import Schedule
from vdm.metrics import score_videos
from vdm.unet import FactorizedAttention, self_attention
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
good = load_backend("torch", sys.argv[1], "cpu", "fp32")
bad = load_backend("torch", sys.argv[1], "cpu", "fp32")
mode, ws, n = sys.argv[2], [float(w) for w in sys.argv[3].split(",")], int(sys.argv[4])
abar = torch.as_tensor(Schedule.from_config(good.diffusion_config).alphas_cumprod)
snr = abar / (1 - abar)
lo, hi = [float(v) for v in os.environ.get("INTERVAL", "0,inf").split(",")]
def spatial_only(self, x):
    b, c, t, hgt, wid = x.shape
    tokens = self.spatial_norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, hgt * wid, c)
    h = self_attention(tokens, self.spatial_qkv, self.spatial_out, self.num_heads)
    return x + h.reshape(b, t, hgt, wid, c).permute(0, 4, 1, 2, 3)
what, where = mode.split("-")
mods = [bad.model.mid_attention] if where == "mid" else [m for m in bad.model.modules() if isinstance(m, FactorizedAttention)]
for m in mods:
    m.forward = types.MethodType(spatial_only, m) if what == "temporal" else (lambda x: x)
print(mode, "skips", len(mods), "blocks", flush=True)
class Guided(type(good)):
    def __init__(self, w): self.__dict__.update(good.__dict__); self.w = w
    def predict(self, x, t, y):
        g = good.predict(x, t, y)
        if self.w == 1 or not lo <= float(snr[int(t[0])]) < hi: return g
        b = bad.predict(x, t, y)
        return b + self.w * (g - b)
for w in ws:
    m = Guided(w)
    if n:
        vids = torch.cat([VideoGenerator(backend=m).generate(8, seed=s) for s in range(n // 8)])
        r = score_videos(vids); pr = r.property_pass_rates
        print(f"w={w} from noise: {sum(v.passed for v in r.videos)}/{n} pass, " + ", ".join(f"{k} {v*n:.0f}" for k, v in pr.items()) + f", colours {r.colors_per_video:.2f}", flush=True)
    for s in sys.argv[5].split(",") if len(sys.argv) > 5 else []:
        vids, _ = finished_videos(m, float(s), "unipc", 6, None, batches=8)
        r = score_videos(vids); print(f"w={w} from SNR {s}: {sum(v.passed for v in r.videos)}/64 pass, count {r.property_pass_rates['count']*64:.0f}", flush=True)

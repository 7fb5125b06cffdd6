"""Which pass loses the shapes? 128 videos (seeds 0-15), the demo guided: colours per video after UniPC 6, and after the restart.
Run on the step-13000 demo: git show 99f1da2:vdm/demo/demo.safetensors > demo-13000.safetensors; DEMO=that."""
import os
import torch, collections
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sampler_from_snr, sample
from vdm.diffusion import correlate_frames
from vdm.metrics import score_videos
torch.set_num_threads(1)
m = load_autoguided("torch", os.environ.get("DEMO", "vdm/demo/demo.safetensors"), "vdm/demo/guide.safetensors", 1.5, "cpu", "fp32")
gen = VideoGenerator(backend=m)
first = torch.cat([gen.generate(8, seed=s, sampler="unipc", num_steps=6) for s in range(16)])
rs = sampler_from_snr(m, "unipc", 6, 0.01)
abar = rs.abars[0]
g = torch.Generator().manual_seed(5)
noise = correlate_frames(torch.randn(first.shape, generator=g), m.diffusion_config.frame_noise_correlation)
second = sample(m, abar ** 0.5 * first + (1 - abar) ** 0.5 * noise, rs)
r1, r2 = score_videos(first), score_videos(second)
for tag, r in [("first pass", r1), ("restarted", r2)]:
    hist = collections.Counter(len(x.colors) for x in r.videos)
    print(tag, sum(x.passed for x in r.videos), "pass; colours per video:", dict(sorted(hist.items())))
print("blank after restart, colours before:", [len(a.colors) for a, b in zip(r1.videos, r2.videos) if len(b.colors) == 0])

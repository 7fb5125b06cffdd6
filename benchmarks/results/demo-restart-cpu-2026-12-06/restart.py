"""Restart sampling on the demo: sample (SAMPLER, STEPS, guided at W), re-noise the result to SNR s
with fresh noise, finish with the same sampler in M steps; repeat K times. Scores every round.
usage: python restart.py N SNRS M K   env: W (1.5), SAMPLER (unipc), STEPS (6), THREADS (1)"""
import os, sys, torch
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sampler_for, sample, step_generator
from vdm.evaluate import timestep_at_snr
from vdm.diffusion import Schedule, q_sample
from vdm.metrics import score_videos
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
w = float(os.environ.get("W", "1.5")); name = os.environ.get("SAMPLER", "unipc"); steps = int(os.environ.get("STEPS", "6"))
m_ = load_autoguided("torch", "vdm/demo/demo.safetensors", "vdm/demo/guide.safetensors", w, "cpu", "fp32") if w != 1 else None
from vdm.runtime.backend import load_backend
m_ = m_ or load_backend("torch", "vdm/demo/demo.safetensors", "cpu", "fp32")
n = int(sys.argv[1]); snrs = [float(s) for s in sys.argv[2].split(",")]; M = int(sys.argv[3]); K = int(sys.argv[4])
abar = Schedule.from_config(m_.diffusion_config).alphas_cumprod
gen = VideoGenerator(backend=m_)
first = [gen.generate(8, seed=s, sampler=name, num_steps=steps) for s in range(n // 8)]
def report(tag, vids):
    r = score_videos(torch.cat(vids)); pr = r.property_pass_rates
    print(f"{tag}: {sum(v.passed for v in r.videos)}/{n} pass, count {pr['count']*n:.0f}, " + ", ".join(f"{k} {v*n:.0f}" for k, v in pr.items() if k != 'count') + f", colours {r.colors_per_video:.2f}", flush=True)
report(f"w={w} {name} {steps}", first)
for snr in snrs:
    start = timestep_at_snr(abar, snr)
    sampler = sampler_for(m_, name, min(M, start + 1), None, start=start)
    t = torch.full((8,), start)
    vids = first
    for k in range(K):
        out = []
        for i, x0 in enumerate(vids):
            g = torch.Generator().manual_seed(10_000 + 100 * k + i)
            x_t = q_sample(x0, t, torch.randn(x0.shape, generator=g), abar)
            out.append(sample(m_, x_t, sampler, None, generator=step_generator(20_000 + 100 * k + i, torch.device("cpu"))))
        vids = out
        report(f"  restart {k+1} from SNR {snr} (t={start}), {M} steps", vids)

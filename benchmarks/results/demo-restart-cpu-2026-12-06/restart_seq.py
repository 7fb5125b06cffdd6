"""Restart sequences on the demo: sample (SAMPLER, STEPS, guided at W), then for each SNR:M in SEQ
re-noise to SNR with fresh noise and finish in M steps (RSAMPLER). Scores after each.
usage: python restart_seq.py N SEQ   (SEQ items SNR:M or SNR:M:CHECKPOINT, a pass by another network, alone)   env: W (1.5), SAMPLER (unipc), STEPS (6), RSAMPLER (SAMPLER), THREADS (1), SEED0 (0)"""
import os, sys, torch
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sampler_for, sample, step_generator
from vdm.evaluate import timestep_at_snr
from vdm.diffusion import Schedule, q_sample
from vdm.metrics import score_videos
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
w = float(os.environ.get("W", "1.5")); name = os.environ.get("SAMPLER", "unipc"); steps = int(os.environ.get("STEPS", "6"))
rname = os.environ.get("RSAMPLER", name); seed0 = int(os.environ.get("SEED0", "0"))
m_ = (load_autoguided("torch", "vdm/demo/demo.safetensors", "vdm/demo/guide.safetensors", w, "cpu", "fp32") if w != 1
      else load_backend("torch", "vdm/demo/demo.safetensors", "cpu", "fp32"))
n = int(sys.argv[1]); seq = [p.split(":", 2) for p in sys.argv[2].split(",")]
seq = [(float(p[0]), int(p[1]), load_backend("torch", p[2], "cpu", "fp32") if len(p) > 2 else m_) for p in seq]
abar = Schedule.from_config(m_.diffusion_config).alphas_cumprod
gen = VideoGenerator(backend=m_)
vids = [gen.generate(8, seed=seed0 + s, sampler=name, num_steps=steps) for s in range(n // 8)]
def report(tag, vids):
    r = score_videos(torch.cat(vids)); pr = r.property_pass_rates
    print(f"{tag}: {sum(v.passed for v in r.videos)}/{n} pass, count {pr['count']*n:.0f}, " + ", ".join(f"{k} {v*n:.0f}" for k, v in pr.items() if k != 'count') + f", colours {r.colors_per_video:.2f}", flush=True)
report(f"w={w} {name} {steps} seeds {seed0}..", vids)
for k, (snr, M, net) in enumerate(seq):
    start = timestep_at_snr(abar, snr)
    sampler = sampler_for(net, rname, min(M, start + 1), None, start=start)
    t = torch.full((8,), start)
    out = []
    for i, x0 in enumerate(vids):
        g = torch.Generator().manual_seed(10_000 + 100 * k + i)
        x_t = q_sample(x0, t, torch.randn(x0.shape, generator=g), abar)
        out.append(sample(net, x_t, sampler, None, generator=step_generator(20_000 + 100 * k + i, torch.device("cpu"))))
    vids = out
    report(f"  then {rname} from SNR {snr} (t={start}), {M} steps" + ("" if net is m_ else " by another network"), vids)

"""Score a self-conditioning checkpoint's videos (64, seed 0, fp32 torch) under three ways of making
the estimate a step reads: `prev`, the previous step's (what vdm's sampling loop does); `same`, a first
call at this step with a zero estimate, as training makes it (two calls per step); `refine`, a first
call at this step reading the previous step's estimate (two calls per step).

    python same_step.py CHECKPOINT prev,same,refine [STEP_MULTIPLIER]

runs unipc 6 and dpm++2m-sde 10 steps, each times STEP_MULTIPLIER (default 1). The `prev` rows match
`vdm-eval --precision fp32 -n 64` exactly.
"""
import sys, torch
from vdm.runtime.generator import VideoGenerator
from vdm.metrics import score_videos
from vdm.diffusion import Schedule, clean_from_output, with_estimate

path = sys.argv[1]
gen = VideoGenerator(path, backend="torch", device="cpu", precision="fp32")
backend = gen.backend
inner = backend.predict
abar_all = torch.as_tensor(Schedule.from_config(backend.diffusion_config).alphas_cumprod)
pred = backend.diffusion_config.prediction
C = 3

def estimate(x, t, y, est):
    out = inner(with_estimate(x, est), t, y)
    abar = abar_all[t].float().reshape(-1, 1, 1, 1, 1)
    return clean_from_output(out, x, abar.sqrt(), (1 - abar).sqrt(), pred).clamp(-1, 1)

def same(x_in, t, y):
    x = x_in[:, :C]
    return inner(with_estimate(x, estimate(x, t, y, torch.zeros_like(x))), t, y)

def refine(x_in, t, y):
    x, prev = x_in[:, :C], x_in[:, C:]
    return inner(with_estimate(x, estimate(x, t, y, prev)), t, y)

for mode, fn in [m for m in (("prev", inner), ("same", same), ("refine", refine)) if m[0] in sys.argv[2].split(",")]:
    backend.predict = fn
    for sampler, steps in [(s, n * int(sys.argv[3]) if len(sys.argv) > 3 else n) for s, n in (("unipc", 6), ("dpm++2m-sde", 10))]:
        videos = gen.generate(64, num_steps=steps, sampler=sampler, seed=0)
        r = score_videos(videos)
        passed = sum(v.passed for v in r.videos)
        counts = sum(v.to_dict()["properties"]["count"]["passed"] for v in r.videos)
        scores = " ".join(f"{k} {v:.3f}" for k, v in r.property_scores.items())
        print(f"{mode} {sampler} {steps}: pass {passed}/64, count passes {counts}/64, {scores}, colours {r.colors_per_video:.2f}", flush=True)

"""Can the demo's own networks tell which of its videos pass? Sample N videos with the demo's default
plan (guided 1.5, UniPC 6, restart 0.01:6), then score each by the demo's (and the guide's) one-call
denoising error at several SNRs; report each score's AUC against pass/fail and best-of-K pass rates.
usage: python rerank.py N SEED0 OUT.pt     env THREADS (1), DRAWS (2), DEMO (vdm/demo/demo.safetensors)
Run on the step-13000 demo (git show 99f1da2:vdm/demo/demo.safetensors > demo-13000.safetensors; DEMO=that).
OUT.pt keeps the videos: a second run with it only scores them again."""
import os, sys, torch, numpy as np
from vdm.runtime.autoguidance import load_autoguided
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.samplers import Restart
from vdm.diffusion import Schedule, q_sample, timestep_at_snr, clean_from_output, correlate_frames
from vdm.metrics import score_videos

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
DEMO = os.environ.get("DEMO", "vdm/demo/demo.safetensors")
n, seed0, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
draws = int(os.environ.get("DRAWS", "2"))
guided = load_autoguided("torch", DEMO, "vdm/demo/guide.safetensors", 1.5, "cpu", "fp32")
demo = load_backend("torch", DEMO, "cpu", "fp32")
guide = load_backend("torch", "vdm/demo/guide.safetensors", "cpu", "fp32")
cfg = demo.diffusion_config
abar = Schedule.from_config(cfg).alphas_cumprod
if os.path.exists(out):
    vids = torch.load(out)["vids"]
else:
    gen = VideoGenerator(backend=guided)
    vids = torch.cat([gen.generate(8, seed=seed0 + s, sampler="unipc", num_steps=6, restarts=[Restart(0.01, 6)])
                      for s in range(n // 8)])
    torch.save({"vids": vids}, out)
report = score_videos(vids)  # once: pass/fail here, the colours per video at the end
passed = torch.tensor([v.passed for v in report.videos])
print(f"{int(passed.sum())}/{n} pass", flush=True)

SNRS = [0.03, 0.1, 0.3, 1.0, 3.0]
scores = {}
g = torch.Generator().manual_seed(1234)
with torch.no_grad():
    for snr in SNRS:
        t_ = timestep_at_snr(abar, snr)
        a, b = float(abar[t_]) ** 0.5, float(1 - abar[t_]) ** 0.5
        for name, net in [("demo", demo), ("guide", guide)]:
            errs, ferrs = [], []
            for i in range(0, n, 8):
                x = vids[i:i + 8]
                e = torch.zeros(len(x)); fe = torch.zeros(len(x))
                for d in range(draws):
                    noise = correlate_frames(torch.randn(x.shape, generator=g), cfg.frame_noise_correlation)
                    x_t = q_sample(x, torch.full((len(x),), t_), noise, abar)
                    x0 = clean_from_output(net.predict(x_t, torch.full((len(x),), t_), None), x_t, a, b, cfg.prediction)
                    sq = (x0.clamp(-1, 1) - x) ** 2
                    e += sq.mean(dim=(1, 2, 3, 4)); fe += sq.mean(dim=(1, 3, 4)).max(dim=1).values
                errs.append(e / draws); ferrs.append(fe / draws)
            scores[f"{name} mse@{snr}"] = torch.cat(errs)
            scores[f"{name} maxframe@{snr}"] = torch.cat(ferrs)
        scores[f"demo-guide@{snr}"] = scores[f"demo mse@{snr}"] - scores[f"guide mse@{snr}"]
torch.save({"vids": vids, "passed": passed, "scores": scores}, out)


def auc(score, passed):
    """P(a passing video scores lower than a failing one)."""
    p, f = score[passed], score[~passed]
    if len(p) == 0 or len(f) == 0:
        return float("nan")
    return float(((p[:, None] < f[None, :]).float().mean() + 0.5 * (p[:, None] == f[None, :]).float().mean()))


def best_of(score, passed, k, reps=200):
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(reps):
        perm = torch.as_tensor(rng.permutation(len(score)))[: len(score) // k * k].reshape(-1, k)
        pick = perm[torch.arange(len(perm)), score[perm].argmin(1)]
        rates.append(passed[pick].float().mean().item())
    return float(np.mean(rates))


print(f"{'score':24s} {'AUC':>6s} " + " ".join(f"best-of-{k:<2d}" for k in (2, 4, 8)))
for name, s in scores.items():
    print(f"{name:24s} {auc(s, passed):6.3f} " + " ".join(f"{best_of(s, passed, k):9.3f}" for k in (2, 4, 8)), flush=True)

# The same by the colours each video shows (vdm.metrics): a score that only counts content would rank
# videos of fewer colours first, and say nothing within a stratum.
colours = torch.tensor([len(v.colors) for v in report.videos])
print("colours per video: " + ", ".join(f"{k}: {int((colours == k).sum())} ({int(passed[colours == k].sum())} pass)"
                                        for k in range(int(colours.max()) + 1)))
for name in ("demo mse@0.3", "demo mse@3.0"):
    corr = np.corrcoef(scores[name].numpy(), colours.numpy())[0, 1]
    within = ", ".join(f"{k} colours {auc(scores[name][colours == k], passed[colours == k]):.3f}" for k in (1, 2, 3))
    print(f"{name}: correlation with the colours {corr:.2f}; AUC within {within}")

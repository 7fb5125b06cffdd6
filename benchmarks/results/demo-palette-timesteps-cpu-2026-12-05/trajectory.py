"""Scratch: what a model's clean-video estimate looks like at each sampling step, finishing from
held-out clips noised to one SNR (vdm.evaluate.finished_videos' clips, noise and plan).

    python trajectory.py CHECKPOINT --snr 0.1 --clips 8 --frame 3 --out F.png

One row per clip: the clip's frame, the noisy frame, then frame `frame` of the x0 estimate at each
step, then the finished frame; each 32 px frame drawn 4x. The console lists each finished video's
failing properties.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vdm.demo.frames import png_bytes
from vdm.diffusion import Schedule, q_sample, split_prediction
from vdm.evaluate import HELD_OUT_SEED, held_out_batches, timestep_at_snr
from vdm.metrics import score_frames
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sampler_for, step_generator
from vdm.video import to_uint8_frames

SCALE, GAP = 4, 2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frame", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    backend = VideoGenerator(args.checkpoint, backend="torch", device="cpu", precision="fp32").backend
    abar = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    start = timestep_at_snr(abar, args.snr)
    sampler = sampler_for(backend, "unipc", min(args.steps, start + 1), None, start=start)
    x0, noise = next(held_out_batches(backend, 1, args.clips, HELD_OUT_SEED, "trajectory"))
    t = torch.full((args.clips,), start)
    x_t = q_sample(x0, t, noise, abar)
    estimates = []  # per step (B, C, T, H, W)
    predict = backend.predict

    def recording(x, tt, y=None):
        out = predict(x, tt, y)
        step = int(tt[0])
        estimates.append(split_prediction(out, x, float(abar[step]), backend.diffusion_config.prediction)[0])
        return out

    backend.predict = recording
    final = sample(backend, x_t, sampler, None, generator=step_generator(0, backend.device))
    columns = [x0, x_t.clamp(-1, 1), *estimates, final]
    rows = []
    for i in range(args.clips):
        report = score_frames(to_uint8_frames(final[i]), i)
        failed = [f"{name}: {p.detail}" for name, p in report.properties.items() if not p.passed]
        print(f"clip {i}: {'pass' if report.passed else 'FAIL ' + '; '.join(failed)}")
        tiles = [to_uint8_frames(c[i])[args.frame].repeat(SCALE, 0).repeat(SCALE, 1) for c in columns]
        row = []
        for tile in tiles:
            row += [tile, np.full((tile.shape[0], GAP, 3), 255, np.uint8)]
        rows += [np.concatenate(row, 1), np.full((GAP, sum(r.shape[1] for r in row), 3), 255, np.uint8)]
    with open(args.out, "wb") as f:
        f.write(png_bytes(np.concatenate(rows, 0)))
    print(f"timesteps {sampler.timesteps}; wrote {args.out}")


if __name__ == "__main__":
    main()

"""Per noise level: a checkpoint's clean-video error (and a palette model's cross-entropy) on held-out clips.

    python noise_curve.py CHECKPOINT [--points 29] [--range -8 6] [--batches 4] [--json F]

For each of `points` log-SNRs evenly spread over `range` (default -8 to 6), the nearest training timestep,
the held-out clips and noise of `vdm.evaluate.held_out_batches` (seed HELD_OUT_SEED), one network
call each. Reports, per timestep: ln SNR, the clean video's mean squared error (x0 MSE, [-1, 1]
units), the v loss it implies (x0 MSE / sigma^2) and, for a palette model, the cross-entropy of its
logits. CDCD's time warping (Dieleman et al. 2022) trains where the cross-entropy falls fastest
along the noise axis; this shows where that is for our schedule.
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from vdm.diffusion import Schedule, clean_from_output, palette_colours, palette_labels, q_sample
from vdm.evaluate import HELD_OUT_SEED, held_out_batches
from vdm.runtime.generator import VideoGenerator


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--points", type=int, default=29)
    parser.add_argument("--range", type=float, nargs=2, default=(-8.0, 6.0), metavar=("LOW", "HIGH"),
                        help="ln SNR range the points span")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    backend = VideoGenerator(args.checkpoint, backend="torch", device="cpu", precision="fp32").backend
    model, mcfg, dcfg = backend.model, backend.model_config, backend.diffusion_config  # the Unet3D, for its logits
    schedule = Schedule.from_config(dcfg)
    abar = np.asarray(schedule.alphas_cumprod)
    log_snr = np.log(abar / (1 - abar))  # falls with t
    targets = np.linspace(args.range[1], args.range[0], args.points)
    steps = sorted({int(np.argmin(np.abs(log_snr - x))) for x in targets})
    colours = palette_colours(mcfg.palette) if mcfg.palette else None
    batches = list(held_out_batches(backend, args.batches, args.batch_size, HELD_OUT_SEED, "the noise curve"))
    rows = []
    print(f"{'t':>5} {'ln SNR':>7} {'x0 MSE':>8} {'v loss':>8} {'CE':>7}")
    for step in steps:
        a, b = math.sqrt(abar[step]), math.sqrt(1 - abar[step])
        mse = ce = 0.0
        with torch.no_grad():
            for x0, noise in batches:
                t = torch.full((args.batch_size,), step)
                x_t = q_sample(x0, t, noise, abar)
                out = model(x_t, t, logits=colours is not None)
                if colours is not None:
                    ce += torch.nn.functional.cross_entropy(out, palette_labels(x0, colours)).item()
                    clean = model.palette_mix(out)
                else:
                    clean = clean_from_output(out, x_t, a, b, dcfg.prediction)
                mse += (clean.clamp(-1, 1) - x0).square().mean().item()
        n = len(batches)
        row = {"t": step, "log_snr": float(log_snr[step]), "x0_mse": mse / n, "v_loss": mse / n / b**2,
               "ce": ce / n if colours is not None else None}
        rows.append(row)
        print(f"{step:>5} {row['log_snr']:>7.2f} {row['x0_mse']:>8.4f} {row['v_loss']:>8.4f} "
              + (f"{row['ce']:>7.4f}" if row["ce"] is not None else "      -"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

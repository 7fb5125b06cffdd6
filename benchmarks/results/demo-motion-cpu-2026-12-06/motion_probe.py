"""Does a network's one-call clean-video estimate get a shape's outline worse the faster it moves?

    python motion_probe.py CHECKPOINT [--snr 0.1 0.3 1] [--clips 256]

Held-out one-shape clips (data seed HELD_OUT_SEED), noised to each SNR with a fixed noise seed; one
network call each. Per clip: the shape's outline error, 1 - IoU of its true mask and the pixels whose
nearest data colour (of the estimate) is the shape's colour, over all frames. Reported by speed
tercile. The data's speeds are 0.96-2.56 px per frame; a 3x3x3 convolution at full resolution aligns
only 1 px per frame, so a network that must align frames along the motion to pool their evidence
should lose more on fast shapes, if that pooling is what it lacks.

For a model with motion alignment (`[model] motion_align_levels`), also: the motion each MotionAlign
block estimates inside the shape (mean over its true mask, all frames but the bounce frames), against
the shape's true velocity: the median error in px per frame, and the median cosine between the two.
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from vdm.data import BACKGROUND, PALETTE, SyntheticShapes, _shape_masks
from vdm.diffusion import Schedule, clean_from_output, palette_colours, palette_labels
from vdm.evaluate import HELD_OUT_SEED, timestep_at_snr
from vdm.runtime.generator import VideoGenerator
from vdm.unet import MotionAlign

DATA_COLOURS = palette_colours((BACKGROUND, *PALETTE))  # (1 + K, 3): label 0 is the background


def one_shape_clips(frames: int, size: int, count: int):
    data = SyntheticShapes(frames, size, seed=HELD_OUT_SEED)
    index = 0
    while count:
        clip, tracks = data.clip_with_meta(index)
        index += 1
        if len(tracks) == 1:
            count -= 1
            yield clip, tracks[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--snr", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument("--clips", type=int, default=256)
    args = parser.parse_args()
    backend = VideoGenerator(args.checkpoint, backend="torch", device="cpu", precision="fp32").backend
    model, mcfg, dcfg = backend.model, backend.model_config, backend.diffusion_config
    abar = np.asarray(Schedule.from_config(dcfg).alphas_cumprod)
    clips, tracks = zip(*one_shape_clips(mcfg.frames, mcfg.size, args.clips))
    x0 = torch.stack(clips)  # (N, 3, T, H, W)
    masks = np.stack([_shape_masks(tr, mcfg.size, mcfg.size) for tr in tracks])  # (N, T, H, W)
    colour_index = [1 + [tuple(c) for c in PALETTE].index(tuple(tr.color)) for tr in tracks]
    speeds = np.array([math.hypot(*tr.velocity) for tr in tracks])
    terciles = np.quantile(speeds, [1 / 3, 2 / 3])
    bins = np.digitize(speeds, terciles)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    print(f"{args.checkpoint}: {len(tracks)} one-shape clips; speed terciles (px/frame) "
          f"{speeds.min():.2f}-{terciles[0]:.2f}-{terciles[1]:.2f}-{speeds.max():.2f}")
    aligns = [m for m in model.modules() if isinstance(m, MotionAlign)]
    flows: list[torch.Tensor] = []
    for align in aligns:  # (B, 2, T, H, W) motion of each block, px per frame
        align.motion.register_forward_hook(lambda module, inputs, output: flows.append(output.float()))
    true_velocity = np.array([tr.velocity for tr in tracks])  # (N, 2) (vy, vx) at frame 0
    # Frames whose velocity is that of frame 0 on both axes: before any bounce.
    steps = np.diff(np.stack([tr.positions for tr in tracks]), axis=1)  # (N, T-1, 2)
    unbounced = np.concatenate([np.ones((len(tracks), 1), bool),
                                (np.sign(steps) == np.sign(true_velocity[:, None])).all(-1)], axis=1)  # (N, T)
    unbounced = np.logical_and.accumulate(unbounced, axis=1)
    print(f"{'SNR':>5} {'t':>4} | outline error (1 - IoU), slow / mid / fast | per frame 0..T-1"
          + (" | motion estimate per block: median error px/frame, median cosine" if aligns else ""))
    for snr in args.snr:
        step = timestep_at_snr(abar, snr)
        a, b = math.sqrt(abar[step]), math.sqrt(1 - abar[step])
        errors, per_frame, motion = [], [], [[] for _ in aligns]
        with torch.no_grad():
            for lo in range(0, len(x0), 16):
                x = x0[lo:lo + 16]
                x_t = a * x + b * noise[lo:lo + 16]
                t = torch.full((len(x),), step)
                out = model(x_t, t, logits=bool(mcfg.palette))
                clean = model.palette_mix(out) if mcfg.palette else clean_from_output(out, x_t, a, b, dcfg.prediction)
                labels = palette_labels(clean.clamp(-1, 1), DATA_COLOURS).numpy()  # (b, T, H, W)
                for i in range(len(x)):
                    truth, found = masks[lo + i], labels[i] == colour_index[lo + i]
                    union = (truth | found).sum((1, 2))
                    inter = (truth & found).sum((1, 2))
                    errors.append(1 - inter.sum() / union.sum())
                    per_frame.append(1 - inter / np.maximum(union, 1))
                for k, flow in enumerate(flows):
                    for i in range(len(x)):
                        inside = torch.from_numpy(masks[lo + i] & unbounced[lo + i][:, None, None])  # (T, H, W)
                        if inside.any():
                            motion[k].append(flow[i][:, inside].mean(1).numpy())  # (2,) (dy, dx)
                flows.clear()
        errors, per_frame = np.array(errors), np.array(per_frame)
        by_speed = " / ".join(f"{errors[bins == k].mean():.3f}" for k in range(3))
        frames = " ".join(f"{e:.3f}" for e in per_frame.mean(0))
        estimates = []
        for found in motion:
            found = np.array(found)  # (N, 2)
            error = np.median(np.linalg.norm(found - true_velocity, axis=1))
            cosine = np.median((found * true_velocity).sum(1) / (np.linalg.norm(found, axis=1)
                                                                   * np.linalg.norm(true_velocity, axis=1) + 1e-9))
            estimates.append(f"{error:.2f}, {cosine:.2f}")
        print(f"{snr:>5g} {step:>4} | {by_speed} | {frames}" + (" | " + "; ".join(estimates) if estimates else ""))


if __name__ == "__main__":
    main()

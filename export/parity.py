"""Parity of an exported network against the PyTorch fp32 model, on several random inputs.

Error measures: the max absolute error, the RMS error relative to the reference output's standard
deviation, and the PSNR with the reference's peak-to-peak range as the signal.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from vdm.fidelity import psnr_db
from vdm.unet import Unet3D

# The export fails when the relative RMS error exceeds these (fp32 is ~1e-6 in practice, fp16 ~1e-3).
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


def error_stats(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    err = out.astype(np.float64) - ref.astype(np.float64)
    mse = float(np.mean(err**2))
    peak = float(np.ptp(ref))
    return {
        "max_abs_error": float(np.max(np.abs(err))),
        "rel_error": math.sqrt(mse) / max(float(np.std(ref)), 1e-12),
        "psnr_db": psnr_db(mse, peak),
    }


def parity_cases(model: Unet3D, batch: int, frames: int, height: int, width: int,
                 seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random x at a low, middle and high timestep (and classes incl. the null class when conditional)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    cases = []
    for t in (10, 500, 990):
        feed = {"x": torch.randn(batch, cfg.network_channels, frames, height, width, generator=g),
                "t": torch.full((batch,), t, dtype=torch.long)}
        if cfg.conditional:
            feed["y"] = torch.randint(0, cfg.null_class + 1, (batch,), generator=g)  # incl. the null class
        cases.append(feed)
    return cases


def measure_parity(model: Unet3D, run_exported, cases: list[dict[str, torch.Tensor]], tolerance: float) -> dict:
    """Compare `run_exported(feed) -> np.ndarray` with the fp32 model on each case; worst case wins."""
    stats = []
    with torch.inference_mode():
        for feed in cases:
            ref = model(feed["x"], feed["t"], feed.get("y")).numpy()
            stats.append(error_stats(run_exported({k: v.numpy() for k, v in feed.items()}), ref))
    worst = {
        "max_abs_error": max(s["max_abs_error"] for s in stats),
        "rel_error": max(s["rel_error"] for s in stats),
        "psnr_db": min(s["psnr_db"] for s in stats),
    }
    return {**worst, "tolerance_rel_error": tolerance, "passed": worst["rel_error"] <= tolerance,
            "cases": len(cases), "timesteps": [int(c["t"][0]) for c in cases]}

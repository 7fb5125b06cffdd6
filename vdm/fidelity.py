"""How close one output is to another: PSNR, the one definition every comparison in vdm uses.

Videos are in [-1, 1], so their PSNR takes the data range, 2, as the peak. Network outputs
(export parity) take the reference's own peak-to-peak range. Identical outputs are capped at
PSNR_CAP_DB, which keeps reports and manifests valid JSON (no Infinity).
"""
from __future__ import annotations

import math

import torch

PSNR_CAP_DB = 200.0
VIDEO_PEAK = 2.0  # peak-to-peak range of videos in [-1, 1]


def psnr_db(mse: float, peak: float) -> float:
    """10 log10(peak^2 / mse), capped at PSNR_CAP_DB (which identical outputs, mse = 0, get)."""
    if mse <= 0:
        return PSNR_CAP_DB
    return min(10 * math.log10(peak**2 / mse), PSNR_CAP_DB)


def video_psnr(videos: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of videos (B, C, T, H, W) in [-1, 1] against a reference of the same shape."""
    if videos.shape != reference.shape:
        raise ValueError(f"cannot compare videos of shape {tuple(videos.shape)} with {tuple(reference.shape)}")
    mse = float((videos.detach().double().cpu() - reference.detach().double().cpu()).pow(2).mean())
    return psnr_db(mse, VIDEO_PEAK)

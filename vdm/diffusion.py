"""The diffusion math: schedules, the forward process, the training loss, and sampler updates.

Small pure functions on tensors, named as in the papers: DDPM (Ho et al. 2020), improved DDPM
(Nichol & Dhariwal 2021, cosine schedule), DDIM (Song et al. 2021), v-prediction (Salimans & Ho
2022). The schedule is computed once in float64; per-step values are gathered from it. The runtime's
sampling loop and the training loop both use these functions, so there is one copy of the math.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vdm.config import DiffusionConfig


def linear_betas(num_timesteps: int) -> np.ndarray:
    """DDPM's linear schedule, scaled so any number of timesteps spans the same noise range."""
    scale = 1000 / num_timesteps
    return np.clip(np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64), None, 0.999)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM's cosine schedule: alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2)."""
    def alpha_bar(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return np.array(betas, dtype=np.float64)


def make_betas(schedule: str, num_timesteps: int) -> np.ndarray:
    if schedule == "linear":
        return linear_betas(num_timesteps)
    elif schedule == "cosine":
        return cosine_betas(num_timesteps)
    else:
        raise ValueError(f"unknown beta schedule {schedule!r}")


def shift_alphas_cumprod(alphas_cumprod: np.ndarray, shift: float) -> np.ndarray:
    """alpha_bar with every SNR = abar / (1 - abar) divided by shift**2."""
    snr = alphas_cumprod / (1.0 - alphas_cumprod) / shift**2
    return snr / (1.0 + snr)


@dataclass(frozen=True)
class Schedule:
    """The forward process, precomputed in float64 (numpy arrays, or tensors on a device: see `to`)."""

    betas: np.ndarray | torch.Tensor  # (num_timesteps,)
    alphas_cumprod: np.ndarray | torch.Tensor  # (num_timesteps,) alpha_bar_t = prod_{s<=t} (1 - beta_s)
    prediction: str  # 'epsilon' or 'v'

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "Schedule":
        betas = make_betas(cfg.schedule, cfg.num_timesteps)
        alphas_cumprod = np.cumprod(1.0 - betas)
        if cfg.noise_shift != 1.0:
            alphas_cumprod = shift_alphas_cumprod(alphas_cumprod, cfg.noise_shift)
            betas = 1.0 - alphas_cumprod / np.concatenate([[1.0], alphas_cumprod[:-1]])
        return cls(betas, alphas_cumprod, cfg.prediction)

    def to(self, device: torch.device | str) -> "Schedule":
        """The same schedule as float64 tensors on `device`, so `gather` copies nothing from the host
        (on CUDA such a copy makes the host wait for the GPU)."""
        return Schedule(torch.as_tensor(self.betas).to(device), torch.as_tensor(self.alphas_cumprod).to(device),
                        self.prediction)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)


def timestep_at_snr(alphas_cumprod: np.ndarray, snr: float) -> int:
    """The training timestep whose signal-to-noise ratio abar / (1 - abar) is nearest `snr` in log."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    return int(np.argmin(np.abs(np.log(abar / (1 - abar)) - math.log(snr))))


def timesteps_in_snr_range(alphas_cumprod: np.ndarray, low: float, high: float) -> tuple[int, int]:
    """(first, count): the consecutive training timesteps whose SNR = abar / (1 - abar) lies in
    [low, high] (SNR falls as t grows); count is 0 when none does."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    snr = abar / (1.0 - abar)
    inside = np.flatnonzero((snr >= low) & (snr <= high))
    return (int(inside[0]), len(inside)) if len(inside) else (0, 0)


def log_snr_normal_probabilities(alphas_cumprod: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(num_timesteps,) probabilities that draw training timesteps with ln SNR about normal(mean, std):
    each timestep gets the normal's mass over the stretch of ln SNR between its neighbours' midpoints
    (EDM's log-normal noise levels, on a discrete schedule). Uniform timesteps put ln SNR far wider."""
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    log_snr = np.log(abar / (1.0 - abar))  # falls as t grows
    edges = np.concatenate([[np.inf], (log_snr[:-1] + log_snr[1:]) / 2, [-np.inf]])
    cdf = np.array([0.5 * (1.0 + math.erf((e - mean) / (std * math.sqrt(2.0)))) for e in edges])
    return cdf[:-1] - cdf[1:]  # timestep t stands for ln SNR in (edges[t + 1], edges[t]]


def gather(values: np.ndarray | torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] as float32 on t's device, shaped (B, 1, ..., 1) to broadcast over a (B, ...) tensor."""
    out = torch.as_tensor(values, device=t.device)[t].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def correlate_frames(noise: torch.Tensor, correlation: float) -> torch.Tensor:
    """Independent standard normal noise (B, C, T, H, W) -> unit-variance noise whose frames are
    pairwise `correlation`-correlated at each pixel: a * noise + b * (its mean over frames), with
    a^2 = 1 - correlation and (a + b)^2 = a^2 + correlation * T. A fixed linear map of the draws, so a
    seed gives the same noise on every backend, and 0 returns `noise` itself."""
    if correlation == 0:
        return noise
    frames = noise.shape[2]
    a = math.sqrt(1.0 - correlation)
    b = math.sqrt(a * a + correlation * frames) - a
    return a * noise + b * noise.mean(dim=2, keepdim=True)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             alphas_cumprod: np.ndarray | torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; x0, noise (B, C, T, H, W), t (B,)."""
    abar = gather(alphas_cumprod, t, x0.ndim)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0."""
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0


def min_snr_weight(abar: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): each timestep's loss as if it were x0's MSE
    weighted by min(SNR, gamma), so the easy low-noise steps stop dominating training.

    SNR = abar / (1 - abar); epsilon targets take min(SNR, gamma) / SNR, v targets min(SNR, gamma) / (SNR + 1),
    x0 targets min(SNR, gamma).
    """
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        return clipped / snr
    elif prediction == "v":
        return clipped / (snr + 1)
    elif prediction == "x0":
        return clipped
    else:
        raise ValueError(f"unknown prediction {prediction!r}")


def training_loss(model_output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                  schedule: Schedule, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Mean squared error against the prediction target: the simple DDPM loss, or with
    min_snr_gamma each clip's error weighted by min_snr_weight."""
    abar = gather(schedule.alphas_cumprod, t, x0.ndim)  # (B, 1, 1, 1, 1)
    if schedule.prediction == "epsilon":
        target = noise
    elif schedule.prediction == "v":
        target = v_target(x0, noise, abar)
    elif schedule.prediction == "x0":
        target = x0
    else:
        raise ValueError(f"unknown prediction {schedule.prediction!r}")
    error = (model_output.float() - target) ** 2
    if min_snr_gamma is None:
        return torch.mean(error)
    return torch.mean(error * min_snr_weight(abar, min_snr_gamma, schedule.prediction))


def palette_colours(palette: tuple[tuple[int, int, int], ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """RGB colours in 0..255 -> (K, 3) float32 in [-1, 1], the video's range."""
    return torch.tensor(palette, dtype=torch.float32, device=device) / 127.5 - 1


def palette_labels(x0: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) video, (K, 3) colours -> (B, T, H, W) int64: each pixel's nearest colour."""
    distances = (x0.float()[:, None] - colours[None, :, :, None, None, None]).square().sum(2)  # (B, K, T, H, W)
    return distances.argmin(1)


def palette_loss(logits: torch.Tensor, x0: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a palette network's logits (B, K, T, H, W) against the colour of each pixel of
    the clean video x0 (B, 3, T, H, W), averaged over pixels and timesteps alike (as CDCD trains)."""
    return F.cross_entropy(logits.float(), palette_labels(x0, colours))


def implied_v_loss(clean: torch.Tensor, x0: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The v loss of the v a clean-video estimate implies: v's error is the clean video's error over
    sigma = sqrt(1 - abar), so a clean-video model's loss compares with a v model's."""
    return torch.mean((clean.float() - x0) ** 2 / (1 - abar))


def clean_from_output(model_output: torch.Tensor, x_t: torch.Tensor, a: float | torch.Tensor,
                      b: float | torch.Tensor, prediction: str) -> torch.Tensor:
    """The clean video x_0 the network's output implies, where x_t = a x_0 + b eps (a = sqrt(alpha_bar))."""
    if prediction == "epsilon":
        return (x_t - b * model_output) / a
    if prediction == "v":
        return a * x_t - b * model_output
    if prediction == "x0":
        return model_output
    raise ValueError(f"unknown prediction {prediction!r}")


def with_estimate(x_t: torch.Tensor, x0_estimate: torch.Tensor) -> torch.Tensor:
    """A self-conditioning network's input (B, 2C, T, H, W): x_t (B, C, T, H, W), then its clean-video
    estimate (B, C, T, H, W): the previous step's, or zeros where there is none."""
    return torch.cat([x_t, x0_estimate.to(x_t.dtype)], dim=1)


def split_prediction(model_output: torch.Tensor, x_t: torch.Tensor, abar_t: float,
                     prediction: str, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """From the network's output, the predicted (x_0, eps) at a step with alpha_bar = abar_t.

    With clip, x_0 is clamped to the data range [-1, 1] and eps re-derived so both stay consistent.
    """
    a, b = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    x0 = clean_from_output(model_output, x_t, a, b, prediction)
    if prediction == "epsilon" and not clip:
        return x0, model_output  # exact: no round trip through x0
    if clip:
        x0 = x0.clamp(-1, 1)
    eps = (x_t - a * x0) / b
    return x0, eps


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, abar_prev: float, sigma: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z."""
    x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
    if sigma > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def ddim_sigma(abar_t: float, abar_prev: float, eta: float) -> float:
    """sigma_t(eta); eta = 1 gives the DDPM posterior's standard deviation, eta = 0 a deterministic step."""
    return eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))


def ddpm_step(x_t: torch.Tensor, x0: torch.Tensor, abar_t: float, abar_prev: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """DDPM ancestral step: a sample of q(x_prev | x_t, x_0) (Ho et al. 2020, eq. 6-7).

    Works on a respaced subset of timesteps: beta is re-derived as 1 - abar_t / abar_prev.
    """
    beta = 1 - abar_t / abar_prev
    coef_x0 = math.sqrt(abar_prev) * beta / (1 - abar_t)
    coef_xt = math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
    mean = coef_x0 * x0 + coef_xt * x_t
    variance = beta * (1 - abar_prev) / (1 - abar_t)
    if noise is None or variance <= 0:
        return mean
    return mean + math.sqrt(variance) * noise

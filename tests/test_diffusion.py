"""Specification of vdm.diffusion: schedules against their closed forms, the forward process, the
training targets, and the sampler updates (DDIM, DDPM, respacing)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vdm.config import DiffusionConfig
from vdm.errors import VdmError
from vdm.diffusion import (Schedule, cosine_betas, ddim_sigma, ddim_step, ddpm_step, gather, implied_v_loss, linear_betas,
                           log_snr_normal_probabilities, min_snr_weight, q_sample, split_prediction,
                           timesteps_in_snr_range, training_loss, v_target)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def schedule(kind: str = "cosine", prediction: str = "epsilon", steps: int = 1000) -> Schedule:
    return Schedule.from_config(DiffusionConfig(num_timesteps=steps, schedule=kind, prediction=prediction))


# ---------------------------------------------------------------------------------------------
# Schedules


def test_timesteps_in_an_snr_range_are_the_consecutive_ones_whose_snr_lies_in_it():
    abar = np.array([0.99, 0.9, 0.75, 0.5, 0.25, 0.1])  # SNR 99, 9, 3, 1, 1/3, 1/9
    assert timesteps_in_snr_range(abar, 1, math.inf) == (0, 4)
    assert timesteps_in_snr_range(abar, 0.2, 5) == (2, 3)
    assert timesteps_in_snr_range(abar, 0, 0.05) == (0, 0)


def test_log_snr_normal_probabilities_give_the_timesteps_a_normal_log_snr():
    abar = schedule("cosine").alphas_cumprod
    log_snr = np.log(abar / (1 - abar))
    p = log_snr_normal_probabilities(abar, -1.0, 1.5)
    assert p.shape == (1000,) and (p >= 0).all() and p.sum() == pytest.approx(1, abs=1e-9)
    mean = (p * log_snr).sum()
    assert mean == pytest.approx(-1.0, abs=0.01)
    assert math.sqrt((p * (log_snr - mean) ** 2).sum()) == pytest.approx(1.5, abs=0.01)
    density = p / np.abs(np.gradient(log_snr))  # per unit of ln SNR
    assert abs(log_snr[density.argmax()] + 1.0) < 0.1
    assert p[log_snr > 5].sum() < 1e-3  # far from the mean: almost never drawn


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_is_the_cumulative_product_of_one_minus_beta(kind):
    s = schedule(kind)
    assert s.betas.dtype == s.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - s.betas), rtol=0, atol=0)


@pytest.mark.parametrize("kind, steps", [("cosine", 2), ("cosine", 10), ("cosine", 1000), ("cosine", 4000),
                                         ("linear", 50), ("linear", 1000), ("linear", 4000)])
def test_betas_lie_strictly_between_zero_and_one(kind, steps):
    betas = schedule(kind, steps=steps).betas
    assert betas.shape == (steps,)
    assert (betas > 0).all() and (betas < 1).all()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_noise_shift_divides_every_snr_by_its_square_and_keeps_betas_consistent(kind):
    plain = schedule(kind)
    shifted = Schedule.from_config(DiffusionConfig(schedule=kind, prediction="epsilon", noise_shift=2.0))
    snr = lambda abar: abar / (1 - abar)  # noqa: E731
    np.testing.assert_allclose(snr(shifted.alphas_cumprod), snr(plain.alphas_cumprod) / 4, rtol=1e-9)
    np.testing.assert_allclose(shifted.alphas_cumprod, np.cumprod(1 - shifted.betas), rtol=1e-12)
    assert (shifted.betas > 0).all() and (shifted.betas < 1).all()
    assert (np.diff(shifted.alphas_cumprod) < 0).all()
    unshifted = Schedule.from_config(DiffusionConfig(schedule=kind, prediction="epsilon", noise_shift=1.0))
    assert np.array_equal(unshifted.betas, plain.betas)  # 1 is today's schedule, bit for bit


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), float("inf")])
def test_noise_shift_must_be_a_positive_number(shift):
    with pytest.raises(VdmError, match="noise_shift"):
        DiffusionConfig(noise_shift=shift)


@pytest.mark.parametrize("steps", [2, 10, 20])
def test_linear_betas_stay_below_one_for_short_schedules(steps):
    betas = schedule("linear", steps=steps).betas
    assert (betas < 1).all()


@pytest.mark.parametrize("steps", [50, 1000, 4000])
def test_linear_betas_span_ddpm_range_scaled_to_1000_steps(steps):
    betas = linear_betas(steps)
    scale = 1000 / steps
    assert betas[0] == pytest.approx(scale * 1e-4) and betas[-1] == pytest.approx(scale * 0.02)
    np.testing.assert_allclose(np.diff(betas), np.full(steps - 1, (betas[-1] - betas[0]) / (steps - 1)))


def test_cosine_alphas_cumprod_follows_the_cos_squared_ratio_where_unclipped():
    steps, s, max_beta = 1000, 0.008, 0.999
    betas = cosine_betas(steps, s=s, max_beta=max_beta)
    alphas_cumprod = np.cumprod(1 - betas)
    f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    unclipped = np.flatnonzero(np.cumprod(betas < max_beta))  # every step before the first clipped beta
    assert len(unclipped) > 990  # clipping only touches the very end
    expected = np.array([f(i + 1) / f(0) for i in unclipped])
    np.testing.assert_allclose(alphas_cumprod[unclipped], expected, rtol=0, atol=1e-6)


def test_cosine_betas_are_clipped_at_max_beta():
    assert cosine_betas(1000).max() == 0.999


def test_gather_broadcasts_per_example_values_as_float32():
    values = np.array([0.5, 0.25, 0.125])
    out = gather(values, torch.tensor([2, 0]), ndim=5)
    assert out.shape == (2, 1, 1, 1, 1) and out.dtype == torch.float32
    assert out.flatten().tolist() == [0.125, 0.5]


# ---------------------------------------------------------------------------------------------
# Forward process and training targets


def test_q_sample_with_fixed_noise_is_the_closed_form():
    s = schedule()
    x0, noise, t = randn(2, 3, 2, 4, 4, seed=1), randn(2, 3, 2, 4, 4, seed=2), torch.tensor([0, 700])
    x_t = q_sample(x0, t, noise, s.alphas_cumprod)
    for i in range(2):
        abar = float(s.alphas_cumprod[t[i]])
        expected = math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i]
        # q_sample gathers alpha_bar as float32, so 1 - alpha_bar near t=0 keeps ~4 significant digits.
        torch.testing.assert_close(x_t[i], expected, rtol=0, atol=1e-5)


def test_q_sample_has_the_forward_process_mean_and_variance():
    s = schedule()
    t, n = 300, 200_000
    abar = float(s.alphas_cumprod[t])
    x0 = torch.full((n, 1), 0.8)
    x_t = q_sample(x0, torch.full((n,), t), randn(n, 1, seed=3), s.alphas_cumprod)
    # 200k samples: the standard error of the mean is ~0.002, of the variance ~0.003.
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 0.8, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - abar, abs=0.01)


def test_epsilon_loss_is_the_mean_squared_error_to_the_noise():
    s = schedule(prediction="epsilon")
    x0, noise, out = randn(2, 3, 2, 4, 4, seed=1), randn(2, 3, 2, 4, 4, seed=2), randn(2, 3, 2, 4, 4, seed=3)
    t = torch.tensor([5, 500])
    assert training_loss(noise, x0, noise, t, s).item() == 0.0
    torch.testing.assert_close(training_loss(out, x0, noise, t, s), ((out - noise) ** 2).mean())


def test_v_loss_targets_sqrt_abar_eps_minus_sqrt_one_minus_abar_x0():
    s = schedule(prediction="v")
    x0, noise, t = randn(2, 3, 2, 4, 4, seed=1), randn(2, 3, 2, 4, 4, seed=2), torch.tensor([5, 500])
    abar = torch.tensor([s.alphas_cumprod[5], s.alphas_cumprod[500]], dtype=torch.float32).reshape(2, 1, 1, 1, 1)
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(v_target(x0, noise, abar), v, rtol=0, atol=0)
    assert training_loss(v, x0, noise, t, s).item() == pytest.approx(0.0, abs=1e-12)
    assert training_loss(noise, x0, noise, t, s).item() > 0.01  # the epsilon target is not the v target


def test_x0_loss_is_the_clean_videos_squared_error_and_its_implied_v_loss_that_of_a_v_model():
    s, v = schedule(prediction="x0"), schedule(prediction="v")
    x0, noise, out = randn(2, 3, 2, 4, 4, seed=1), randn(2, 3, 2, 4, 4, seed=2), randn(2, 3, 2, 4, 4, seed=3)
    t = torch.tensor([5, 500])
    torch.testing.assert_close(training_loss(out, x0, noise, t, s), ((out - x0) ** 2).mean())
    abar = torch.from_numpy(s.alphas_cumprod[t.numpy()]).float().reshape(2, 1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    implied_v = (abar.sqrt() * x_t - out) / (1 - abar).sqrt()  # the v model whose clean video is `out`
    torch.testing.assert_close(implied_v_loss(out, x0, abar), training_loss(implied_v, x0, noise, t, v),
                               rtol=1e-5, atol=0)
    snr = abar.flatten() / (1 - abar.flatten())
    torch.testing.assert_close(min_snr_weight(abar.flatten(), 5.0, "x0"), snr.clamp(max=5))


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("t", [0, 400, 999])
def test_split_prediction_of_the_true_target_recovers_x0_and_eps(prediction, t):
    s = schedule(prediction=prediction)
    x0, eps = randn(1, 3, 2, 4, 4, seed=1).clamp(-1, 1), randn(1, 3, 2, 4, 4, seed=2)
    abar = float(s.alphas_cumprod[t])
    x_t = q_sample(x0, torch.tensor([t]), eps, s.alphas_cumprod)
    target = eps if prediction == "epsilon" else v_target(x0, eps, torch.tensor(abar, dtype=torch.float32))
    x0_hat, eps_hat = split_prediction(target, x_t, abar, prediction, clip=False)
    # float32 round trip: dividing by sqrt(abar) (t=999: ~5e-5) or sqrt(1-abar) (t=0: ~3e-3) amplifies rounding.
    scale = 1 / min(math.sqrt(abar), math.sqrt(1 - abar))
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=2e-7 * scale)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=2e-7 * scale)


def test_split_prediction_clips_x0_and_keeps_eps_consistent():
    x_t, out, abar = randn(1, 3, 2, 4, 4, seed=1) * 3, randn(1, 3, 2, 4, 4, seed=2), 0.6
    x0, eps = split_prediction(out, x_t, abar, "epsilon", clip=True)
    assert x0.min() >= -1 and x0.max() <= 1
    torch.testing.assert_close(math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps, x_t)


def test_split_prediction_refuses_an_unknown_prediction():
    with pytest.raises(ValueError, match="unknown prediction"):
        split_prediction(torch.zeros(1), torch.zeros(1), 0.5, "sample")


# ---------------------------------------------------------------------------------------------
# Sampler updates


@pytest.fixture
def consistent_step():
    """(x_t, x0, eps, abar_t, abar_prev): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps exactly as DDIM sees it."""
    s = schedule()
    abar_t, abar_prev = float(s.alphas_cumprod[600]), float(s.alphas_cumprod[550])
    x0, x_t = randn(2, 3, 2, 4, 4, seed=1).clamp(-1, 1), randn(2, 3, 2, 4, 4, seed=2)
    eps = (x_t - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
    return x_t, x0, eps, abar_t, abar_prev


def test_ddim_sigma_at_eta_one_is_the_ddpm_posterior_std(consistent_step):
    _, _, _, abar_t, abar_prev = consistent_step
    beta = 1 - abar_t / abar_prev
    posterior_variance = beta * (1 - abar_prev) / (1 - abar_t)
    assert ddim_sigma(abar_t, abar_prev, 1.0) == pytest.approx(math.sqrt(posterior_variance), rel=1e-12)
    assert ddim_sigma(abar_t, abar_prev, 0.0) == 0.0


def test_ddim_at_eta_one_equals_ddpm_given_the_same_noise(consistent_step):
    x_t, x0, eps, abar_t, abar_prev = consistent_step
    z = randn(*x_t.shape, seed=9)
    ddim = ddim_step(x0, eps, abar_prev, ddim_sigma(abar_t, abar_prev, 1.0), z)
    ddpm = ddpm_step(x_t, x0, abar_t, abar_prev, z)
    torch.testing.assert_close(ddim, ddpm, rtol=0, atol=1e-5)


def test_ddim_at_eta_one_has_the_ddpm_mean_without_noise(consistent_step):
    x_t, x0, eps, abar_t, abar_prev = consistent_step
    ddim_mean = ddim_step(x0, eps, abar_prev, ddim_sigma(abar_t, abar_prev, 1.0), None)
    ddpm_mean = ddpm_step(x_t, x0, abar_t, abar_prev, None)
    torch.testing.assert_close(ddim_mean, ddpm_mean, rtol=0, atol=1e-5)


def test_deterministic_ddim_step_renoises_x0_with_the_same_eps(consistent_step):
    _, x0, eps, _, abar_prev = consistent_step
    expected = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
    torch.testing.assert_close(ddim_step(x0, eps, abar_prev, 0.0, None), expected, rtol=0, atol=1e-6)


def test_ddpm_last_step_returns_x0_exactly(consistent_step):
    x_t, x0, _, abar_t, _ = consistent_step
    out = ddpm_step(x_t, x0, abar_t, 1.0, randn(*x_t.shape, seed=9))
    assert torch.equal(out, x0)


# ---------------------------------------------------------------------------------------------
# Min-SNR-gamma loss weighting


def test_min_snr_weight_caps_the_snr_at_gamma_for_each_target():
    abar = torch.tensor([0.5, 0.9, 0.999])  # SNR 1, 9, 999
    snr = abar / (1 - abar)
    torch.testing.assert_close(min_snr_weight(abar, 5.0, "epsilon"), snr.clamp(max=5) / snr)
    torch.testing.assert_close(min_snr_weight(abar, 5.0, "v"), snr.clamp(max=5) / (snr + 1))
    assert min_snr_weight(abar, 5.0, "v")[0] == pytest.approx(0.5)  # SNR 1 < gamma: v's weight SNR / (SNR + 1)


def test_min_snr_weighted_loss_weights_each_clip_by_its_timestep():
    s = schedule()
    x0, noise = randn(2, 3, 2, 4, 4, seed=1), randn(2, 3, 2, 4, 4, seed=2)
    t = torch.tensor([50, 900])
    out = randn(2, 3, 2, 4, 4, seed=3)
    abar = torch.from_numpy(s.alphas_cumprod[t.numpy()]).float()
    per_clip = torch.stack([training_loss(out[i:i + 1], x0[i:i + 1], noise[i:i + 1], t[i:i + 1], s) for i in range(2)])
    expected = (per_clip * min_snr_weight(abar, 5.0, s.prediction)).mean()
    torch.testing.assert_close(training_loss(out, x0, noise, t, s, min_snr_gamma=5.0), expected, rtol=1e-5, atol=0)

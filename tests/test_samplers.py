"""Specification of the samplers (vdm.samplers): timestep plans, the update rules, their order of
accuracy on a problem with a known exact solution, and the contract the sampling loop relies on."""
from __future__ import annotations

import math
import re

import pytest
import torch

from vdm.config import DiffusionConfig, ModelConfig
from vdm.diffusion import Schedule, ddim_step, ddpm_step
from vdm.errors import VdmError
from vdm.runtime.backend import Backend
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import initial_noise, sample, sampler_for
from vdm.samplers import (DEFAULT_SAMPLER, DEFAULT_STEPS, KARRAS_RHO, KARRAS_SIGMA_MAX, SAMPLERS, SPACINGS, UniPC,
                          check_timesteps, dpm_solver_pp_sde_step, dpm_solver_pp_step, make_sampler,
                          spaced_timesteps)

ODE_SAMPLERS = ("ddim", "dpm++2m", "unipc")  # deterministic: they solve the probability-flow ODE


def alphas_cumprod(schedule: str = "cosine", num_timesteps: int = 1000):
    return Schedule.from_config(DiffusionConfig(schedule=schedule, num_timesteps=num_timesteps)).alphas_cumprod


def uniform_video(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Timestep plans


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_plan_of_every_step_count_is_num_steps_unique_decreasing_timesteps_in_range(schedule, spacing):
    ac = alphas_cumprod(schedule)
    for num_steps in range(2 if spacing == "leading" else 1, 1001):  # float rounding once overshot for 62 of them
        ts = spaced_timesteps(ac, num_steps, spacing)
        assert len(ts) == num_steps
        assert all(a > b for a, b in zip(ts, ts[1:]))
        assert 0 <= ts[-1] and ts[0] <= 999
        if spacing in ("linspace", "logsnr", "karras") and num_steps > 1:
            assert (ts[0], ts[-1]) == (999, 0)


def test_leading_spacing_refuses_a_single_step_at_t_zero():
    with pytest.raises(VdmError, match="leading spacing with 1 step calls the network at t=0 only"):
        spaced_timesteps(alphas_cumprod(), 1, "leading")


@pytest.mark.parametrize("spacing, first, last", [("linspace", 999, 0), ("logsnr", 999, 0), ("karras", 999, 0),
                                                  ("trailing", 999, 99), ("leading", 900, 0)])
def test_where_each_spacing_starts_and_ends_at_ten_steps(spacing, first, last):
    ts = spaced_timesteps(alphas_cumprod(), 10, spacing)
    assert (ts[0], ts[-1]) == (first, last)


def lambdas_of(ac, timesteps: list[int]) -> list[float]:
    return [0.5 * math.log(ac[t] / (1 - ac[t])) for t in timesteps]


def test_logsnr_plan_is_evenly_spaced_in_lambda_where_timesteps_are_dense_enough():
    # The cosine schedule's last timesteps move lambda by 3.5, 0.7, 0.4: the first targets collide there.
    ac = alphas_cumprod()
    lambdas = lambdas_of(ac, spaced_timesteps(ac, 10, "logsnr"))
    gaps = [b - a for a, b in zip(lambdas, lambdas[1:])][3:]
    assert max(gaps) / min(gaps) < 1.1


def test_karras_plan_starts_at_the_loops_noise_then_follows_karras_sigmas():
    ac = alphas_cumprod()
    ts = spaced_timesteps(ac, 8, "karras")
    sigmas = [math.sqrt((1 - ac[t]) / ac[t]) for t in ts[1:]]
    ramp = [(s ** (1 / KARRAS_RHO) - sigmas[-1] ** (1 / KARRAS_RHO)) for s in sigmas]
    steps = [a - b for a, b in zip(ramp, ramp[1:])]
    assert ts[0] == 999 and ts[-1] == 0
    assert sigmas[0] == pytest.approx(KARRAS_SIGMA_MAX, rel=0.05)
    assert max(steps) / min(steps) < 1.2  # evenly spaced in sigma^(1/rho), up to rounding to timesteps


@pytest.mark.parametrize("num_steps", [100, 300, 600, 1000])
@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
def test_noise_level_plans_on_the_cosine_schedule_have_no_duplicate_timesteps(num_steps, spacing):
    # Mapping noise levels to integer timesteps collides at the cosine schedule's ends, where one
    # timestep moves lambda by 0.6 to 3.5 (a known duplicate-timestep bug elsewhere).
    ts = spaced_timesteps(alphas_cumprod("cosine"), num_steps, spacing)
    assert len(set(ts)) == num_steps


@pytest.mark.parametrize("timesteps, message", [([5, 5, 0], "repeat"), ([0, 5], "decrease"),
                                                ([1000, 3], "lie in 0..999"), ([3, -1], "lie in 0..999"),
                                                ([], "at least one")])
def test_check_timesteps_refuses_a_bad_plan_with_a_clear_message(timesteps, message):
    with pytest.raises(VdmError, match=message):
        check_timesteps(timesteps, 1000)


def test_an_unknown_spacing_is_refused_naming_the_choices():
    with pytest.raises(VdmError, match="unknown timestep spacing 'quadratic'; choose one of linspace"):
        spaced_timesteps(alphas_cumprod(), 10, "quadratic")


@pytest.mark.parametrize("num_steps", [0, -3, 1001])
def test_step_counts_outside_the_training_timesteps_are_refused(num_steps):
    with pytest.raises(VdmError, match="steps must be in 1..1000"):
        spaced_timesteps(alphas_cumprod(), num_steps, "linspace")


# ---------------------------------------------------------------------------------------------
# Building samplers


def test_an_unknown_sampler_is_refused_naming_the_choices():
    with pytest.raises(VdmError, match="unknown sampler 'euler'; choose one of ddim, ddpm, dpm\\+\\+2m, dpm\\+\\+2m-sde, unipc"):
        make_sampler("euler", alphas_cumprod(), 10)


@pytest.mark.parametrize("name", ["ddpm", "dpm++2m", "dpm++2m-sde", "unipc"])
def test_eta_is_refused_by_samplers_other_than_ddim(name):
    with pytest.raises(VdmError, match=f"eta applies to the ddim sampler only; {re.escape(name)} takes no eta"):
        make_sampler(name, alphas_cumprod(), 10, eta=0.5)


@pytest.mark.parametrize("eta", [float("nan"), float("inf"), -0.1])
def test_ddim_refuses_an_eta_that_is_not_a_finite_non_negative_number(eta):
    with pytest.raises(VdmError, match="eta must be a finite number >= 0"):
        make_sampler("ddim", alphas_cumprod(), 10, eta=eta)


def test_unipc_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="unknown UniPC variant"):
        UniPC(alphas_cumprod(), 10, variant="bh3")


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_samplers_plan_ends_on_clean_data(name):
    sampler = make_sampler(name, alphas_cumprod(), 8)
    assert len(sampler.abars) == len(sampler.timesteps) + 1 and sampler.abars[-1] == 1.0


def test_the_default_sampler_is_a_registered_one():
    assert DEFAULT_SAMPLER in SAMPLERS and make_sampler(DEFAULT_SAMPLER, alphas_cumprod(), DEFAULT_STEPS)


# ---------------------------------------------------------------------------------------------
# Update rules


def test_first_order_dpm_solver_pp_is_a_deterministic_ddim_step():
    ac = alphas_cumprod()
    abar_s, abar_t = float(ac[600]), float(ac[450])
    x0 = uniform_video((2, 3, 2, 4, 4), seed=1)
    x = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    eps = (x - math.sqrt(abar_s) * x0) / math.sqrt(1 - abar_s)
    torch.testing.assert_close(dpm_solver_pp_step(x, x0, None, abar_s, abar_t, None),
                               ddim_step(x0, eps, abar_t, 0.0, None), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, num_steps", [("dpm++2m", 1), ("dpm++2m", 2), ("unipc", 1)])
def test_multistep_solvers_equal_ddim_where_they_fall_back_to_first_order(tiny_checkpoint, name, num_steps):
    # dpm++2m is first order on its first step and on the final one; unipc's corrector already acts
    # on the second step, so only its one-step plan is pure DDIM.
    gen = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu")
    ddim = gen.generate(2, num_steps=num_steps, sampler="ddim", spacing="karras", seed=0)
    torch.testing.assert_close(gen.generate(2, num_steps=num_steps, sampler=name, seed=0), ddim,
                               rtol=0, atol=1e-5)  # the same step written another way: float32 rounding


# The probability-flow ODE of Gaussian data N(0, S^2) has an exact solution: each coordinate scales
# with the marginal's standard deviation, x_t = x_T * std_t / std_T with std_t^2 = abar_t S^2 + 1 - abar_t,
# and the optimal denoiser is x0 = sqrt(abar) S^2 x / std^2. Halving the step size divides a p-th
# order solver's error by about 2^p.
DATA_STD = 0.5


def gaussian_ode_error(name: str, num_steps: int, schedule: str, spacing: str = "logsnr") -> float:
    """Max error after the last solver step before the jump to clean data (a first-order x0 read-out
    the exact reference takes too, so only the solver's own steps are measured)."""
    sampler = make_sampler(name, alphas_cumprod(schedule), num_steps, spacing)
    x_T = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def std(abar):
        return math.sqrt(abar * DATA_STD**2 + 1 - abar)

    x = x_T.clone()
    for i in range(num_steps):
        abar = sampler.abars[i]
        x0 = math.sqrt(abar) * DATA_STD**2 * x / std(abar) ** 2
        x = sampler.step(i, x, x0, (x - math.sqrt(abar) * x0) / math.sqrt(1 - abar), None)
    abar_0, abar_T = sampler.abars[-2], sampler.abars[0]
    exact = math.sqrt(abar_0) * DATA_STD**2 / (std(abar_0) * std(abar_T)) * x_T
    return (x - exact).abs().max().item()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("name, low, high", [("ddim", 1.7, 2.3), ("dpm++2m", 3.3, 4.8), ("unipc", 6.0, 10.0)])
def test_solvers_converge_at_their_order_on_the_gaussian_ode(schedule, name, low, high):
    # ddim is first order, dpm++2m second, unipc (UniP-2 with the UniC corrector) third.
    ratio = gaussian_ode_error(name, 20, schedule) / gaussian_ode_error(name, 40, schedule)
    assert low < ratio < high


# ---------------------------------------------------------------------------------------------
# Driven by a network


class OracleDenoiser(Backend):
    """The optimal denoiser for a data set of one video: predicts the exact noise (or v) of x_t."""

    def __init__(self, target: torch.Tensor, prediction: str):
        self.target = target
        self.device = torch.device("cpu")
        self.model_config = ModelConfig(frames=target.shape[2], size=target.shape[3])
        self.diffusion_config = DiffusionConfig(prediction=prediction)
        self.alphas_cumprod = Schedule.from_config(self.diffusion_config).alphas_cumprod

    def predict(self, x, t, y):
        abar = float(self.alphas_cumprod[int(t[0])])
        eps = (x - abar**0.5 * self.target) / (1 - abar) ** 0.5
        if self.diffusion_config.prediction == "epsilon":
            return eps
        return abar**0.5 * eps - (1 - abar) ** 0.5 * self.target


def test_first_order_sde_dpm_solver_pp_is_a_ddpm_ancestral_step_and_lands_on_x0_at_the_end():
    ac = alphas_cumprod()
    abar_s, abar_t = float(ac[600]), float(ac[450])
    x0 = uniform_video((2, 3, 2, 4, 4), seed=1)
    x = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    z = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(dpm_solver_pp_sde_step(x, x0, None, abar_s, abar_t, None, z),
                               ddpm_step(x, x0, abar_s, abar_t, z), rtol=0, atol=1e-6)
    torch.testing.assert_close(dpm_solver_pp_sde_step(x, x0, None, abar_s, 1.0, None, None), x0, rtol=0, atol=0)


def test_second_order_sde_step_adds_the_ode_solvers_derivative_term_with_the_sde_weight():
    ac = alphas_cumprod()
    abar_prev, abar_s, abar_t = float(ac[750]), float(ac[600]), float(ac[450])
    x0, x0_prev = uniform_video((1, 3, 2, 4, 4), seed=1), uniform_video((1, 3, 2, 4, 4), seed=4)
    x = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    lam = [0.5 * math.log(a / (1 - a)) for a in (abar_prev, abar_s, abar_t)]
    h, r = lam[2] - lam[1], (lam[1] - lam[0]) / (lam[2] - lam[1])
    expected_term = 0.5 * math.sqrt(abar_t) * (1 - math.exp(-2 * h)) / r * (x0 - x0_prev)
    second = dpm_solver_pp_sde_step(x, x0, x0_prev, abar_s, abar_t, lam[0], None)
    first = dpm_solver_pp_sde_step(x, x0, None, abar_s, abar_t, None, None)
    torch.testing.assert_close(second - first, expected_term, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("spacing", ["linspace", "logsnr", "trailing"])
def test_sampling_with_the_optimal_denoiser_returns_the_one_training_video(prediction, name, spacing):
    target = uniform_video((1, 3, 4, 8, 8), seed=0)
    videos = VideoGenerator(backend=OracleDenoiser(target, prediction)).generate(
        1, num_steps=10, sampler=name, spacing=spacing, seed=0)
    torch.testing.assert_close(videos, target, atol=1e-5, rtol=0)


class AsEpsilon(Backend):
    """A v-prediction backend re-expressed as the epsilon prediction it implies."""

    def __init__(self, inner: Backend):
        self.inner, self.device, self.model_config = inner, inner.device, inner.model_config
        self.diffusion_config = DiffusionConfig(schedule=inner.diffusion_config.schedule, prediction="epsilon")
        self.alphas_cumprod = Schedule.from_config(self.diffusion_config).alphas_cumprod

    def predict(self, x, t, y):
        abar = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64)[t].reshape(-1, 1, 1, 1, 1)
        v = self.inner.predict(x, t, y).double()
        return (abar.sqrt() * v + (1 - abar).sqrt() * x.double()).float()  # eps = sqrt(abar) v + sqrt(1-abar) x


@pytest.mark.parametrize("name", ODE_SAMPLERS)
def test_v_and_epsilon_models_give_the_same_videos_when_their_predictions_agree(tiny_checkpoint, name):
    v_model = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu", precision="fp32")  # not auto's bf16
    eps_model = VideoGenerator(backend=AsEpsilon(v_model.backend))
    args = dict(num_samples=2, num_steps=8, sampler=name, seed=4)
    # Not bit-equal: an epsilon model's x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) divides eps's float32
    # rounding by sqrt(abar) = 5e-5 at t = 999 (max difference seen: 4e-4).
    torch.testing.assert_close(eps_model.generate(**args), v_model.generate(**args), atol=1e-3, rtol=0)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_plan_with_a_start_spans_that_timestep_down_to_the_clean_end(tiny_checkpoint, name, spacing):
    backend = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu").backend
    if spacing == "leading":  # 0, k, 2k, ...: its noisiest step sits below the start by design
        assert max(sampler_for(backend, name, 5, spacing, start=400).timesteps) <= 400
        return
    plan = sampler_for(backend, name, 5, spacing, start=400)
    assert plan.timesteps[0] == 400 and len(plan.timesteps) == 5 and plan.timesteps[-1] < 100
    full = sampler_for(backend, name, 5, spacing)
    abar = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    assert plan.abars == [float(abar[t]) for t in plan.timesteps] + [1.0] and full.timesteps[0] == len(abar) - 1


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_state_does_not_leak_from_one_generation_into_the_next(tiny_checkpoint, name):
    gen = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu")
    sampler = sampler_for(gen.backend, name, 6)
    shape = (2, 3, 4, 8, 8)
    first = sample(gen.backend, initial_noise(shape, 1, gen.device), sampler, generator=torch.Generator().manual_seed(9))
    sample(gen.backend, initial_noise((1, 3, 4, 8, 8), 2, gen.device), sampler, generator=torch.Generator())
    again = sample(gen.backend, initial_noise(shape, 1, gen.device), sampler, generator=torch.Generator().manual_seed(9))
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_guidance_asks_the_network_once_per_step_with_both_halves_batched(tiny_conditional_checkpoint, name):
    gen = VideoGenerator(tiny_conditional_checkpoint, backend="torch", device="cpu")
    calls = []
    predict = gen.backend.predict
    gen.backend.predict = lambda x, t, y: calls.append((x.shape[0], sorted(set(y.tolist())))) or predict(x, t, y)
    videos = gen.generate(2, num_steps=5, sampler=name, seed=0, class_label=1, guidance=3.0)
    assert calls == [(4, [1, 3])] * 5  # class 1 and the null class 3, in one call per step
    assert videos.shape == (2, 3, 4, 8, 8) and torch.isfinite(videos).all()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_sampler_gives_identical_videos(tiny_checkpoint, name):
    gen = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu")
    assert torch.equal(gen.generate(2, num_steps=6, sampler=name, seed=5),
                       gen.generate(2, num_steps=6, sampler=name, seed=5))

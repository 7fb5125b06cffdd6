"""Samplers: how the sampling loop walks from noise to a video, one network call per step.

One contract for every sampler. A sampler is built for a schedule's `alphas_cumprod`, a step count
and a timestep spacing; `timesteps` lists its network calls, noisiest first, and `abars` the
alpha_bar at each of them plus 1.0 (clean data) after the last. `step(i, x, x0, eps, generator)`
moves the latent x from timesteps[i] to the next noise level, given the network's prediction at
timesteps[i] split into (x_0, eps). Multistep samplers keep their history in the object; `reset()`
clears it, and the loop calls it before every generation.

All coefficients are Python floats computed from the float64 schedule, so a step is a few fused
multiply-adds on device tensors: nothing is copied to or from the host.

    ddim     DDIM (Song et al. 2021), eta = 0 deterministic, eta = 1 DDPM's variance
    ddpm     DDPM ancestral sampling (Ho et al. 2020) on a respaced subset of timesteps
    dpm++2m  DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095): multistep, order 2, data prediction
    dpm++2m-sde  its stochastic form (the SDE solver of the same paper, as in diffusers' sde-dpmsolver++):
             fresh noise every step, which corrects earlier steps' errors instead of carrying them
    unipc    UniPC (Zhao et al. 2023, arXiv:2302.04867): UniP-2 predictor + UniC corrector, B(h) = bh2

The multistep solvers work in lambda = log(alpha / sigma) (half the log-SNR), take the training
alphas_cumprod at integer timesteps exactly (no re-derived continuous schedule), and fall back to
first order on their first step and on the final step to clean data, where lambda is infinite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from vdm.diffusion import correlate_frames, ddim_sigma, ddim_step, ddpm_step
from vdm.errors import VdmError

SamplerName = Literal["ddim", "ddpm", "dpm++2m", "dpm++2m-sde", "unipc"]
Spacing = Literal["linspace", "leading", "trailing", "logsnr", "karras"]
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing", "logsnr", "karras")
# The karras spacing's noise levels (Karras et al. 2022, eq. 5), in sigma = sqrt((1 - abar) / abar):
# from KARRAS_SIGMA_MAX down to the cleanest timestep's sigma, denser towards it by KARRAS_RHO.
# Chosen on the demo model over sigma_max 10-320 and rho 3-9, where 40 and 3 served both multistep
# solvers best at 5-10 steps (EDM's own, 80 and 7, lost 1-2 dB there); benchmarks/steps.py measures.
KARRAS_SIGMA_MAX = 40.0
KARRAS_RHO = 3.0


# ---------------------------------------------------------------------------------------------
# Timesteps


def log_snr_half(abar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar)); +inf for clean data (abar = 1)."""
    if abar >= 1.0:
        return math.inf
    return 0.5 * (math.log(abar) - math.log1p(-abar))


def lambda_table(alphas_cumprod: np.ndarray) -> np.ndarray:
    """lambda at every training timestep (decreasing in t); -lambda is log sigma in Karras et al.'s terms."""
    return 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))


def spaced_timesteps(alphas_cumprod: np.ndarray, num_steps: int, spacing: Spacing) -> list[int]:
    """The `num_steps` training timesteps a sampler calls the network at, noisiest first.

    linspace: evenly spaced from T-1 down to 0, both ends included (vdm's original respacing).
    leading:  0, k, 2k, ... (k = T // num_steps), as diffusers' "leading"; the noisiest is below T-1.
    trailing: T-1, T-1-k, ... (k = T / num_steps), as diffusers' "trailing"; the cleanest is k-1.
    logsnr:   evenly spaced in lambda from lambda(T-1) to lambda(0) (DPM-Solver's "logSNR" steps),
              rounded to the nearest timestep and pushed apart where rounding collides.
    karras:   T-1 (where the loop's noise starts), then Karras et al.'s sigma_i = (sigma_max^(1/rho) +
              i/(n-2) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho down to sigma_min = sigma(0), each at
              the timestep nearest in log sigma, pushed apart where rounding collides. On a schedule
              cut below KARRAS_SIGMA_MAX (a restart pass, --from-snr) sigma_max is sigma(T-2), so the
              first two calls are neighbours (872, 871 for SNR 0.01 on the demo), and a second-order
              step amplifies the network's jitter between them: vdm/demo/TRAINING.md, last section.
    """
    total = len(alphas_cumprod)
    if not 1 <= num_steps <= total:
        raise VdmError(f"steps must be in 1..{total} (the model's training timesteps), got {num_steps}")
    if spacing == "linspace":
        ts = np.linspace(total - 1, 0, num_steps).round()
    elif spacing == "leading":
        if num_steps == 1:
            raise VdmError("leading spacing with 1 step calls the network at t=0 only, on pure noise; "
                           "use linspace or trailing")
        ts = (np.arange(num_steps) * (total // num_steps))[::-1]
    elif spacing == "trailing":
        # Integer arithmetic first: np.arange with a float step overshot to n + 1 values for 62 n.
        ts = np.round(total - np.arange(num_steps) * total / num_steps) - 1
    elif spacing == "logsnr":
        lambdas = lambda_table(alphas_cumprod)
        ts = nearest_timesteps(lambdas, np.linspace(lambdas[-1], lambdas[0], num_steps))
    elif spacing == "karras":
        ts = karras_timesteps(alphas_cumprod, num_steps)
    else:
        raise VdmError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    timesteps = [int(t) for t in ts]
    check_timesteps(timesteps, total)
    return timesteps


def nearest_timesteps(lambdas: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target lambda (noisiest first), the timestep whose lambda is nearest; then strictly
    decreasing: a collision is pushed one timestep noisier, which stays in range because the i-th of
    n timesteps can always take a value in [n-1-i, T-1-i]. The cosine schedule collides at both
    ends, where one timestep moves lambda by 0.6 (t = 0) to 3.5 (t = 999)."""
    total, n = len(lambdas), len(targets)
    # np.interp needs increasing x: lambda reversed is increasing, timestep reversed is decreasing.
    ts = np.interp(targets, lambdas[::-1], np.arange(total - 1, -1, -1, dtype=np.float64)).round()
    ts = np.clip(ts, np.arange(n - 1, -1, -1), np.arange(total - 1, total - 1 - n, -1))
    for i in range(n - 2, -1, -1):  # from the clean end up
        ts[i] = max(ts[i], ts[i + 1] + 1)
    return ts


def karras_timesteps(alphas_cumprod: np.ndarray, num_steps: int) -> np.ndarray:
    """T-1, then num_steps - 1 of Karras et al.'s noise levels, as timesteps (see spaced_timesteps)."""
    lambdas = lambda_table(alphas_cumprod)
    if num_steps == 1:
        return np.array([len(alphas_cumprod) - 1])
    sigma_min = math.exp(-lambdas[0])
    sigma_max = min(KARRAS_SIGMA_MAX, math.exp(-lambdas[-2]))
    ramp = np.linspace(0, 1, num_steps - 1) if num_steps > 2 else np.ones(1)  # 2 steps: T-1, then sigma_min
    inv_rho = 1 / KARRAS_RHO
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** KARRAS_RHO
    return nearest_timesteps(lambdas, np.concatenate([lambdas[-1:], -np.log(sigmas)]))


def check_timesteps(timesteps: list[int], num_timesteps: int) -> None:
    """Refuse a plan that is not unique, strictly decreasing and inside 0..num_timesteps-1."""
    if not timesteps:
        raise VdmError("a sampler needs at least one timestep")
    if any(not 0 <= t < num_timesteps for t in timesteps):
        raise VdmError(f"timesteps must lie in 0..{num_timesteps - 1}, got {timesteps}")
    seen: set[int] = set()
    repeated = sorted({t for t in timesteps if t in seen or seen.add(t)})
    if repeated:
        raise VdmError(f"timesteps {repeated} repeat: each network call must be at a new noise level")
    if any(a <= b for a, b in zip(timesteps, timesteps[1:])):
        raise VdmError(f"timesteps must decrease from the noisiest to the cleanest, got {timesteps}")


# ---------------------------------------------------------------------------------------------
# Update rules (pure functions of tensors and float coefficients)


def dpm_solver_pp_step(x: torch.Tensor, x0: torch.Tensor, x0_prev: torch.Tensor | None, abar_s: float,
                       abar_t: float, lambda_prev: float | None) -> torch.Tensor:
    """DPM-Solver++ from abar_s to abar_t (Lu et al. 2022, eq. 5 and Alg. 2, midpoint form).

    First order (x0_prev None), this is exactly a deterministic DDIM step. Second order, the data
    prediction's derivative in lambda is estimated from the previous step's x0 at lambda_prev.
    """
    alpha_t, sigma_t = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    sigma_s = math.sqrt(1 - abar_s)
    lambda_s, lambda_t = log_snr_half(abar_s), log_snr_half(abar_t)
    phi = -math.expm1(-(lambda_t - lambda_s))  # 1 - e^{-h}
    x_t = (sigma_t / sigma_s) * x + (alpha_t * phi) * x0
    if x0_prev is None:
        return x_t
    r = (lambda_s - lambda_prev) / (lambda_t - lambda_s)  # h_{i-1} / h_i
    return x_t + (0.5 * alpha_t * phi / r) * (x0 - x0_prev)


def dpm_solver_pp_sde_step(x: torch.Tensor, x0: torch.Tensor, x0_prev: torch.Tensor | None, abar_s: float,
                           abar_t: float, lambda_prev: float | None, noise: torch.Tensor | None) -> torch.Tensor:
    """SDE-DPM-Solver++ from abar_s to abar_t (Lu et al. 2022, arXiv:2211.01095, sec. 5; midpoint form).

    First order (x0_prev None), this is exactly a DDPM ancestral step: a sample of q(x_t | x_s, x0).
    Second order adds the derivative term estimated from the previous step's x0, as the ODE solver
    does, with 1 - e^{-2h} in place of 1 - e^{-h}. noise None: the final step to clean data.
    """
    alpha_t, sigma_t = math.sqrt(abar_t), math.sqrt(1 - abar_t)
    sigma_s = math.sqrt(1 - abar_s)
    lambda_s, lambda_t = log_snr_half(abar_s), log_snr_half(abar_t)
    h = lambda_t - lambda_s
    phi = -math.expm1(-2 * h)  # 1 - e^{-2h}
    x_t = (sigma_t / sigma_s * math.exp(-h)) * x + (alpha_t * phi) * x0
    if x0_prev is not None:
        r = (lambda_s - lambda_prev) / h  # h_{i-1} / h_i
        x_t = x_t + (0.5 * alpha_t * phi / r) * (x0 - x0_prev)
    if noise is not None:
        x_t = x_t + (sigma_t * math.sqrt(phi)) * noise
    return x_t


def unipc_coefficients(rks: list[float], h: float, variant: str) -> tuple[list[float], list[float], float]:
    """UniPC's weights (Zhao et al. 2023, Alg. 2 and 3, data prediction): (rhos_p, rhos_c, B(h)).

    rks are the earlier points' (lambda_k - lambda_s) / h, most recent first (empty for order 1).
    rhos_p weigh the predictor's divided differences, rhos_c the corrector's (the last weighs the
    new point). Solved in float64 on the host: a 1x1 to 3x3 system.
    """
    hh = -h
    h_phi_1 = math.expm1(hh)
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = math.expm1(hh)
    else:
        raise ValueError(f"unknown UniPC variant {variant!r}; use 'bh1' or 'bh2'")
    order = len(rks) + 1
    r = np.array(list(rks) + [1.0])
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(r ** (i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = np.stack(rows), np.array(b)
    if order == 1:
        rhos_p: list[float] = []
    elif order == 2:
        rhos_p = [0.5]  # the paper's simplified UniP-2
    else:
        rhos_p = np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    rhos_c = [0.5] if order == 1 else np.linalg.solve(R, b).tolist()
    return rhos_p, rhos_c, b_h


# ---------------------------------------------------------------------------------------------
# Samplers


class Sampler:
    """The contract: `timesteps`, `abars`, `reset()`, `step(i, x, x0, eps, generator)`.

    Subclasses set `name` and implement `step`; multistep ones override `reset` too.
    """

    name: ClassVar[str]
    default_spacing: ClassVar[Spacing] = "linspace"
    frame_noise_correlation: float = 0.0  # of fresh noise: the model's (DiffusionConfig); make_sampler sets it

    def __init__(self, alphas_cumprod: np.ndarray, num_steps: int, spacing: Spacing | None = None):
        self.spacing = spacing or self.default_spacing
        self.timesteps = spaced_timesteps(alphas_cumprod, num_steps, self.spacing)
        # alpha_bar at each network call, then 1.0: the last step lands on clean data.
        self.abars = [float(alphas_cumprod[t]) for t in self.timesteps] + [1.0]
        self.reset()

    def reset(self) -> None:
        """Forget everything from an earlier generation (single-step samplers keep nothing)."""

    def step(self, i: int, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
        """x (B, C, T, H, W) at timesteps[i], and the prediction there -> x at the next noise level."""
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def fresh_noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """New noise shaped like x (B, C, T, H, W), drawn on its device, frames correlated as in training."""
        return correlate_frames(torch.randn(x.shape, generator=generator, device=x.device),
                                self.frame_noise_correlation)

    def describe(self) -> str:
        return f"{self.name}, {len(self.timesteps)} steps, {self.spacing} spacing"


class DDIM(Sampler):
    """DDIM (Song et al. 2021): deterministic at eta = 0; eta = 1 has the DDPM posterior's variance."""

    name = "ddim"

    def __init__(self, alphas_cumprod: np.ndarray, num_steps: int, spacing: Spacing | None = None,
                 eta: float = 0.0):
        if not (math.isfinite(eta) and eta >= 0):
            raise VdmError(f"eta must be a finite number >= 0, got {eta}")
        super().__init__(alphas_cumprod, num_steps, spacing)
        self.eta = eta

    def step(self, i, x, x0, eps, generator):
        abar_t, abar_prev = self.abars[i], self.abars[i + 1]
        sigma = 0.0 if i == len(self.timesteps) - 1 else ddim_sigma(abar_t, abar_prev, self.eta)
        z = self.fresh_noise(x, generator) if sigma > 0 else None
        return ddim_step(x0, eps, abar_prev, sigma, z)

    def describe(self) -> str:
        return super().describe() + (f", eta {self.eta:g}" if self.eta else "")


class DDPM(Sampler):
    """DDPM ancestral sampling (Ho et al. 2020): a sample of q(x_prev | x_t, x_0) at each step."""

    name = "ddpm"

    def step(self, i, x, x0, eps, generator):
        last = i == len(self.timesteps) - 1
        z = None if last else self.fresh_noise(x, generator)
        return ddpm_step(x, x0, self.abars[i], self.abars[i + 1], z)


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022): second order from the previous step's x0; first order on
    the first step and on the final step to clean data."""

    name = "dpm++2m"
    default_spacing = "karras"
    stochastic: ClassVar[bool] = False  # the SDE solver: fresh noise every step but the last

    def reset(self) -> None:
        self.x0_prev: torch.Tensor | None = None  # x0 predicted at the previous step

    def step(self, i, x, x0, eps, generator):
        last = i == len(self.timesteps) - 1
        second_order = self.x0_prev is not None and not last
        x0_prev = self.x0_prev if second_order else None
        lambda_prev = log_snr_half(self.abars[i - 1]) if second_order else None
        if self.stochastic:
            noise = None if last else self.fresh_noise(x, generator)
            x_next = dpm_solver_pp_sde_step(x, x0, x0_prev, self.abars[i], self.abars[i + 1], lambda_prev, noise)
        else:
            x_next = dpm_solver_pp_step(x, x0, x0_prev, self.abars[i], self.abars[i + 1], lambda_prev)
        self.x0_prev = x0
        return x_next


class DPMSolverPP2MSDE(DPMSolverPP2M):
    """SDE-DPM-Solver++(2M): DPM-Solver++(2M)'s multistep update plus fresh noise each step, so an
    early step's mistake (a colour picked from the noise) can still be undone later."""

    name = "dpm++2m-sde"
    stochastic = True


class UniPC(Sampler):
    """UniPC (Zhao et al. 2023): the UniC corrector refines the previous step's result with the new
    prediction (no extra network call), then the UniP predictor steps on; order 2, lower order on
    the first step and on the final step to clean data."""

    name = "unipc"
    default_spacing = "karras"
    order: ClassVar[int] = 2

    def __init__(self, alphas_cumprod: np.ndarray, num_steps: int, spacing: Spacing | None = None,
                 variant: Literal["bh1", "bh2"] = "bh2"):
        unipc_coefficients([], 1.0, variant)  # refuse an unknown variant now, not at the first step
        self.variant = variant
        super().__init__(alphas_cumprod, num_steps, spacing)

    def reset(self) -> None:
        self.x0_history: list[torch.Tensor] = []  # x0 of the steps so far, most recent last
        self.x_before: torch.Tensor | None = None  # the latent the last predictor started from
        self.last_order = 0  # the order the last predictor used

    def lambdas(self, i: int, count: int) -> list[float]:
        """lambda at steps i, i-1, ..., i-count+1."""
        return [log_snr_half(self.abars[i - k]) for k in range(count)]

    def update(self, x_s: torch.Tensor, s: int, order: int, new_x0: torch.Tensor | None) -> torch.Tensor:
        """From x_s at step s to step s+1 with the `order` most recent x0s (the last is at s);
        with `new_x0` (the prediction at s+1) this is the corrector, else the predictor."""
        lambda_s, lambda_t = log_snr_half(self.abars[s]), log_snr_half(self.abars[s + 1])
        h = lambda_t - lambda_s
        rks = [(lam - lambda_s) / h for lam in self.lambdas(s, order)[1:]]
        rhos_p, rhos_c, b_h = unipc_coefficients(rks, h, self.variant)
        abar_s, abar_t = self.abars[s], self.abars[s + 1]
        alpha_t, sigma_t, sigma_s = math.sqrt(abar_t), math.sqrt(1 - abar_t), math.sqrt(1 - abar_s)
        m0 = self.x0_history[-1]
        x_t = (sigma_t / sigma_s) * x_s - (alpha_t * math.expm1(-h)) * m0
        diffs = [(self.x0_history[-(k + 2)] - m0) / rk for k, rk in enumerate(rks)]  # D1s
        if new_x0 is None:
            weights, terms = rhos_p, diffs
        else:
            weights, terms = rhos_c, diffs + [new_x0 - m0]
        for rho, d in zip(weights, terms):
            x_t = x_t - (alpha_t * b_h * rho) * d
        return x_t

    def step(self, i, x, x0, eps, generator):
        if i > 0:  # UniC: correct what the last predictor gave, with the prediction made there
            x = self.update(self.x_before, i - 1, self.last_order, x0)
        self.x0_history.append(x0)
        del self.x0_history[:-self.order]
        # Lower order on the first step (one x0 known) and on the last (lambda = inf at clean data).
        order = min(self.order, i + 1, len(self.timesteps) - i)
        self.x_before, self.last_order = x, order
        return self.update(x, i, order, None)


SAMPLERS: dict[str, type[Sampler]] = {cls.name: cls for cls in (DDIM, DDPM, DPMSolverPP2M, DPMSolverPP2MSDE, UniPC)}
# The pair that reaches DDIM-50's accuracy with the fewest network calls on the demo model
# (benchmarks/steps.py; see README "Samplers").
DEFAULT_SAMPLER = "unipc"
DEFAULT_STEPS = 6


def make_sampler(name: SamplerName, alphas_cumprod: np.ndarray, num_steps: int, spacing: Spacing | None = None,
                 eta: float = 0.0, frame_noise_correlation: float = 0.0) -> Sampler:
    """Build sampler `name`; eta is DDIM's alone, and the others refuse a non-zero one."""
    if name not in SAMPLERS:
        raise VdmError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name == "ddim":
        sampler = DDIM(alphas_cumprod, num_steps, spacing, eta)
    elif eta != 0:
        raise VdmError(f"eta applies to the ddim sampler only; {name} takes no eta (leave it at 0)")
    else:
        sampler = SAMPLERS[name](alphas_cumprod, num_steps, spacing)
    sampler.frame_noise_correlation = frame_noise_correlation
    return sampler


# ---------------------------------------------------------------------------------------------
# Restarts


@dataclass(frozen=True)
class Restart:
    """One restart pass (Xu et al. 2023, "Restart Sampling for Improving Generative Processes", with
    its interval's low end at clean data): the finished videos are noised again to the timestep whose
    SNR is nearest `snr`, with fresh noise, and the sampler finishes them again in `steps` calls.

    A deterministic sampler carries its early mistakes to the end; the fresh noise lets the next pass
    contract them, as a stochastic sampler's does at every step, while each pass stays a few-step
    deterministic solve.
    """

    snr: float
    steps: int

    def __post_init__(self):
        if not (math.isfinite(self.snr) and self.snr > 0):
            raise VdmError(f"a restart's SNR must be a positive number, got {self.snr}")
        if self.steps < 1:
            raise VdmError(f"a restart needs at least 1 step, got {self.steps}")

    def __str__(self) -> str:
        return f"{self.snr:g}:{self.steps}"


def parse_restarts(text: str) -> tuple[Restart, ...]:
    """'0.01:6,1:4' -> (Restart(0.01, 6), Restart(1.0, 4)); 'none' (or '') -> no restarts."""
    if text.strip().lower() in ("", "none"):
        return ()
    restarts = []
    for item in (part.strip() for part in text.split(",")):
        snr, _, steps = item.partition(":")
        try:
            restarts.append(Restart(float(snr), int(steps)))
        except ValueError:
            raise VdmError(f"restart {item!r} is not SNR:STEPS (e.g. 0.01:6; several comma-separated, "
                           "or none)") from None
    return tuple(restarts)

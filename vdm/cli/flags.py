"""Click flags the CLIs share, derived from what backends and samplers declare (never restated here)."""
from __future__ import annotations

from typing import Any, Callable

import click

from vdm.runtime.backend import BACKENDS, all_options, backend_class, check_options
from vdm.runtime.precision import PRECISIONS
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SPACINGS


def precision_help() -> str:
    """What each backend computes where, from Backend.computes."""
    per_backend = "; ".join(
        f"{name}: " + ", ".join(f"{device} {'/'.join(p)}" for device, p in backend_class(name).computes.items())
        for name in BACKENDS)
    return ("Compute precision. auto: fp16 on CUDA, bf16 on CPUs with bf16 matrix units (AMX, AVX-512 bf16), "
            f"else fp32, among what the backend computes and the bundle holds ({per_backend}).")


def backend_flags(fn: Callable) -> Callable:
    """--backend, --device, --precision, and every backend's declared load options."""
    for name, (option, users) in reversed(list(all_options().items())):
        help_text = f"{option.help} [--backend {' or '.join(users)}]"
        if option.kind is bool:
            fn = click.option(option.flag, option.name, is_flag=True, help=help_text)(fn)
        else:
            kind = click.Choice(option.choices) if option.choices else option.kind
            fn = click.option(option.flag, option.name, type=kind, help=help_text)(fn)
    fn = click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISIONS),
                      help=precision_help())(fn)
    fn = click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")(fn)
    sources = ", ".join(f"{name} a {backend_class(name).source}" for name in BACKENDS)
    return click.option("--backend", default="torch", show_default=True, type=click.Choice(list(BACKENDS)),
                        help=f"What runs the network ({sources}).")(fn)


def pop_backend_options(backend: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the backend option flags out of a command's kwargs: those `backend` declares, checked
    before anything loads (a flag for another backend is a one-line error)."""
    given = {name: kwargs.pop(name) for name in all_options()}
    return check_options(backend, given)


def sampler_flags(fn: Callable) -> Callable:
    """--sampler, --steps, --spacing (defaults from vdm.samplers)."""
    fn = click.option("--spacing", type=click.Choice(SPACINGS),
                      help="Timesteps of the steps (default: the sampler's own).")(fn)
    fn = click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int,
                      help="Sampling steps (network calls).")(fn)
    return click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True,
                        type=click.Choice(list(SAMPLERS)))(fn)

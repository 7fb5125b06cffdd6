"""Click flags the CLIs share, derived from what backends and samplers declare (never restated here)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from vdm.errors import VdmError
from vdm.runtime.backend import BACKENDS, all_options, backend_class, check_options
from vdm.runtime.precision import PRECISIONS
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, SPACINGS, Restart, parse_restarts


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
    """--sampler, --steps, --spacing, --restart (defaults from vdm.samplers, and the demo's own)."""
    from vdm.demo import DEMO_RESTARTS

    fn = click.option("--restart", metavar="SNR:STEPS[,...]",
                      help="Restart sampling (Xu et al. 2023): noise the finished videos again to SNR and finish "
                           "them again in STEPS calls of the sampler; comma-separate several passes; none turns "
                           f"it off [default: none; the bundled demo: {DEMO_RESTARTS}].")(fn)
    fn = click.option("--spacing", type=click.Choice(SPACINGS),
                      help="Timesteps of the steps (default: the sampler's own).")(fn)
    fn = click.option("--steps", default=DEFAULT_STEPS, show_default=True, type=int,
                      help="Sampling steps (network calls).")(fn)
    return click.option("--sampler", default=DEFAULT_SAMPLER, show_default=True,
                        type=click.Choice(list(SAMPLERS)))(fn)


def chosen_restarts(restart: str | None, demo: bool) -> tuple[Restart, ...]:
    """The restart passes --restart asks for, checked before anything loads; without the flag, none,
    or for the bundled demo (no MODEL) its own."""
    from vdm.demo import DEMO_RESTARTS

    return parse_restarts(DEMO_RESTARTS if restart is None and demo else restart or "none")


def class_flags(fn: Callable) -> Callable:
    """--class and --guidance, for a class-conditional model."""
    from vdm.demo import DEMO_GUIDANCE

    fn = click.option("--guidance", type=float,
                      help="Classifier-free guidance scale, for a class-conditional model; 1 turns it off "
                           f"[default: 1; the bundled demo: {DEMO_GUIDANCE:g}].")(fn)
    return click.option("--class", "class_label", type=int,
                        help="Class label of every video, for a class-conditional model [default: each video's "
                             "own, drawn from the synthetic data's labels by --seed].")(fn)


def chosen_guidance(guidance: float | None, demo: bool) -> float:
    """The classifier-free guidance scale --guidance asks for; without the flag, none (1), or for the
    bundled demo (no MODEL) its own."""
    from vdm.demo import DEMO_GUIDANCE

    if guidance is None:
        return DEMO_GUIDANCE if demo else 1.0
    return guidance


def guidance_note(guidance: float, separator: str) -> str:
    """What the sampler line says of classifier-free guidance: nothing when it is off (scale 1)."""
    return f"{separator}classifier-free guidance {guidance:g}" if guidance != 1 else ""


def chosen_labels(model_config, class_label: int | None, num_samples: int, seed: int) -> int | list[int] | None:
    """--class for every video; without it, a class-conditional model's videos each get the label of a
    synthetic clip (vdm.data.data_labels), so they follow the data's mix; an unconditional model none."""
    if class_label is not None or not model_config.conditional:
        return class_label
    from vdm.data import data_labels

    return data_labels(model_config.class_label, num_samples, seed)


def autoguide_flags(fn: Callable) -> Callable:
    """--autoguide GUIDE and --autoguide-weight (runtime/autoguidance.py)."""
    from vdm.runtime.autoguidance import DEFAULT_WEIGHT

    fn = click.option("--autoguide-weight", type=float, metavar="W",
                      help=f"Autoguidance weight w >= 1: guide + w * (model - guide); 1 turns it off "
                           f"[default with --autoguide: {DEFAULT_WEIGHT:g}].")(fn)
    return click.option("--autoguide", type=click.Path(), metavar="GUIDE",
                        help="Guide sampling away from a weaker model of the same recipe (an early checkpoint, or "
                             "a smaller model; a bundle for bundle backends): autoguidance, Karras et al. 2024.")(fn)


def guided_weight(has_guide: bool, autoguide_weight: float | None, default: float) -> float | None:
    """The autoguidance weight the flags ask for (None: no guide), checked before anything loads."""
    from vdm.runtime.autoguidance import check_weight

    if not has_guide:
        if autoguide_weight is not None:
            raise VdmError("--autoguide-weight needs --autoguide GUIDE (the weaker model to guide with)")
        return None
    weight = default if autoguide_weight is None else autoguide_weight
    check_weight(weight)
    return weight


def model_and_guide(model: str | None, backend: str, autoguide: str | None,
                    autoguide_weight: float | None) -> tuple[str | Path, str | Path | None, float | None]:
    """(model, guide, weight) for the flags, checked (guide None: sample the model alone). Without
    MODEL, the bundled demo; --autoguide-weight 1 samples the model alone."""
    from vdm.runtime.autoguidance import DEFAULT_WEIGHT

    weight = guided_weight(autoguide is not None, autoguide_weight, DEFAULT_WEIGHT)
    if model is None:
        from vdm.demo import demo_model_path

        model = demo_model_path(backend)
        click.echo(f"model: the bundled demo ({model})")
    if weight in (None, 1):
        return model, None, None
    return model, autoguide, weight


def load_generator(model: str | Path, backend: str, device: str, precision: str, options: dict[str, Any],
                   autoguide: str | Path | None = None, weight: float | None = None):
    """The VideoGenerator for MODEL on `backend`, autoguided by `autoguide` when one is given."""
    from vdm.runtime.autoguidance import load_autoguided
    from vdm.runtime.generator import VideoGenerator

    if autoguide is None:
        return VideoGenerator(model, backend=backend, device=device, precision=precision, **options)
    return VideoGenerator(backend=load_autoguided(backend, model, autoguide, weight, device, precision, **options))

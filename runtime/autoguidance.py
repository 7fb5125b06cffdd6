"""Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself").

A weaker network trained on the same data (an early checkpoint of the same recipe, or a smaller
model) makes the same kinds of mistakes as the main network, only more of them. Extrapolating from
its prediction towards the main one, with weight w > 1,

    out = guide + w * (main - guide)

moves every sampling step away from those mistakes. It needs no class labels, so it works for
unconditional models, where classifier-free guidance cannot; on the demo it keeps the shapes'
colours across frames in more videos (vdm/demo/TRAINING.md). Both networks see the same input and
must share the diffusion process, so their predictions mix linearly; a weight of 1 is the main
network alone, and the guide is then never called.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vdm.errors import VdmError
from vdm.runtime.backend import Backend, load_backend

# Karras et al. find 2-3 best for ImageNet; on the demo 1.5 passed the most videos (TRAINING.md).
DEFAULT_WEIGHT = 1.5


def check_weight(weight: float) -> None:
    if not (math.isfinite(weight) and weight >= 1):
        raise VdmError(f"--autoguide-weight must be a finite number >= 1 (1 turns guidance off), got {weight}")


def check_pair(main: Backend, guide: Backend, guide_path: Path | str) -> None:
    """A VdmError naming the difference when `guide` cannot guide `main`: it must predict the same
    quantity on the same schedule, and read and write the same videos."""
    if guide.diffusion_config != main.diffusion_config:
        raise VdmError(f"the guide {guide_path} was trained with another diffusion process "
                       f"({guide.diffusion_config}) than the model ({main.diffusion_config}); "
                       "guide with an earlier or smaller model of the same recipe")
    for field in ("in_channels", "network_channels", "frames", "size"):
        mine, theirs = getattr(main.model_config, field), getattr(guide.model_config, field)
        if mine != theirs:
            raise VdmError(f"the guide {guide_path} has {field} {theirs}, the model {mine}; they must match")
    mine, theirs = main.model_config, guide.model_config
    if theirs.conditional and (theirs.num_classes, theirs.class_label) != (mine.num_classes, mine.class_label):
        raise VdmError(f"the guide {guide_path} has {theirs.num_classes} {theirs.class_label!r} classes, the model "
                       f"{mine.num_classes} {mine.class_label!r}; a conditional guide must share the model's "
                       "labels (an unconditional one guides any model)")


class AutoguidedBackend(Backend):
    """The main backend's prediction pushed away from a weaker network's: guide + w * (main - guide).

    It presents the main backend (its configs, device and precision) to the sampling loop, so every
    sampler and every backend kind runs it unchanged; the two networks run on the same backend.
    """

    name = "autoguided"

    def __init__(self, main: Backend, guide: Backend, weight: float, guide_path: Path | str = "the guide"):
        check_weight(weight)
        check_pair(main, guide, guide_path)
        self.main, self.guide, self.weight = main, guide, weight
        self.guide_path = Path(guide_path)
        self.device = main.device
        self.model_config = main.model_config
        self.diffusion_config = main.diffusion_config
        self.precision = main.precision

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        main = self.main.predict(x, t, y)
        if self.weight == 1.0:
            return main
        guide_y = y if self.guide.model_config.conditional else None  # an unconditional guide ignores labels
        return torch.lerp(self.guide.predict(x, t, guide_y), main, self.weight)  # guide + w * (main - guide)

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        self.main.check_shape(batch, frames, height, width)
        self.guide.check_shape(batch, frames, height, width)

    def describe(self) -> str:
        return f"{self.main.describe()}, autoguided by {self.guide_path.name} (weight {self.weight:g})"


def load_autoguided(name: str, model_path: str | Path, guide_path: str | Path, weight: float,
                    device: str | None = None, precision: str = "auto", **options: Any) -> AutoguidedBackend:
    """Backend `name` for the model, guided by the checkpoint or bundle at guide_path on the same
    backend, device and precision."""
    check_weight(weight)
    main = load_backend(name, model_path, device, precision, **options)
    guide = load_backend(name, guide_path, str(main.device), main.precision, **options)
    return AutoguidedBackend(main, guide, weight, guide_path)

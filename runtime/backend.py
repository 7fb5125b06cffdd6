"""The one narrow interface every inference backend implements, what each declares, and the registry.

A backend predicts the network output (noise or v) for a batch: predict(x_t, t, y) -> (B,C,T,H,W).
The sampling loop, guidance, seeding and video writing are shared (runtime/sampling.py) and never
re-implemented per backend.

Each backend class also declares what it supports, and `vdm-run`, `vdm-eval`, VideoGenerator and
the benchmarks read these declarations instead of restating them:
    source     what it loads: a checkpoint (.safetensors) or a bundle directory (vdm-export)
    computes   device type -> the precisions it computes there (the device types it runs on are the keys)
    options    its extra `load` options beyond path, device and precision (CLI flags are derived)
and `load(path, device, precision, **options)` builds it; precision `auto` is decided by
runtime/precision.resolve_precision from these declarations alone.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from vdm.config import DiffusionConfig, ModelConfig, check_video_shape
from vdm.errors import VdmError

# name -> (module, class); modules import their optional packages lazily, so every class can be read.
BACKENDS = {
    "torch": ("vdm.runtime.torch_backend", "TorchBackend"),
    "onnxruntime": ("vdm.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("vdm.runtime.tensorrt_backend", "TensorRTBackend"),
    "openvino": ("vdm.runtime.openvino_backend", "OpenVINOBackend"),
}
DEVICE_WORDS = {"cpu": "the CPU (--device cpu)", "cuda": "an NVIDIA GPU (--device cuda)"}


@dataclass(frozen=True)
class BackendOption:
    """An extra `load` keyword a backend takes; the CLIs offer it as --name-with-dashes."""

    name: str
    kind: type  # bool (a flag), int or str
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Backend:
    """Predicts the denoiser's output. Subclasses declare the class fields, set the instance fields
    and implement `load` and `predict`."""

    name: ClassVar[str] = "base"
    source: ClassVar[Literal["checkpoint", "bundle"]] = "checkpoint"
    computes: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("fp32",)}
    why_not: ClassVar[dict[str, str]] = {}  # precision -> why this backend does not compute it (measured)
    options: ClassVar[tuple[BackendOption, ...]] = ()

    device: torch.device
    model_config: ModelConfig
    diffusion_config: DiffusionConfig
    precision: str = "fp32"

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "auto", **options: Any) -> "Backend":
        """Build the backend for a checkpoint or bundle at `path`, with the declared `options`."""
        raise NotImplementedError(f"{cls.__name__} must implement load")

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x (B, C', T, H, W) float32 on self.device, t (B,) int64, y (B,) int64 or None -> (B, C, T, H, W)
        float32, where C' = model_config.network_channels (2C for a self-conditioning network: the
        sampling loop appends its estimate) and C = in_channels; size outputs with `empty_output`."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict")

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        """Raise a VdmError when this backend cannot take a (batch, C, frames, height, width) input."""
        check_video_shape(self.model_config, frames, height, width)

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"

    @classmethod
    def network_for(cls, precision: str) -> str:
        """The bundle network computing in `precision` reads: its own, unless a backend says otherwise."""
        return precision

    @classmethod
    def device_type(cls, device: str | None) -> str:
        """The device type to run on, from the declaration alone (no GPU is touched): 'auto' takes
        CUDA where the backend runs there and torch sees a GPU (or CUDA is all it runs on)."""
        devices = tuple(cls.computes)
        if device in (None, "auto"):
            cuda = "cuda" in devices and (torch.cuda.is_available() or devices == ("cuda",))
            return "cuda" if cuda else "cpu"
        kind = device.split(":")[0]
        if kind not in DEVICE_WORDS:
            raise VdmError(f"unknown device {device!r}; use auto, cpu or cuda")
        if kind not in devices:
            where = " or ".join(DEVICE_WORDS[d] for d in devices)
            raise VdmError(f"the {cls.name} backend runs on {where}, not on {DEVICE_WORDS[kind].split(' (')[0]}")
        return kind


def network_feed(model_config: ModelConfig, x: torch.Tensor, t: torch.Tensor,
                 y: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The exported network's inputs as contiguous tensors: x float32, t int64, and y int64 for a
    class-conditional model (the null class when y is None)."""
    feed = {"x": x.float().contiguous(), "t": t.long().contiguous()}
    if model_config.conditional:
        feed["y"] = (y if y is not None else torch.full_like(feed["t"], model_config.null_class)).long().contiguous()
    return feed


def empty_output(model_config: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    """The network's output buffer (B, C, T, H, W) float32 for input x: x's shape, except that a
    self-conditioning network reads 2C channels and predicts C."""
    return torch.empty((x.shape[0], model_config.in_channels, *x.shape[2:]), dtype=torch.float32, device=x.device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): for timings, never inside the loop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(device: str | None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; 'cuda' without a GPU is a user error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VdmError(f"--device {device} asked, but torch sees no CUDA GPU here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise VdmError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def backend_class(name: str) -> type[Backend]:
    """The class registered as `name` (its optional packages are not imported yet)."""
    if name not in BACKENDS:
        raise VdmError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)


def all_options() -> dict[str, tuple[BackendOption, list[str]]]:
    """Every backend option by name, with the backends that take it (for the CLIs' flags and help)."""
    found: dict[str, tuple[BackendOption, list[str]]] = {}
    for name in BACKENDS:
        for option in backend_class(name).options:
            found.setdefault(option.name, (option, []))[1].append(name)
    return found


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options `name` declares, from those given (None / False = not given); a VdmError for the rest."""
    declared = {o.name for o in backend_class(name).options}
    takers = all_options()
    for key, value in options.items():
        if value not in (None, False) and key not in declared:
            users = takers[key][1] if key in takers else []
            where = " or ".join(users) if users else "no backend"
            flag = takers[key][0].flag if key in takers else key
            raise VdmError(f"{flag} only applies to --backend {where}")
    return {k: v for k, v in options.items() if k in declared and v is not None}


def load_backend(name: str, model_path: str | Path, device: str | None = None, precision: str = "auto",
                 **options: Any) -> Backend:
    """Build backend `name` for a checkpoint or a bundle directory, with its declared options."""
    cls = backend_class(name)
    return cls.load(Path(model_path), device=device, precision=precision, **check_options(name, options))

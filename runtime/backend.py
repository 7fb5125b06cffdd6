"""The one narrow interface every inference backend implements, and the registry that builds them.

A backend predicts the network output (noise or v) for a batch: predict(x_t, t, y) -> (B,C,T,H,W).
The sampling loop, guidance, seeding and video writing are shared (runtime/sampling.py) and never
re-implemented per backend.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

import torch

from vdm.config import DiffusionConfig, ModelConfig, check_video_shape
from vdm.errors import VdmError

Precision = Literal["fp32", "bf16", "fp16", "auto"]

# name -> (module, class); modules import lazily so a missing optional package only hurts its backend.
BACKENDS = {
    "torch": ("vdm.runtime.torch_backend", "TorchBackend"),
    "onnxruntime": ("vdm.runtime.onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("vdm.runtime.tensorrt_backend", "TensorRTBackend"),
    "openvino": ("vdm.runtime.openvino_backend", "OpenVINOBackend"),
}


class Backend:
    """Predicts the denoiser's output. Subclasses set the fields below and implement `predict`."""

    name: str = "base"
    device: torch.device
    model_config: ModelConfig
    diffusion_config: DiffusionConfig
    precision: str = "fp32"

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """x (B, C, T, H, W) float32 on self.device, t (B,) int64, y (B,) int64 or None -> (B, C, T, H, W) float32."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict")

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        """Raise a VdmError when this backend cannot take a (batch, C, frames, height, width) input."""
        check_video_shape(self.model_config, frames, height, width)

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"


def network_feed(model_config: ModelConfig, x: torch.Tensor, t: torch.Tensor,
                 y: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The exported network's inputs as contiguous tensors: x float32, t int64, and y int64 for a
    class-conditional model (the null class, num_classes, when y is None)."""
    feed = {"x": x.float().contiguous(), "t": t.long().contiguous()}
    if model_config.conditional:
        feed["y"] = (y if y is not None else torch.full_like(feed["t"], model_config.num_classes)).long().contiguous()
    return feed


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


def load_backend(name: str, model_path: str | Path, device: str | None = None, **options) -> Backend:
    """Build backend `name` for a checkpoint or a bundle directory."""
    if name not in BACKENDS:
        raise VdmError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name).load(Path(model_path), device=device, **options)

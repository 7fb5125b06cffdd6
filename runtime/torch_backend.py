"""The PyTorch backend: the network itself, optionally in bf16/fp16, channels-last, or compiled."""
from __future__ import annotations

from pathlib import Path

import torch

from vdm.checkpoint import load_model
from vdm.config import DiffusionConfig
from vdm.errors import VdmError
from vdm.runtime.backend import Backend, resolve_device
from vdm.runtime.precision import resolve_precision, torch_dtype
from vdm.unet import Unet3D


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: Unet3D, diffusion_config: DiffusionConfig, device: torch.device,
                 precision: str = "fp32", channels_last: bool | None = None, compile: bool = False):
        self.device = device
        self.model_config = model.cfg
        self.diffusion_config = diffusion_config
        self.precision = precision
        # Channels-last 3D is what oneDNN's fast (bf16/AMX) convolutions want; on CUDA cuDNN picks it too.
        self.channels_last = precision != "fp32" if channels_last is None else channels_last
        model = model.to(device).eval().cast_for_inference(torch_dtype(precision))
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model = model
        self.forward = torch.compile(model, dynamic=False) if compile else model

    @classmethod
    def load(cls, path: Path, device: str | None = None, precision: str = "fp32", **options) -> "TorchBackend":
        if path.is_dir():
            raise VdmError(f"{path} is a directory; the torch backend takes a checkpoint (.safetensors)")
        torch_device = resolve_device(device)
        model, diffusion_config, _ = load_model(path, torch_device)
        return cls(model, diffusion_config, torch_device, resolve_precision(precision, torch_device), **options)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.forward(x, t, y)

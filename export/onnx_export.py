"""PyTorch -> ONNX: the UNet with named inputs, dynamic batch/frames axes, fp32 or fp16 weights.

fp16 is a cast of the network itself (`Unet3D.cast_for_inference`): convolutions and attention
projections in float16, while normalization statistics, softmax and the timestep/class embeddings
stay float32, and the graph's inputs and outputs stay float32 so the sampling loop stays float32.

The fp32 network, the one CPUs run, writes every GroupNorm as per-channel statistics and one
multiply-add (`vdm.unet.group_statistics`; with the default dynamo exporter): OpenVINO then keeps
activations channels-last between convolutions and ran the demo's call about 1.6x faster (README,
INT8); ONNX Runtime's CPU provider was no faster with it. The fp16 network, the one GPUs run, keeps
the reshaped GroupNorm that ONNX Runtime CUDA and TensorRT recognise (verified on an H200 in that form).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from vdm.errors import VdmError
from vdm.unet import Unet3D

Exporter = Literal["dynamo", "torchscript"]
PROTOBUF_LIMIT = 2 * 1024**3  # bytes; larger models must keep their weights as ONNX external data


@dataclass
class ExportShapes:
    batch: int  # the batch of the sample input (and of every input when static)
    frames: int  # T of the sample input
    height: int
    width: int
    static: bool = False  # fix every shape; else batch and frames are dynamic axes
    max_batch: int = 64  # upper limits of the dynamic axes (written to the manifest)
    max_frames: int = 128

    def axis(self, name: str) -> dict:
        value = getattr(self, name)
        if self.static:
            return {"min": value, "opt": value, "max": value}
        return {"min": 1, "opt": value, "max": getattr(self, f"max_{name}")}


@contextlib.contextmanager
def quiet_loggers(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class UnconditionalNet(torch.nn.Module):
    """The exported signature of an unconditional model: (x, t) -> out."""

    def __init__(self, model: Unet3D):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)


class ConditionalNet(UnconditionalNet):
    """The exported signature of a class-conditional model: (x, t, y) -> out (y = num_classes is the null class)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, y)


def io_spec(model: Unet3D, shapes: ExportShapes) -> tuple[list[dict], list[dict]]:
    """The graph's inputs and outputs: name, dtype and shape (strings for dynamic axes)."""
    b = shapes.batch if shapes.static else "batch"
    t = shapes.frames if shapes.static else "frames"
    x = [b, model.cfg.network_channels, t, shapes.height, shapes.width]  # with self-conditioning, 2C
    inputs = [{"name": "x", "dtype": "float32", "shape": x}, {"name": "t", "dtype": "int64", "shape": [b]}]
    if model.cfg.conditional:
        inputs.append({"name": "y", "dtype": "int64", "shape": [b]})
    return inputs, [{"name": "out", "dtype": "float32", "shape": [b, model.cfg.in_channels, *x[2:]]}]


def sample_inputs(model: Unet3D, shapes: ExportShapes) -> tuple[torch.Tensor, ...]:
    x = torch.randn(shapes.batch, model.cfg.network_channels, shapes.frames, shapes.height, shapes.width)
    t = torch.full((shapes.batch,), 500, dtype=torch.long)
    if model.cfg.conditional:
        return x, t, torch.zeros(shapes.batch, dtype=torch.long)
    return x, t


def channel_statistics_for(precision: str, exporter: Exporter) -> bool:
    """Whether the network writes its GroupNorms as per-channel statistics: fp32 (the CPU network)
    from the dynamo exporter. On some models the TorchScript exporter's graph of that form reads an
    input no node makes ('onnx::Mul_...', the tests' tiny UNet); its networks keep the GroupNorm."""
    return precision == "fp32" and exporter == "dynamo"


def export_onnx(model: Unet3D, path: Path, shapes: ExportShapes, precision: str = "fp32", opset: int = 18,
                exporter: Exporter = "dynamo", external_data: bool | None = None) -> None:
    """Write the network to `path` (weights to `path.data` when external). `model` is left unchanged."""
    net = copy.deepcopy(model).eval()
    if precision == "fp16":
        net.cast_for_inference(torch.float16)
    elif precision != "fp32":
        raise VdmError(f"ONNX export supports fp32 and fp16, not {precision!r}")
    net.use_channel_statistics(channel_statistics_for(precision, exporter))
    wrapper = ConditionalNet(net) if model.cfg.conditional else UnconditionalNet(net)
    args = sample_inputs(model, shapes)
    inputs, outputs = io_spec(model, shapes)
    names = [i["name"] for i in inputs]
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    if external_data is None:
        external_data = weight_bytes > PROTOBUF_LIMIT * 0.9
    # The exporters print progress and warnings of their own; keep the CLI's output to our lines.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_loggers("torch.onnx", "torch.export"):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            export_dynamo(wrapper, args, names, path, shapes, opset, external_data)
        elif exporter == "torchscript":
            export_torchscript(wrapper, args, names, path, shapes, opset, external_data)
        else:
            raise VdmError(f"unknown exporter {exporter!r}; use dynamo or torchscript")


def export_dynamo(wrapper, args, names, path: Path, shapes: ExportShapes, opset: int, external_data: bool) -> None:
    """torch.export-based exporter (the default since torch 2.9)."""
    dynamic = None
    if not shapes.static:
        batch = torch.export.Dim("batch", min=1, max=shapes.max_batch)
        frames = torch.export.Dim("frames", min=1, max=shapes.max_frames)
        dynamic = {"x": {0: batch, 2: frames}, "t": {0: batch}}
        if "y" in names:
            dynamic["y"] = {0: batch}
    program = torch.onnx.export(wrapper, args, dynamo=True, input_names=names, output_names=["out"],
                                dynamic_shapes=dynamic, opset_version=opset, optimize=True, verbose=False)
    program.save(str(path), external_data=external_data)


def export_torchscript(wrapper, args, names, path: Path, shapes: ExportShapes, opset: int,
                       external_data: bool) -> None:
    """The older tracing exporter: much faster to run, deprecated upstream; kept as a fallback."""
    dynamic_axes = None
    if not shapes.static:
        dynamic_axes = {n: {0: "batch"} for n in names}
        dynamic_axes["x"] = dynamic_axes["out"] = {0: "batch", 2: "frames"}
    torch.onnx.export(wrapper, args, str(path), dynamo=False, input_names=names, output_names=["out"],
                      dynamic_axes=dynamic_axes, opset_version=opset)
    if external_data:
        import onnx

        proto = onnx.load(str(path))
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")

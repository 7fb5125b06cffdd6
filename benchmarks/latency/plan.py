"""What a latency run measures: its settings, the --backends variants, and the rows they make.

A variant is a registered backend, maybe with fixed load options (torch.compile, CUDA graphs). The
devices it runs on, the precisions it computes on each, the options it takes and what it loads are
its backend's declarations (vdm.runtime.backend: `computes`, `options`, `source`), read here and
never restated: a backend that learns a precision gains its rows without a change to this file.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from vdm.runtime.backend import backend_class

PRECISIONS = ("fp32", "fp16", "bf16", "int8")  # also the row order: fp32 first, so the reference comes first
DEFAULT_PRECISIONS = ("fp32", "fp16", "bf16")  # int8 on request: its export calibrates and gates (a minute or more)
Source = Literal["checkpoint", "bundle", "static-bundle", "engine"]
# backend -> (the package it imports, how to install it): checked before exporting anything for it
REQUIRES = {"onnxruntime": ("onnxruntime", "pip install 'vdm[onnx]'"),
            "tensorrt": ("tensorrt", "pip install tensorrt (TensorRT 10.x, needs an NVIDIA GPU and driver)"),
            "openvino": ("openvino", "pip install 'vdm[openvino]'")}
ELSEWHERE = {"cuda": "needs a CUDA GPU (--device cuda); this run is on the {device}",  # the reason, by the
             "cpu": "runs on the CPU here; run it with --device cpu"}  # device the variant needs


@dataclass(frozen=True)
class Variant:
    """One --backends choice: a registered backend, loaded with fixed options."""

    name: str  # the --backends name
    backend: str  # the vdm.runtime.backend.BACKENDS name it loads through
    options: dict = field(default_factory=dict)  # fixed load options, each one the backend declares
    makes: Source | None = None  # what it loads, where more than its backend's `source`: a static bundle, an engine
    devices: tuple[str, ...] | None = None  # where it runs, where narrower than its backend's `computes`

    def __post_init__(self):
        undeclared = set(self.options) - self.declared_options()
        if undeclared:
            raise ValueError(f"variant {self.name}: the {self.backend} backend declares no option "
                             f"{', '.join(sorted(undeclared))}; add it to the backend's `options` first")

    def declared_options(self) -> set[str]:
        return {o.name for o in backend_class(self.backend).options}

    @property
    def source(self) -> Source:
        return self.makes or backend_class(self.backend).source

    def runs_on(self) -> tuple[str, ...]:
        return self.devices or tuple(backend_class(self.backend).computes)

    def precisions(self, device: str) -> tuple[str, ...]:
        """The precisions its rows on `device` request: what its backend computes there; on a device
        the backend does not run on, what it computes where it does (those rows say why they cannot run)."""
        computes = backend_class(self.backend).computes
        if device in computes:
            return computes[device]
        return tuple(p for p in PRECISIONS if any(p in there for there in computes.values()))

    def network_for(self, precision: str) -> str:
        """The bundle network a row of this precision reads (the backend's declaration)."""
        return backend_class(self.backend).network_for(precision)

    def load_options(self, threads: int) -> dict:
        """Its fixed options, and `threads` where its backend takes that option."""
        return self.options | ({"threads": threads} if "threads" in self.declared_options() else {})


VARIANTS = {v.name: v for v in (
    Variant("torch", "torch"),
    Variant("torch-compile", "torch", {"compile": True}),
    Variant("onnxruntime", "onnxruntime"),
    # CUDA graphs replay fixed shapes and exist only on a GPU: on the CPU the row says so (unavailable, not n/a).
    Variant("onnxruntime-cudagraph", "onnxruntime", {"cuda_graph": True}, makes="static-bundle", devices=("cuda",)),
    Variant("tensorrt", "tensorrt", makes="engine"),
    # OpenVINO takes bf16/fp16 as a hint on the fp32 network (runtime/openvino_backend.py) and may compute
    # fp32 instead; the row's `computes` says which.
    Variant("openvino", "openvino"),
)}


@dataclass
class Settings:
    model: Path | None  # checkpoint or bundle directory (None with --preset)
    preset: str | None  # build a random model of this preset instead
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    frames: int | None  # None: the model's training clip length
    size: int | None  # None: the model's frame size
    sampler: str
    steps: int  # sampler steps of one video
    device: str  # 'cpu' or 'cuda' (resolved)
    quick: bool
    name: str
    out: Path  # the run's folder: OUT/NAME
    warmup: int  # untimed calls before the timed ones
    calls: int  # timed denoiser calls per row
    videos: int  # timed whole generations per row
    threads: int | None  # CPU threads for every engine (None: torch's default)
    exporter: str  # ONNX exporter for the bundles
    seed: int  # seeds the inputs, the videos and --preset's weights


class Job(NamedTuple):
    """One row to measure."""

    variant: Variant
    precision: str
    batch: int


def plan_rows(backends: list[str], precisions: list[str], batches: list[int],
              device: str) -> tuple[list[Job], list[str]]:
    """(the rows to measure, in order: per batch, per backend, fp32 first; the combinations a backend
    does not compute on `device`, skipped as n/a, as 'backend precision')."""
    jobs, skipped = [], []
    for batch in batches:
        for name in backends:
            variant = VARIANTS[name]
            for precision in precisions:
                if precision in variant.precisions(device):
                    jobs.append(Job(variant, precision, batch))
                elif batch == batches[0]:
                    skipped.append(f"{name} {precision}")
    return jobs, skipped


def unavailable_reason(variant: Variant, device: str) -> str | None:
    """Why `variant` cannot run on this machine at all (package or device), before exporting anything."""
    reasons = []
    package, install = REQUIRES.get(variant.backend, (None, None))
    if package is not None and importlib.util.find_spec(package) is None:
        reasons.append(f"{package} is not installed: {install}")
    if device not in variant.runs_on():
        reasons.append(f"{variant.name} {ELSEWHERE[variant.runs_on()[0]].format(device=device)}")
    return "; ".join(reasons) or None

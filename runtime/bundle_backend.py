"""What the backends that run an exported bundle share: the bundle, the precision its networks allow,
the shape and input-name checks against the manifest, and CUDA graphs' persistent input buffers."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from vdm.bundle import Bundle, check_bundle_shape, check_input_names, check_io_shapes, read_bundle
from vdm.errors import VdmError
from vdm.runtime.backend import Backend, BackendOption
from vdm.runtime.precision import resolve_precision

# Options more than one bundle backend takes: declared once, so their flag and help are one.
CUDA_GRAPH = BackendOption("cuda_graph", bool, "Capture the denoiser in a CUDA graph (static-shape bundles).")
THREADS = BackendOption("threads", int, "CPU threads (default: the backend's own choice).")


class BundleBackend(Backend):
    """A backend whose `load` takes a bundle directory (vdm-export). Subclasses call `__init__` with
    the precisions the bundle offers them (default: its exported networks), then load `self.network`."""

    source: ClassVar[str] = "bundle"

    def __init__(self, bundle: Bundle, device_type: str, precision: str, available=None):
        self.bundle = bundle
        self.model_config = bundle.model_config
        self.diffusion_config = bundle.diffusion_config
        self.precision = resolve_precision(precision, device_type, self.computes[device_type],
                                           f"the {self.name} backend",
                                           bundle.networks if available is None else available, why_not=self.why_not)

    @staticmethod
    def read(path: Path) -> Bundle:
        return read_bundle(path)

    def check_shape(self, batch: int, frames: int, height: int, width: int) -> None:
        check_bundle_shape(self.network, self.model_config, batch, frames, height, width)

    def check_io(self, inputs: list[str], dims: dict[str, list[int | None]], file_name: str) -> None:
        """At load, not at the first step: the loaded network's input names, and the shapes of its
        inputs and outputs (name -> dims, None where dynamic), must be the manifest's."""
        check_input_names(inputs, self.network, file_name)
        check_io_shapes(dims, self.network, file_name)

    def require_static_shapes(self, fix: str = "`vdm-export --static`") -> None:
        """CUDA graphs replay fixed shapes and addresses: only a static-shape bundle can be captured."""
        if not self.network["shapes"]["static"]:
            raise VdmError(f"--cuda-graph needs a bundle with static shapes: re-export with {fix}")


class StaticInputs:
    """Persistent input buffers for a CUDA graph, which replays fixed addresses: the first feed is
    cloned into them, every later one copied in."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def update(self, feed: dict[str, torch.Tensor]) -> bool:
        """Copy `feed` in; True on the first call, when the buffers were just made (bind or capture then)."""
        if not self.buffers:
            self.buffers = {k: v.clone() for k, v in feed.items()}
            return True
        for name, tensor in feed.items():
            self.buffers[name].copy_(tensor)
        return False

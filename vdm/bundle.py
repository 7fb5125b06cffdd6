"""The deployment bundle: a directory with the exported network(s) and `vdm.json`, its manifest.

The one home of the bundle format: `vdm.export` writes it and `vdm.runtime` reads it, and neither
imports the other. The manifest holds everything the runtime needs without the checkpoint or the
training code: the model and diffusion configs, each exported network's file, precision,
input/output names, dtypes and shapes with the dynamic axes and their limits, the export's parity
results, the versions used, and (vdm.engine) any TensorRT engine built from it. Paths inside are
relative to the bundle, so a bundle can be moved or copied anywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vdm.atomic import atomic_write_text
from vdm.config import DiffusionConfig, ModelConfig, from_dict
from vdm.errors import VdmError

MANIFEST_NAME = "vdm.json"
FORMAT = "vdm.bundle"
FORMAT_VERSION = 1


@dataclass
class Bundle:
    root: Path  # the bundle directory
    manifest: dict  # the parsed vdm.json
    model_config: ModelConfig
    diffusion_config: DiffusionConfig

    @property
    def networks(self) -> dict[str, dict]:
        """precision ('fp32', 'fp16') -> that network's entry (file, io, shapes, parity)."""
        return self.manifest["networks"]

    def network(self, precision: str) -> dict:
        if precision not in self.networks:
            raise VdmError(f"bundle {self.root} has no {precision} network (it has: "
                           f"{', '.join(self.networks)}); export one with `vdm-export "
                           f"{'--fp16 ' if precision == 'fp16' else ''}--out {self.root} CHECKPOINT`")
        return self.networks[precision]

    def file(self, precision: str, key: str = "file") -> Path:
        path = self.root / self.network(precision)[key]
        if not path.is_file():
            raise VdmError(f"bundle {self.root}: {path.name} is missing; re-export the bundle")
        return path


def network_file(precision: str) -> str:
    """The ONNX file name of the `precision` network: unet.onnx (fp32), unet.fp16.onnx, ..."""
    return "unet.onnx" if precision == "fp32" else f"unet.{precision}.onnx"


def write_manifest(root: Path, manifest: dict) -> None:
    """Replace the bundle's manifest atomically (the last step of every change to a bundle)."""
    atomic_write_text(Path(root) / MANIFEST_NAME, json.dumps(manifest, indent=2))


def check_input_names(found: list[str], network: dict, file_name: str) -> None:
    """Raise a VdmError when a loaded network's inputs are not the ones its manifest entry lists."""
    expected = [io["name"] for io in network["inputs"]]
    if sorted(found) != sorted(expected):
        raise VdmError(f"{file_name} has inputs {found}, its manifest says {expected}; re-export the bundle")


def check_bundle_shape(network: dict, model_config: ModelConfig, batch: int, frames: int, height: int,
                       width: int) -> None:
    """Raise a VdmError when the exported network cannot take this input shape."""
    shapes = network["shapes"]
    if (height, width) != (shapes["height"], shapes["width"]):
        raise VdmError(f"this bundle was exported for {shapes['height']}x{shapes['width']} frames, not "
                       f"{height}x{width}; re-export with `vdm-export --size {height}`")
    for name, value in (("batch", batch), ("frames", frames)):
        axis = shapes[name]
        if not axis["min"] <= value <= axis["max"]:
            if shapes.get("static"):
                fix = f"`vdm-export --static --{name} {value}`"
            else:
                fix = f"`vdm-export --max-{name} {value}`" if value > axis["max"] else "a larger value"
            raise VdmError(f"{name}={value} is outside what this bundle takes ({axis['min']}..{axis['max']}); "
                           f"use {fix}")
    if frames % model_config.temporal_factor:
        raise VdmError(f"frames={frames} is not a multiple of {model_config.temporal_factor}")


def read_bundle(path: str | Path) -> Bundle:
    """Read and check `path/vdm.json` (or the manifest path itself)."""
    path = Path(path)
    root = path.parent if path.name == MANIFEST_NAME else path
    manifest_path = root / MANIFEST_NAME
    if root.is_file():
        raise VdmError(f"{root} is a file; this backend takes a bundle directory made by `vdm-export`")
    if not manifest_path.is_file():
        raise VdmError(f"{root} is not a vdm bundle (no {MANIFEST_NAME}); make one with `vdm-export CHECKPOINT --out {root}`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise VdmError(f"{manifest_path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise VdmError(f"{manifest_path} is not a vdm bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise VdmError(f"{manifest_path} is bundle format {manifest.get('format_version')}, this vdm reads "
                       f"format {FORMAT_VERSION}; re-export it with this version's `vdm-export`")
    if not manifest.get("networks"):
        raise VdmError(f"{manifest_path} lists no exported network; re-export the bundle")
    model_config = from_dict(ModelConfig, manifest["model_config"], str(manifest_path))
    diffusion_config = from_dict(DiffusionConfig, manifest["diffusion_config"], str(manifest_path))
    return Bundle(root, manifest, model_config, diffusion_config)

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
from vdm.checkpoint import file_sha256
from vdm.config import DiffusionConfig, ModelConfig, from_dict
from vdm.errors import VdmError
from vdm.schema import (BOOL, FILE_NAME, NON_NEGATIVE_INT, NUMBER, OBJECT, POSITIVE_INT, SHA256, TEXT, Each, Maybe, Rule,
                        is_int, list_of, one_of, optional, validate)

MANIFEST_NAME = "vdm.json"
FORMAT = "vdm.bundle"
FORMAT_VERSION = 2  # 2: every file the manifest describes carries its sha256 and size
NETWORK_PRECISIONS = ("fp32", "fp16", "int8")
VERIFIED_NAME = ".verified.json"  # stat fingerprints of the files whose sha256 matched the manifest

FILE_RECORD = {"sha256": SHA256, "size": NON_NEGATIVE_INT}
DIM = Rule("a positive integer or an axis name", lambda v: (is_int(v) and v > 0) or (isinstance(v, str) and v != ""))
IO = Rule("a list of {name, dtype, shape} objects",
          lambda v: isinstance(v, list) and bool(v) and all(
              isinstance(io, dict) and TEXT.accepts(io.get("name")) and TEXT.accepts(io.get("dtype"))
              and isinstance(io.get("shape"), list) and all(map(DIM.accepts, io["shape"])) for io in v))
AXIS = {"min": POSITIVE_INT, "opt": POSITIVE_INT, "max": POSITIVE_INT}
TENSORRT_ENGINE = {"file": FILE_NAME, "sha256": SHA256, "size": NON_NEGATIVE_INT, "tensorrt_version": TEXT,
                   "gpu": TEXT, "compute_capability": list_of(NON_NEGATIVE_INT, 2), "profile": OBJECT}
NETWORK = {
    "file": FILE_NAME,
    "external_data": optional(FILE_NAME),
    "files": Each(FILE_RECORD, key=FILE_NAME),  # every file the network needs, with its checksum
    "precision": one_of(*NETWORK_PRECISIONS),
    "inputs": IO,
    "outputs": IO,
    "shapes": {"static": BOOL, "height": POSITIVE_INT, "width": POSITIVE_INT, "batch": AXIS, "frames": AXIS},
    "parity": {"rel_error": optional(NUMBER), "passed": BOOL},  # int8: its quality gate instead
    "tensorrt": Maybe(TENSORRT_ENGINE),  # an engine built from this network (vdm/engine.py)
}
MANIFEST_SCHEMA = {
    "model_config": OBJECT,
    "diffusion_config": OBJECT,
    "source": {"checkpoint": TEXT, "sha256": SHA256, "step": NON_NEGATIVE_INT},
    "networks": Each(NETWORK, key=one_of(*NETWORK_PRECISIONS)),
}


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
            flag = {"fp16": "--fp16 ", "int8": "--int8 "}.get(precision, "")
            raise VdmError(f"bundle {self.root} has no {precision} network (it has: "
                           f"{', '.join(self.networks)}); export one with `vdm-export {flag}--out {self.root} CHECKPOINT`")
        return self.networks[precision]

    def file(self, precision: str) -> Path:
        """The `precision` network's ONNX file, after checking it and its external data against the
        manifest's sizes and sha256 (a replaced or damaged file is refused before it loads)."""
        entry = self.network(precision)
        flag = {"fp16": " --fp16", "int8": " --int8"}.get(precision, "")
        fix = f"`vdm-export CHECKPOINT --out {self.root}{flag}`"
        for name, record in entry["files"].items():
            verify_file(self.root / name, record, fix)
        return self.root / entry["file"]


def file_record(path: Path) -> dict:
    """What the manifest keeps of a file it describes: its sha256 and size in bytes."""
    return {"sha256": file_sha256(path), "size": path.stat().st_size}


def verify_file(path: Path, record: dict, fix: str) -> None:
    """Raise a one-line VdmError when `path` is missing or is not the file `record` describes.

    The size is compared first (free), then the sha256, which reads the whole file (about 1.2 GB/s
    on one core here): a file whose sha256 matched is remembered in the bundle's VERIFIED_NAME by
    its stat fingerprint, so later loads of the unchanged file skip the hash.
    """
    if not path.is_file():
        raise VdmError(f"bundle {path.parent}: {path.name} is missing; rebuild it with {fix}")
    size = path.stat().st_size
    verified = read_verified(path.parent)
    if size == record["size"] and verified.get(path.name) == [record["sha256"], *fingerprint(path)]:
        return
    if size != record["size"] or file_sha256(path) != record["sha256"]:
        what = f"{size} bytes, the manifest says {record['size']}" if size != record["size"] else "its sha256 differs"
        raise VdmError(f"bundle {path.parent}: {path.name} is not the file its manifest describes ({what}: changed "
                       f"or replaced after export); rebuild it with {fix}")
    verified[path.name] = [record["sha256"], *fingerprint(path)]
    try:
        atomic_write_text(path.parent / VERIFIED_NAME, json.dumps(verified))
    except (OSError, VdmError):
        pass  # a read-only bundle: it is hashed at every load instead


def fingerprint(path: Path) -> list[int]:
    """What changes whenever a file's bytes are replaced or rewritten: size, mtime, ctime, inode."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def read_verified(root: Path) -> dict:
    try:
        verified = json.loads((root / VERIFIED_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return verified if isinstance(verified, dict) else {}


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


def check_io_shapes(found: dict[str, list[int | None]], network: dict, file_name: str) -> None:
    """Raise a VdmError when a loaded network's inputs/outputs (name -> dims, None where dynamic) do
    not have the manifest's shapes: the same rank, and the same size on every fixed axis."""
    for io in network["inputs"] + network["outputs"]:
        dims = found.get(io["name"])
        expected = io["shape"]
        fixed_differs = dims is not None and any(is_int(e) and d is not None and d != e for d, e in zip(dims, expected))
        if dims is None or len(dims) != len(expected) or fixed_differs:
            shown = "absent" if dims is None else ["?" if d is None else d for d in dims]
            raise VdmError(f"{file_name}: {io['name']} has shape {shown}, its manifest says {expected}; the file "
                           "is not the network this bundle describes: re-export the bundle")


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
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VdmError(f"{manifest_path} is not a vdm bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise VdmError(f"{manifest_path} is bundle format {manifest.get('format_version')}, this vdm reads "
                       f"format {FORMAT_VERSION}; re-export it with this version's `vdm-export`")
    validate(manifest, MANIFEST_SCHEMA, str(manifest_path))
    model_config = from_dict(ModelConfig, manifest["model_config"], str(manifest_path))
    diffusion_config = from_dict(DiffusionConfig, manifest["diffusion_config"], str(manifest_path))
    return Bundle(root, manifest, model_config, diffusion_config)

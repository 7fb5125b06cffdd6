"""Checkpoints: one safetensors file holds the (EMA) weights and the configs needed to rebuild the model.

Metadata keys: format ('vdm.checkpoint'), format_version, model_config and diffusion_config (JSON),
step. Writes are atomic: a crash mid-write leaves the previous checkpoint loadable.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vdm.atomic import atomic_write_bytes
from vdm.config import DiffusionConfig, ModelConfig, from_dict, to_dict
from vdm.errors import VdmError
from vdm.schema import NON_NEGATIVE_INT, OBJECT, validate
from vdm.unet import Unet3D

FORMAT = "vdm.checkpoint"
FORMAT_VERSION = "1"


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], model_config: ModelConfig,
                    diffusion_config: DiffusionConfig, step: int = 0) -> None:
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(to_dict(model_config)),
        "diffusion_config": json.dumps(to_dict(diffusion_config)),
        "step": str(step),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, DiffusionConfig, dict]:
    """(state_dict, model config, diffusion config, metadata); a one-line VdmError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VdmError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        with torch.device("cpu"):
            tensors = st_load(data)
        metadata = read_metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise VdmError(f"{path} is not a readable safetensors checkpoint (truncated or corrupt?): {e}") from None
    if metadata.get("format") != FORMAT:
        raise VdmError(f"{path} is a safetensors file but not a vdm checkpoint (no '{FORMAT}' metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise VdmError(f"{path} is vdm checkpoint format {metadata.get('format_version')}; "
                       f"this vdm reads format {FORMAT_VERSION}")
    fields = parse_metadata(metadata, str(path))
    model_config = from_dict(ModelConfig, fields["model_config"], str(path))
    diffusion_config = from_dict(DiffusionConfig, fields["diffusion_config"], str(path))
    check_finite(tensors, str(path))
    return tensors, model_config, diffusion_config, metadata


METADATA_SCHEMA = {"model_config": OBJECT, "diffusion_config": OBJECT, "step": NON_NEGATIVE_INT}


def parse_metadata(metadata: dict[str, str], source: str) -> dict:
    """The checkpoint's metadata strings as values (configs as objects, step as an integer), checked
    against METADATA_SCHEMA: a one-line VdmError naming the field otherwise."""
    fields: dict = {}
    for key in ("model_config", "diffusion_config"):
        if key not in metadata:
            raise VdmError(f"{source}: vdm checkpoint without its {key}; it cannot rebuild the model")
        try:
            fields[key] = json.loads(metadata[key])
        except json.JSONDecodeError as e:
            raise VdmError(f"{source}: field {key} is not JSON ({e}); expected an object") from None
    step = metadata.get("step", "0")
    fields["step"] = int(step) if isinstance(step, str) and step.isdigit() else step
    validate(fields, METADATA_SCHEMA, source)
    return fields


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity: they can only make NaN videos (grey ones once saved)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise VdmError(f"{source}: tensor {name} holds {bad} NaN/inf value(s); the model cannot generate "
                           "videos (use an earlier checkpoint, or retrain with a lower --lr)")


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ (the header is 8 bytes of length, then JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    if len(data) < 8 + header_len:
        raise ValueError("file shorter than its header says")
    return json.loads(data[8:8 + header_len]).get("__metadata__", {})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Unet3D, DiffusionConfig, dict]:
    """Rebuild the network from a checkpoint, in eval mode on `device`."""
    state, model_config, diffusion_config, metadata = read_checkpoint(path)
    model = Unet3D(model_config)
    check_weights(state, model.state_dict(), str(path))
    model.load_state_dict(state)
    return model.to(device).eval(), diffusion_config, metadata


def check_weights(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str,
                  allow_missing: bool = False) -> list[str]:
    """Check a checkpoint's tensors against a model's state dict; return the names the checkpoint lacks.

    Those are an error unless allow_missing (fine-tuning a model that has grown new blocks).
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if unexpected or (missing and not allow_missing):
        raise VdmError(f"{source}: weights do not match the model config ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected, e.g. {(unexpected + missing)[0]})")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise VdmError(f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                           f"the model config needs {tuple(expected[name].shape)}")
    return missing


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_torch_atomic(obj, path: str | Path) -> None:
    """torch.save through an atomic write (the training state)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise VdmError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a damaged file
        raise VdmError(f"{path} is not a readable training state (truncated or corrupt?): {e}") from None

"""Shared fixtures: a tiny model configuration and tiny checkpoints saved as real files.

Everything here is sized to run in milliseconds on one CPU core. Other test files (the UNet,
diffusion, sampling, checkpoint, training, CLI and ONNX-export tests) build on these, so the names
are generic and the behaviour is part of the contract:

    tiny_model_config            a fresh ModelConfig: 2 levels (8, 16 channels), attention at level 1,
                                 clips of 4 frames x 8 x 8, unconditional
    tiny_diffusion_config        a fresh DiffusionConfig: 1000 cosine timesteps, v prediction (the default)
    make_tiny_unet               (session) factory: (model_config, seed=0, perturb=True) -> Unet3D in eval mode
    save_tiny_checkpoint         (session) factory: (path, model_config=None, diffusion_config=None, seed=0,
                                 perturb=True) -> path, a checkpoint written by vdm.checkpoint
    tiny_checkpoint              path to an unconditional tiny checkpoint (.safetensors) in tmp_path
    tiny_conditional_checkpoint  the same with num_classes=3 (labels 0..2, null class 3)

A freshly built Unet3D predicts exactly zero (its `conv_out` is zero-initialised) and ignores the
timestep and class (the norms' scale/shift projections are zero-initialised too). "Perturbed" models
replace every all-zero parameter by small seeded noise, so their output is non-zero and depends on
x, t and y; pass perturb=False for the exact-zero model.
"""
from __future__ import annotations

import ctypes
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from vdm.checkpoint import save_checkpoint
from vdm.config import DiffusionConfig, ModelConfig
from vdm.unet import Unet3D

# The tiny tensors here gain nothing from intra-op threads, and on a shared 2-core machine a second
# thread waiting on a busy core makes every op slower; one thread keeps the suite fast and steady.
torch.set_num_threads(1)

PERTURB_SCALE = 0.05  # std of the noise that replaces zero-initialised parameters


def _tiny_model_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(base_channels=8, channel_multiples=(1, 2), num_res_blocks=1, attention_levels=(1,),
                      num_heads=2, num_groups=4, frames=4, size=8)
    return dataclasses.replace(cfg, **overrides)


def perturb_zero_init(model: torch.nn.Module, seed: int = 0, scale: float = PERTURB_SCALE) -> torch.nn.Module:
    """Replace every all-zero parameter (output convs, attention outputs, scale/shift heads) by N(0, scale^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(scale * torch.randn(param.shape, generator=generator))
    return model


def _make_tiny_unet(model_config: ModelConfig, seed: int = 0, perturb: bool = True) -> Unet3D:
    torch.manual_seed(seed)
    model = Unet3D(model_config)
    if perturb:
        perturb_zero_init(model, seed)
    return model.eval()


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """A fresh tiny unconditional ModelConfig (T=4, H=W=8, widths 8 and 16); safe to mutate."""
    return _tiny_model_config()


@pytest.fixture
def tiny_diffusion_config() -> DiffusionConfig:
    """A fresh DiffusionConfig with the defaults (1000 cosine timesteps, v prediction)."""
    return DiffusionConfig()


@pytest.fixture(scope="session")
def make_tiny_unet():
    """Factory: make_tiny_unet(model_config, seed=0, perturb=True) -> a seeded Unet3D in eval mode."""
    return _make_tiny_unet


@pytest.fixture(scope="session")
def save_tiny_checkpoint():
    """Factory: save_tiny_checkpoint(path, model_config=None, diffusion_config=None, seed=0, perturb=True) -> path.

    Writes a real vdm checkpoint (vdm.checkpoint.save_checkpoint) of a seeded tiny UNet; the model
    config defaults to the tiny one and the diffusion config to DiffusionConfig().
    """

    def save(path, model_config: ModelConfig | None = None, diffusion_config: DiffusionConfig | None = None,
             seed: int = 0, perturb: bool = True) -> Path:
        model_config = model_config or _tiny_model_config()
        model = _make_tiny_unet(model_config, seed, perturb)
        save_checkpoint(path, model.state_dict(), model_config, diffusion_config or DiffusionConfig())
        return Path(path)

    return save


@pytest.fixture
def tiny_checkpoint(tmp_path, save_tiny_checkpoint) -> Path:
    """Path to a perturbed (non-zero output) unconditional tiny checkpoint in tmp_path."""
    return save_tiny_checkpoint(tmp_path / "tiny.safetensors")


@pytest.fixture
def tiny_conditional_checkpoint(tmp_path, save_tiny_checkpoint) -> Path:
    """Path to a perturbed tiny checkpoint with num_classes=3 (labels 0..2; 3 is the null class)."""
    return save_tiny_checkpoint(tmp_path / "tiny_conditional.safetensors", _tiny_model_config(num_classes=3))


def quiet(*_):
    """A log function that drops the export's progress lines."""


@pytest.fixture(scope="session")
def tiny_bundle_checkpoint(tmp_path_factory) -> Path:
    """A perturbed tiny unconditional checkpoint (step 7), shared by the whole session: do not modify."""
    path = tmp_path_factory.mktemp("bundle-ckpt") / "tiny.safetensors"
    cfg = _tiny_model_config()
    save_checkpoint(path, _make_tiny_unet(cfg).state_dict(), cfg, DiffusionConfig(), step=7)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_bundle_checkpoint) -> Path:
    """A bundle with fp32 and fp16 networks (default dynamo exporter, sample batch 2), exported once per session.

    Shared by the export, runtime and backend tests: copy it before modifying anything inside.
    """
    from vdm.export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_bundle_checkpoint, out, ExportOptions(precision="fp32", batch=2), log=quiet)
    export_bundle(tiny_bundle_checkpoint, out, ExportOptions(precision="fp16", batch=2), log=quiet)
    return out


# ---------------------------------------------------------------------------------------------
# A guard for the whole suite's process


class _StackT(ctypes.Structure):  # the C stack_t of sigaltstack(2)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _is_mapped(address: int) -> bool:
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(part, 16) for part in line.split()[0].split("-"))
        if low <= address < high:
            return True
    return False


def disable_dangling_signal_stack() -> bool:
    """Unregister this thread's alternate signal stack if its memory is no longer mapped; True if it was.

    OpenVINO's CPU plugin (2026.4, seen on this suite's machines) registers an alternate signal
    stack for the thread that compiles a model and later frees it without unregistering it. Any
    signal handled on that stack then kills the process with SIGSEGV: after the first DataLoader
    with workers, CPython's SIGCHLD handler (SA_ONSTACK) runs whenever a child process (ffmpeg) exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    current = _StackT()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & 2 or not current.ss_sp:  # 2: SS_DISABLE
        return False
    if _is_mapped(current.ss_sp):
        return False
    libc.sigaltstack(ctypes.byref(_StackT(None, 2, 0)), None)
    return True


@pytest.fixture(autouse=True)
def no_dangling_signal_stack():
    """After each test, drop an alternate signal stack a library freed (see disable_dangling_signal_stack)."""
    yield
    disable_dangling_signal_stack()

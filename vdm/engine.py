"""TensorRT engine facts that building (vdm.export) and running (vdm.runtime) share.

Which TensorRT vdm needs, the one logger per process, where a bundle keeps an engine and its timing
cache, what an engine is tied to (the TensorRT version and the GPU that built it, and the shapes of
its optimization profile), and the `vdm-export` line that rebuilds one. Written against TensorRT
10.x's Python API (valid for 11.x); nothing here imports TensorRT until it is asked for.
"""
from __future__ import annotations

import functools
from pathlib import Path

from vdm.errors import VdmError

MIN_TENSORRT_MAJOR = 10  # execute_async_v3, named I/O tensors and strong typing as used here
TIMING_CACHE_NAME = "timing.cache"  # shared by the bundle's engines; reused across rebuilds on one GPU


def require_tensorrt():
    """The `tensorrt` module (10.x or newer), or a VdmError saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise VdmError("--tensorrt / --backend tensorrt need NVIDIA TensorRT: pip install tensorrt "
                       "(TensorRT 10.x, needs an NVIDIA GPU and driver)") from None
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < MIN_TENSORRT_MAJOR:
        raise VdmError(f"TensorRT {tensorrt.__version__} is installed, vdm needs TensorRT {MIN_TENSORRT_MAJOR}.x "
                       "or newer: pip install -U tensorrt")
    return tensorrt


@functools.cache
def trt_logger(trt):
    """The process's one TensorRT logger: TensorRT keeps a single logger pointer (it warns about and ignores
    a second one while builders/runtimes exist), and it must outlive every object given it."""
    return trt.Logger(trt.Logger.WARNING)


def engine_file(onnx_name: str) -> str:
    """unet.onnx -> unet.plan, unet.fp16.onnx -> unet.fp16.plan."""
    return Path(onnx_name).with_suffix(".plan").name


def rebuild_command(precision: str | None, extra: str = "", out: str | Path = "DIR") -> str:
    """The `vdm-export` line that (re)builds an engine, for error messages."""
    return f"`vdm-export CHECKPOINT --out {out} --tensorrt{' --fp16' if precision == 'fp16' else ''}{extra}`"


def check_engine_compatible(trt_info: dict, trt_version: str, gpu_name: str, capability: tuple) -> None:
    """Raise a VdmError when an engine built as `trt_info` records cannot run with this TensorRT on this GPU.

    By default TensorRT engines load only in the TensorRT version that built them, and are tuned for
    (and only portable within) the GPU they were built on; rebuilding takes minutes, a wrong engine
    fails obscurely or runs slowly.
    """
    try:
        built_version, built_gpu = trt_info["tensorrt_version"], trt_info["gpu"]
        built_capability = tuple(trt_info["compute_capability"])
    except KeyError:
        raise VdmError(f"the bundle's TensorRT entry is incomplete; rebuild it with "
                       f"{rebuild_command(trt_info.get('precision'))}") from None
    name = trt_info.get("file", "the engine")
    rebuild = rebuild_command(trt_info.get("precision"))
    if built_version != trt_version:
        raise VdmError(f"{name} was built with TensorRT {built_version}, this is TensorRT {trt_version}; engines "
                       f"load only in the version that built them: rebuild it here with {rebuild} "
                       f"(or pip install tensorrt=={built_version})")
    if built_capability != tuple(capability) or built_gpu != gpu_name:
        raise VdmError(f"{name} was built on {built_gpu} (compute capability {'.'.join(map(str, built_capability))}), "
                       f"this GPU is {gpu_name} ({'.'.join(map(str, capability))}); engines are specific to "
                       f"the GPU that built them: rebuild it on this machine with {rebuild}")


def check_engine_shape(trt_info: dict, batch: int, frames: int) -> None:
    """Raise a VdmError when (batch, frames) is outside the engine's optimization profile."""
    lo, hi = trt_info["profile"]["x"]["min"], trt_info["profile"]["x"]["max"]  # (B, C, T, H, W) each
    for name, value, axis in (("batch", batch, 0), ("frames", frames, 2)):
        if not lo[axis] <= value <= hi[axis]:
            if value > hi[axis]:
                fix = f"--max-shape {max(batch, hi[0])}x{max(frames, hi[2])}"
            else:
                fix = f"--min-shape {min(batch, lo[0])}x{min(frames, lo[2])}"
            why = " (2 x the samples when guided)" if name == "batch" else ""
            raise VdmError(f"{name}={value}{why} is outside this TensorRT engine's profile ({lo[axis]}..{hi[axis]}); "
                           f"rebuild it with {rebuild_command(trt_info.get('precision'), ' ' + fix)}")

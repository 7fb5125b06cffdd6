"""Choosing the inference precision: fp32, bf16 (CPUs with AMX/AVX-512 bf16, GPUs), or fp16 (GPUs)."""
from __future__ import annotations

from pathlib import Path

import torch

from vdm.errors import VdmError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """AMX-bf16 or AVX-512 bf16: the matrix units that make bf16 convolutions faster than fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def resolve_precision(precision: str, device: torch.device, flags: set[str] | None = None) -> str:
    """'auto' -> fp16 on CUDA, bf16 on a CPU with bf16 matrix units, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise VdmError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if cpu_has_fast_bf16(flags) else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise VdmError("fp16 on the CPU is slow and poorly supported by torch; use --precision bf16 or fp32")
    return precision


def torch_dtype(precision: str) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    elif precision == "bf16":
        return torch.bfloat16
    elif precision == "fp16":
        return torch.float16
    else:
        raise ValueError(f"unresolved precision {precision!r}")

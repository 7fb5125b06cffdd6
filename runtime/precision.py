"""Choosing the inference precision: the one place where `auto` is decided, for every backend.

A backend declares the precisions it computes on each device (Backend.computes); a bundle-based one
also says which it has networks or engines for. `auto` then takes the first of AUTO_ORDER's list for
the device that the backend computes and has: fp16 on CUDA; on a CPU bf16 where it has bf16 matrix
units (AMX or AVX-512 bf16), else fp32.
"""
from __future__ import annotations

from typing import Iterable, Literal

import torch

from vdm.errors import VdmError
from vdm.machine import cpu_flags, cpu_has_fast_bf16  # noqa: F401  (cpu_flags: re-exported for scripts)

Precision = Literal["fp32", "bf16", "fp16", "int8", "auto"]
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")  # int8 is never auto's choice: ask for it


def auto_order(device_type: str, flags: set[str] | None = None) -> tuple[str, ...]:
    """The precisions `auto` prefers on this device, best first."""
    if device_type == "cuda":
        return ("fp16", "bf16", "fp32")
    return ("bf16", "fp32", "fp16") if cpu_has_fast_bf16(flags) else ("fp32", "bf16", "fp16")


def resolve_precision(requested: str, device_type: str, computes: tuple[str, ...], who: str,
                      available: Iterable[str] | None = None, flags: set[str] | None = None,
                      why_not: dict[str, str] | None = None) -> str:
    """The precision to run: `requested` if `who` computes it on this device, or auto's choice among
    what it computes and (bundles) has available; a VdmError saying what to use otherwise (and why,
    where the backend declares a reason in `why_not`)."""
    if requested not in PRECISIONS:
        raise VdmError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        have = set(computes) if available is None else set(computes) & set(available)
        for precision in auto_order(device_type, flags):
            if precision in have:
                return precision
        raise VdmError(f"{who} has nothing it can run on {device_type}: it computes {' or '.join(computes)}")
    if requested not in computes:
        reason = f" ({why_not[requested]})" if why_not and requested in why_not else ""
        raise VdmError(f"{who} computes {' or '.join(computes)} on {device_type}, not {requested}{reason}; "
                       f"use --precision {' or '.join(computes)} (or auto)")
    return requested


def torch_dtype(precision: str) -> torch.dtype:
    if precision == "fp32":
        return torch.float32
    elif precision == "bf16":
        return torch.bfloat16
    elif precision == "fp16":
        return torch.float16
    else:
        raise ValueError(f"unresolved precision {precision!r}")

"""The machine vdm runs on: CPU model and feature flags, and the versions of the software that matter.

Runtime decisions (bf16 only where the CPU has bf16 units) and every record of where a figure or an
artifact came from (benchmark reports, bundle manifests) read these, so they are written once.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

import vdm

BF16_UNIT_FLAGS = ("amx_bf16", "avx512_bf16")  # the matrix units that make bf16 faster than fp32
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 products summed in int32


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
    return bool(set(BF16_UNIT_FLAGS) & flags)


def cpu_has_int8_dot_product(flags: set[str] | None = None, environ=None) -> bool:
    """VNNI or AMX, and not capped below them by ONEDNN_MAX_CPU_ISA (which OpenVINO's oneDNN obeys).
    Without them (plain AVX2 or AVX-512), oneDNN adds pairs of u8 x s8 products in int16, which
    saturates with full 8-bit weights: int8 networks for such CPUs take 7-bit weights."""
    flags = cpu_flags() if flags is None else flags
    environ = os.environ if environ is None else environ
    cap = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    uncapped = cap in ("ALL", "DEFAULT") or any(isa in cap for isa in ("VNNI", "AMX", "BF16", "FP16", "AVX10"))
    return uncapped and bool(set(INT8_DOT_PRODUCT_FLAGS) & flags)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def software_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """vdm, Python and torch, then each package's version (None when it is absent or broken)."""
    versions: dict[str, str | None] = {"vdm": vdm.__version__, "python": platform.python_version(),
                                       "torch": torch.__version__}
    for name in packages:
        try:
            versions[name] = str(__import__(name).__version__)
        except Exception:  # absent, or broken on import: either way not usable here
            versions[name] = None
    return versions

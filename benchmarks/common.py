"""What every benchmark report states beside its figures: the machine, its CPU flags, the software
versions, the date and the command line; and the one way benchmarks time work on a device."""
from __future__ import annotations

import datetime
import os
import shlex
import time
from pathlib import Path
from typing import Callable

import torch

from vdm.machine import cpu_flags, cpu_model, software_versions
from vdm.runtime.backend import synchronize

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("onnxruntime", "openvino", "onnx", "numpy", "tensorrt")  # versions every report states
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")  # what decides CPU speed
# Variables that cap the instruction sets the kernels use below what the CPU flags say: oneDNN's (torch's
# convolutions and OpenVINO's CPU plugin) and ATen's. ONNX Runtime's MLAS has no such switch.
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def machine_info(flags_shown: tuple[str, ...] = CPU_FLAGS) -> dict:
    """The CPU, which of `flags_shown` it has, its cores and load, and the GPU (None without one)."""
    flags = cpu_flags()
    info = {"cpu": cpu_model(), "cpu_flags": {f: f in flags for f in flags_shown},
            "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "gpu": None,
            "isa_caps": {name: os.environ[name] for name in ISA_CAP_VARIABLES if os.environ.get(name)}}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_flags_text(machine: dict) -> str:
    """"avx2 yes, avx512f no, ..." for machine_info()'s flags, and the instruction-set caps in force."""
    text = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in machine["cpu_flags"].items())
    if machine.get("isa_caps"):
        caps = ", ".join(f"{name}={value}" for name, value in machine["isa_caps"].items())
        text += f"; instruction sets capped by {caps} (the kernels use less than these flags say)"
    return text


def utc_date() -> str:
    """Now in UTC, to the second (ISO 8601): the date a report states."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def command_line(module: str, argv: list[str]) -> str:
    """The command that reruns `python -m module argv...`."""
    return shlex.join(["python", "-m", module, *argv])


def run_facts(module: str, argv: list[str]) -> dict:
    """The machine, versions, UTC date and command line of a run of `python -m module argv...`."""
    return {"machine": machine_info(), "versions": software_versions(PACKAGES), "date": utc_date(),
            "command": command_line(module, argv)}


def facts_markdown(facts: dict) -> list[str]:
    """Markdown bullet lines for a report's run_facts() keys, and for the end of the run where the
    report has it: the load average then (`load_average_at_end`) and the whole run's seconds (`wall_s`)."""
    m, v = facts["machine"], facts["versions"]
    load = " / ".join(map(str, m["load_average_at_start"]))
    if "load_average_at_end" in facts:
        load += f", at end {' / '.join(map(str, facts['load_average_at_end']))}"
    flags = cpu_flags_text(m)
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    absent = ", ".join(k for k, val in v.items() if val is None)
    wall = f"; whole run {facts['wall_s']:.0f} s" if "wall_s" in facts else ""
    return [f"- machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), load average "
            f"at start {load}; GPU: {m['gpu'] or 'none'}",
            f"- CPU flags: {flags}",
            f"- versions: {versions}" + (f" (not installed: {absent})" if absent else ""),
            f"- date: {facts['date']}{wall}",
            f"- command: `{facts['command']}`"]


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one fn() takes: CUDA events on the current stream on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    synchronize(device)
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s

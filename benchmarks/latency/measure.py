"""One row's measurements: load, timed denoiser calls and videos, peak memory, FLOPs and parity.

Calls and videos are timed with benchmarks.common.time_once (CUDA events on a GPU, perf_counter on
the CPU); set-up steps, which are host work, with the host clock after vdm's one synchronize; parity
is vdm.fidelity's video PSNR. A row never raises: what cannot run here is 'unavailable', any other
failure 'error', with the reason.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks.common import time_once
from benchmarks.latency.model import Bundles, Model, Unavailable
from benchmarks.latency.plan import Settings, Variant, unavailable_reason
from vdm.config import ModelConfig, to_dict
from vdm.errors import VdmError
from vdm.fidelity import video_psnr
from vdm.runtime.backend import Backend, load_backend, synchronize
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import initial_noise
from vdm.unet import Unet3D


@dataclass
class Row:
    backend: str
    precision: str  # requested
    batch: int
    frames: int
    size: int
    steps: int
    sampler: str
    status: str = "ok"  # ok | unavailable | error
    reason: str = ""  # why unavailable/error; for ok rows, the backend's own note (if any)
    computes: str | None = None  # the precision the backend reports computing in
    describe: str = ""  # Backend.describe()
    call_ms_median: float | None = None
    call_ms_p90: float | None = None
    calls: int = 0
    video_s_median: float | None = None
    videos: int = 0
    videos_per_s: float | None = None
    gflop_per_call: float | None = None
    tflops: float | None = None
    peak_mem_mb: float | None = None
    mem_kind: str = ""
    export_s: float | None = None  # None: nothing exported for this row
    load_s: float | None = None
    first_call_s: float | None = None
    setup_s: float | None = None  # export + load + first call
    psnr_db: float | None = None
    max_abs_diff: float | None = None
    speedup_vs_torch_fp32: float | None = None


class References:
    """The torch fp32 videos per batch that parity compares against: from the torch fp32 row, else made here."""

    def __init__(self, model: Model, device: str, log):
        self.model, self.device, self.log = model, device, log
        self.videos: dict[int, torch.Tensor] = {}

    def get(self, batch: int, request: dict) -> torch.Tensor | None:
        if batch not in self.videos and self.model.checkpoint is not None:
            self.log(f"    (generating the torch fp32 reference for batch {batch})")
            backend = load_backend("torch", self.model.checkpoint, self.device, precision="fp32")
            self.videos[batch] = VideoGenerator(backend=backend).generate(**request).cpu()
        return self.videos.get(batch)


@dataclass
class Run:
    """Everything the rows share."""

    settings: Settings  # threads resolved to the count every engine gets
    model: Model
    bundles: Bundles
    references: References
    frames: int
    size: int
    log: Callable[[str], None]


# ------------------------------------------------------------------------------------------ timing


def wall_seconds(fn: Callable[[], object], device: torch.device):
    """(fn's result, host seconds until the device finished it): set-up steps, which are host work."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def call_inputs(model: Model, batch: int, frames: int, size: int, seed: int, device: torch.device):
    """(x, t, y) for one denoiser call: x_T noise (B, C, T, H, W), the middle timestep, the first class."""
    cfg = model.model_config
    x = initial_noise((batch, cfg.network_channels, frames, size, size), seed, device)
    t = torch.full((batch,), model.diffusion_config.num_timesteps // 2, dtype=torch.long, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device) if cfg.conditional else None
    return x, t, y


def measure_calls(backend: Backend, inputs: tuple, warmup: int, calls: int) -> list[float]:
    """Seconds of each of `calls` denoiser calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        backend.predict(*inputs)
    return [time_once(lambda: backend.predict(*inputs), backend.device) for _ in range(calls)]


def measure_videos(generator: VideoGenerator, request: dict, runs: int) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of `runs` whole generations, and the last one's videos (B, C, T, H, W)."""
    videos: list[torch.Tensor] = []
    times = [time_once(lambda: videos.append(generator.generate(**request)), generator.device) for _ in range(runs)]
    return times, videos[-1]


# ------------------------------------------------------------------------------ FLOPs, memory, parity


_FLOPS: dict[tuple, float] = {}


def count_flops(model_config: ModelConfig, batch: int, frames: int, size: int, device: torch.device) -> float:
    """FLOPs of one fp32 forward at (B, C, T, H, W), counted once per shape (they do not depend on weights)."""
    from torch.utils.flop_counter import FlopCounterMode

    key = (json.dumps(to_dict(model_config)), batch, frames, size, device.type)
    if key not in _FLOPS:
        model = Unet3D(model_config).to(device).eval()
        x = torch.zeros(batch, model_config.network_channels, frames, size, size, device=device)
        t = torch.full((batch,), 1, dtype=torch.long, device=device)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x, t, None)
        _FLOPS[key] = float(counter.get_total_flops())
    return _FLOPS[key]


def read_status_kb(field_name: str) -> int | None:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak memory of a block above what was in use when it began, in MB; `kind` says what was measured."""

    def __init__(self, device: torch.device, torch_only: bool):
        self.device, self.torch_only = device, torch_only
        self.mb: float | None = None
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda: torch.cuda.max_memory_allocated delta" + (
                "" if self.torch_only else " (misses the engine's own allocations)")
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS, to the current RSS
            self.base, self.exact = read_status_kb("VmRSS"), True
            self.kind = "cpu: peak RSS delta (VmHWM after clear_refs reset)"
        except OSError:
            self.base, self.exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
            self.kind = "cpu: ru_maxrss delta (process-lifetime peak: 0 when below an earlier row's peak)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.exact:
            self.mb = (read_status_kb("VmHWM") - self.base) / 1024
        else:
            self.mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) / 1024


def parity(videos: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(vdm.fidelity's video PSNR in dB, the largest absolute difference) of videos (B, C, T, H, W)."""
    return video_psnr(videos, reference), float((videos.double().cpu() - reference.double().cpu()).abs().max())


# --------------------------------------------------------------------------------------------- rows


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load(variant: Variant, path: Path, precision: str, run: Run) -> Backend:
    """load_backend with the variant's options; failures that mean 'cannot run here' become Unavailable."""
    options = variant.load_options(run.settings.threads)
    try:
        return load_backend(variant.backend, path, run.settings.device, precision=precision, **options)
    except (VdmError, ImportError) as e:
        raise Unavailable(first_line(e)) from None
    except Exception as e:
        if variant.backend == "openvino":  # any load failure of OpenVINO counts as 'not usable here'
            raise Unavailable(f"{type(e).__name__}: {first_line(e)}") from None
        raise


def measure_row(variant: Variant, precision: str, batch: int, run: Run) -> Row:
    """Load, time calls and videos, measure memory, FLOP/s and parity: one row, never raising."""
    s = run.settings
    row = Row(variant.name, precision, batch, run.frames, run.size, s.steps, s.sampler)
    reason = unavailable_reason(variant, s.device)
    if reason:
        return dataclasses.replace(row, status="unavailable", reason=reason)
    try:
        path, row.export_s = run.bundles.path_for(variant.source, variant.network_for(precision), batch)
        measure_backend(row, variant, path, run)
    except Unavailable as e:
        row.status, row.reason = "unavailable", str(e)
    except Exception as e:  # one broken row must not end the run
        row.status, row.reason = "error", f"{type(e).__name__}: {first_line(e)}"
    finally:
        gc.collect()
    return row


def measure_backend(row: Row, variant: Variant, path: Path, run: Run) -> None:
    """Fill `row`'s measurements from the backend loaded from `path`."""
    s = run.settings
    device = torch.device(s.device)
    request = {"num_samples": row.batch, "num_frames": row.frames, "height": row.size, "width": row.size,
               "num_steps": s.steps, "sampler": s.sampler, "seed": s.seed,
               "class_label": 0 if run.model.model_config.conditional else None}
    inputs = call_inputs(run.model, row.batch, row.frames, row.size, s.seed, device)
    with PeakMemory(device, torch_only=variant.backend == "torch") as memory:
        backend, row.load_s = wall_seconds(lambda: load(variant, path, row.precision, run), device)
        generator = VideoGenerator(backend=backend)
        generator.check_request(**{k: v for k, v in request.items() if k != "seed"})
        _, row.first_call_s = wall_seconds(lambda: backend.predict(*inputs), device)
        call_s = measure_calls(backend, inputs, s.warmup, s.calls)
        video_s, videos = measure_videos(generator, request, s.videos)
    row.computes, row.describe = backend.precision, backend.describe()
    row.reason = getattr(backend, "reason", "") if backend.precision != row.precision else ""
    row.setup_s = (row.export_s or 0.0) + row.load_s + row.first_call_s
    row.calls, row.videos = len(call_s), len(video_s)
    row.call_ms_median, row.call_ms_p90 = 1000 * float(np.median(call_s)), 1000 * float(np.percentile(call_s, 90))
    row.video_s_median = float(np.median(video_s))
    row.videos_per_s = row.batch / row.video_s_median
    row.gflop_per_call = count_flops(run.model.model_config, row.batch, row.frames, row.size, device) / 1e9
    row.tflops = row.gflop_per_call / row.call_ms_median  # GFLOP / ms = TFLOP / s
    row.peak_mem_mb, row.mem_kind = memory.mb, memory.kind
    videos = videos.cpu()
    if variant.name == "torch" and row.precision == "fp32":
        run.references.videos[row.batch] = videos
    reference = run.references.get(row.batch, request)
    if reference is not None:
        row.psnr_db, row.max_abs_diff = parity(videos, reference)


def add_speedups(rows: list[Row]) -> None:
    """speedup_vs_torch_fp32: the torch eager fp32 call median over this row's, at the same batch."""
    base = {r.batch: r.call_ms_median for r in rows if (r.backend, r.precision, r.status) == ("torch", "fp32", "ok")}
    for r in rows:
        if r.status == "ok" and r.batch in base:
            r.speedup_vs_torch_fp32 = base[r.batch] / r.call_ms_median

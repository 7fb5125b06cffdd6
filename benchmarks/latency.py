"""Latency of every backend on one model: a denoiser call, a whole video, memory, TFLOP/s, set-up and parity.

    python benchmarks/latency.py MODEL | --preset tiny|small|base
        [--backends torch,torch-compile,onnxruntime,onnxruntime-cudagraph,tensorrt,openvino]
        [--precisions fp32,fp16,bf16] [--batch 1,4] [--frames T] [--size S] [--sampler unipc] [--steps N]
        [--device cpu|cuda] [--quick] [--name NAME] [--out benchmarks/results] [--calls N] [--threads N]

MODEL is a checkpoint (.safetensors; it is copied first, so a training run that replaces it cannot
change the weights mid-benchmark) or a bundle directory (then the torch rows, and the torch fp32
reference the parity needs, are unavailable: pass the checkpoint instead). `--preset` builds a seeded
random model of that preset: weights are random, so only the timings mean anything. The bundles the
ONNX-based backends need are exported into a temporary work directory, and that export is timed as
set-up cost.

One row per (backend x precision x batch), all on the same inputs and seed:
  call      one denoiser call: median and p90 of --calls timed calls after --warmup warm-up calls
  video     one whole generation (every sampler step): median of --videos runs; videos/s = batch / that
  memory    CPU: the process's peak RSS during the row (load, calls, videos) minus its RSS before; the
            peak is reset per row through /proc/self/clear_refs. GPU: torch's allocator peak, which
            misses what onnxruntime and TensorRT allocate themselves (the row's mem_kind says which)
  TFLOP/s   FLOPs of one call, counted once per shape by torch.utils.flop_counter on the fp32 torch
            model, divided by the median call
  set-up    export (+ TensorRT engine build) + backend load + the first call (torch.compile compiles there)
  parity    PSNR (dB, peak-to-peak 2) of the final videos against torch fp32 from the same seed; 200 dB
            means identical (the cap export/parity.py uses too)
Timing: time.perf_counter around each call on the CPU; CUDA events on the current stream on a GPU.
Combinations a backend does not compute (onnxruntime bf16, torch fp16 on the CPU...) are skipped and
listed; a backend that cannot run here (package missing, no GPU) is a row 'unavailable' with the
reason; any other failure is a row 'error' and the run goes on (exit code 1 at the end).

--quick is a smoke run (under 2 minutes for the tiny preset on 2 CPU cores): 3 warm-up + 5 timed
calls, 2 videos, 5 steps, batch 1, fp32 only, the torchscript exporter (~5 s instead of the dynamo
exporter's 24-44 s for the tiny preset on this CPU), and no torch-compile unless --backends names it
(inductor's first compile of the tiny UNet took ~90 s here). Flags given explicitly override these.
On a shared CPU pass --threads 1: torch with 2 threads on 2 cores, one busy, ran the tiny UNet 7x slower.

Writes results.json, results.md and latency.png into OUT/NAME/ (NAME: <preset-or-model>-<device>-<date>).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from vdm.atomic import atomic_path, atomic_write_text
from vdm.checkpoint import file_sha256, read_checkpoint, save_checkpoint
from vdm.config import DiffusionConfig, ModelConfig, check_video_shape, get_preset, presets, to_dict
from vdm.errors import VdmError
from vdm.fidelity import PSNR_CAP_DB
from vdm.runtime.backend import Backend, load_backend, resolve_device
from vdm.bundle import read_bundle
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.precision import cpu_flags
from vdm.runtime.sampling import initial_noise
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS
from vdm.unet import Unet3D

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PRECISIONS = ("fp32", "fp16", "bf16")  # also the row order: fp32 first, so the reference comes first
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the flags that decide CPU precision speed
PERTURB_SCALE = 0.05  # --preset: std of the noise replacing zero-initialised parameters
Source = Literal["checkpoint", "bundle", "static-bundle", "engine"]


@dataclass
class Variant:
    """One --backends choice: a registered backend with fixed load options."""

    name: str  # the --backends name
    backend: str  # the vdm.runtime.backend.BACKENDS name it loads through
    options: dict  # extra load_backend options
    precisions: dict[str, tuple[str, ...]]  # device type -> precisions it computes there (others: n/a)
    source: Source  # what it loads: the checkpoint, a bundle, a static-shape bundle, a TensorRT engine
    takes_threads: bool = False  # accepts a `threads` option
    network: str | None = None  # the bundle network it reads whatever the precision (None: the row's precision)


VARIANTS = {v.name: v for v in (
    Variant("torch", "torch", {}, {"cpu": ("fp32", "bf16"), "cuda": PRECISIONS}, "checkpoint"),
    Variant("torch-compile", "torch", {"compile": True}, {"cpu": ("fp32", "bf16"), "cuda": PRECISIONS},
            "checkpoint"),
    Variant("onnxruntime", "onnxruntime", {}, {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16")}, "bundle",
            takes_threads=True),
    # CUDA graphs only exist on a GPU; on the CPU the row says so (it is unavailable, not n/a).
    Variant("onnxruntime-cudagraph", "onnxruntime", {"cuda_graph": True},
            {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16")}, "static-bundle", takes_threads=True),
    Variant("tensorrt", "tensorrt", {}, {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16")}, "engine"),
    # OpenVINO takes bf16/fp16 as a hint and may compute fp32 instead; the row's `computes` says which.
    Variant("openvino", "openvino", {}, {"cpu": PRECISIONS, "cuda": PRECISIONS}, "bundle", takes_threads=True,
            network="fp32"),
)}
CUDA_ONLY = {"onnxruntime-cudagraph", "tensorrt"}
CPU_ONLY = {"openvino"}
PACKAGES = {"onnxruntime": ("onnxruntime", "pip install 'vdm[onnx]'"),
            "tensorrt": ("tensorrt", "pip install tensorrt (TensorRT 10.x, needs an NVIDIA GPU and driver)"),
            "openvino": ("openvino", "pip install 'vdm[openvino]'")}


@dataclass
class Settings:
    model: Path | None  # checkpoint or bundle directory (None with --preset)
    preset: str | None  # build a random model of this preset instead
    backends: list[str]
    precisions: list[str]
    batches: list[int]
    frames: int | None  # None: the model's training clip length
    size: int | None  # None: the model's frame size
    sampler: str
    steps: int  # sampler steps of one video
    device: str  # 'cpu' or 'cuda' (resolved)
    quick: bool
    name: str
    out: Path  # the run's folder: OUT/NAME
    warmup: int  # untimed calls before the timed ones
    calls: int  # timed denoiser calls per row
    videos: int  # timed whole generations per row
    threads: int | None  # CPU threads for every engine (None: torch's default)
    exporter: str  # ONNX exporter for the bundles
    seed: int  # seeds the inputs, the videos and --preset's weights


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


class Unavailable(Exception):
    """This backend cannot run here (package, provider, device or model file missing)."""


# ---------------------------------------------------------------------------------------------- CLI


def comma_list(choices: tuple[str, ...] | None = None, cast=str):
    def parse(text: str) -> list:
        items = [cast(s.strip()) for s in text.split(",") if s.strip()]
        bad = [i for i in items if choices is not None and i not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}" if choices
                                             else f"{text!r}: give a comma-separated list")
        return items
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/latency.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=Path, help="checkpoint (.safetensors) or bundle directory")
    p.add_argument("--preset", choices=list(presets()), help="a seeded random model of this preset instead of MODEL")
    p.add_argument("--backends", type=comma_list(tuple(VARIANTS)), help="default: all (quick: all but torch-compile)")
    p.add_argument("--precisions", type=comma_list(PRECISIONS), help="default: fp32,fp16,bf16 (quick: fp32)")
    p.add_argument("--batch", type=comma_list(cast=int), help="default: 1,4 (quick: 1)")
    p.add_argument("--frames", type=int, help="T (default: the model's)")
    p.add_argument("--size", type=int, help="H = W (default: the model's)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=list(SAMPLERS))
    p.add_argument("--steps", type=int, help=f"sampler steps per video (default {DEFAULT_STEPS}; quick: 5)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: cuda when there is one)")
    p.add_argument("--quick", action="store_true", help="a smoke run; see the module docstring")
    p.add_argument("--name", help="results folder name (default <model>-<device>-<date>)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="parent of the results folder")
    p.add_argument("--warmup", type=int, help="warm-up calls per row (default 5; quick: 3)")
    p.add_argument("--calls", type=int, help="timed calls per row (default 30; quick: 5)")
    p.add_argument("--videos", type=int, help="timed videos per row (default 3; quick: 2)")
    p.add_argument("--threads", type=int, help="CPU threads for torch, onnxruntime and openvino")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], help="default dynamo (quick: torchscript)")
    p.add_argument("--seed", type=int, default=0)
    return p


def settings_from(args: argparse.Namespace, p: argparse.ArgumentParser) -> Settings:
    """Fill the defaults (--quick's where it sets them) and check flag combinations before any work."""
    if (args.model is None) == (args.preset is None):
        p.error("give MODEL (a checkpoint or bundle) or --preset NAME, not both and not neither")
    if args.model is not None and not args.model.exists():
        p.error(f"MODEL {args.model} does not exist")
    quick = args.quick

    def pick(value, normal, fast):
        """The flag's value when given, else the normal or --quick default."""
        return value if value is not None else (fast if quick else normal)

    counts = {"calls": pick(args.calls, 30, 5), "videos": pick(args.videos, 3, 2), "steps": pick(args.steps, DEFAULT_STEPS, 5)}
    if min(counts.values()) < 1:
        p.error("--steps, --calls and --videos must be at least 1")
    counts["warmup"] = pick(args.warmup, 5, 3)
    if counts["warmup"] < 0:
        p.error("--warmup must be 0 or more")
    batches = pick(args.batch, [1, 4], [1])
    if min(batches) < 1 or (args.threads is not None and args.threads < 1):
        p.error("--batch and --threads take positive integers")
    try:
        device = resolve_device(args.device).type
    except VdmError as e:
        p.error(str(e))
    all_backends = list(VARIANTS)
    quick_backends = [b for b in all_backends if b != "torch-compile"]
    stem = args.preset or (args.model.stem if args.model.is_file() else args.model.resolve().name)
    name = args.name or f"{stem}-{device}-{datetime.date.today().isoformat()}"
    return Settings(model=args.model, preset=args.preset,
                    backends=[b for b in VARIANTS if b in pick(args.backends, all_backends, quick_backends)],
                    precisions=[q for q in PRECISIONS if q in pick(args.precisions, list(PRECISIONS), ["fp32"])],
                    batches=sorted(set(batches)), frames=args.frames, size=args.size, sampler=args.sampler,
                    device=device, quick=quick, name=name, out=args.out / name, threads=args.threads,
                    exporter=pick(args.exporter, "dynamo", "torchscript"), seed=args.seed, **counts)


# ------------------------------------------------------------------------------------- machine info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    flags = cpu_flags()
    info = {"cpu": cpu_model(), "cpu_flags": {f: f in flags for f in CPU_FLAGS},
            "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def software_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("onnxruntime", "openvino", "onnx", "numpy", "tensorrt", "vdm"):
        try:
            versions[name] = str(__import__(name).__version__)
        except Exception:  # absent, or broken on import: either way not usable here
            versions[name] = None
    return versions


# ---------------------------------------------------------------------------------------- the model


@dataclass
class Model:
    """What is benchmarked: configs plus the checkpoint and/or bundle the backends load."""

    model_config: ModelConfig
    diffusion_config: DiffusionConfig
    checkpoint: Path | None  # a private copy inside the work dir
    bundle: Path | None  # given as MODEL (else bundles are exported from the checkpoint)
    info: dict  # for the report: kind, source path, sha256, step, parameters


def perturb_zero_init(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give zero-initialised parameters (output conv, norm modulations) small noise: else the output is 0."""
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(PERTURB_SCALE * torch.randn(param.shape, generator=generator))


def random_checkpoint(preset: str, path: Path, seed: int) -> Path:
    """Save a seeded, randomly initialised model of `preset` (with non-zero output) as a checkpoint."""
    config = get_preset(preset)
    torch.manual_seed(seed)
    model = Unet3D(config.model)
    perturb_zero_init(model, torch.Generator().manual_seed(seed))
    save_checkpoint(path, model.state_dict(), config.model, config.diffusion)
    return path


def prepare_model(settings: Settings, work: Path) -> Model:
    if settings.preset:
        checkpoint = random_checkpoint(settings.preset, work / f"{settings.preset}-random.safetensors", settings.seed)
        info = {"kind": "preset", "preset": settings.preset, "weights": "random (seeded; zero-initialised "
                f"layers given N(0, {PERTURB_SCALE}^2) noise so the output is not 0): timings only"}
    elif settings.model.is_dir():
        bundle = read_bundle(settings.model)
        source = bundle.manifest.get("source", {})
        info = {"kind": "bundle", "path": str(settings.model), "source_checkpoint": source.get("checkpoint"),
                "sha256": source.get("sha256"), "step": source.get("step")}
        return Model(bundle.model_config, bundle.diffusion_config, None, settings.model, info | {
            "parameters": parameter_count(bundle.model_config)})
    else:
        # A private copy: a training run replacing the file mid-benchmark must not change the weights.
        checkpoint = Path(shutil.copy2(settings.model, work / settings.model.name))
        info = {"kind": "checkpoint", "path": str(settings.model)}
    _, model_config, diffusion_config, metadata = read_checkpoint(checkpoint)
    info |= {"sha256": file_sha256(checkpoint), "step": int(metadata.get("step", 0)),
             "parameters": parameter_count(model_config)}
    return Model(model_config, diffusion_config, checkpoint, None, info)


def parameter_count(model_config: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Unet3D(model_config).parameters())


class Bundles:
    """The bundles the ONNX-based rows load, exported from the checkpoint on first use and timed."""

    def __init__(self, model: Model, settings: Settings, work: Path, frames: int, size: int, log):
        self.model, self.settings, self.work, self.log = model, settings, work, log
        self.frames, self.size = frames, size
        self.seconds: dict[tuple, float] = {}  # (source, precision, batch) -> export (+ build) seconds
        self.failed: dict[tuple, Exception] = {}

    def path_for(self, source: Source, precision: str, batch: int) -> tuple[Path, float | None]:
        """(what load_backend takes, seconds it took to make, None when nothing was made)."""
        if source == "checkpoint":
            if self.model.checkpoint is None:
                raise Unavailable("MODEL is a bundle: torch rows need the checkpoint it was exported from "
                                  f"({self.model.info.get('source_checkpoint')}); pass that .safetensors as MODEL")
            return self.model.checkpoint, None
        if self.model.bundle is not None:
            return self.model.bundle, None  # used as given; its load says what it lacks
        key = (source, precision, batch if source == "static-bundle" else None)
        if key in self.failed:  # do not export again for every row of a failed export
            raise self.failed[key]
        if key not in self.seconds:
            try:
                self.seconds[key] = self._make(source, precision, batch)
            except Exception as e:
                self.failed[key] = e
                raise
        return self.directory(source, batch), self.seconds[key]

    def directory(self, source: Source, batch: int) -> Path:
        """Static bundles are per batch; the dynamic one holds every precision (and TensorRT's engines)."""
        return self.work / (f"bundle-static-b{batch}" if source == "static-bundle" else "bundle")

    def _make(self, source: Source, precision: str, batch: int) -> float:
        from vdm.export.pipeline import ExportOptions, export_bundle

        if source == "engine":  # TensorRT builds its engine from the dynamic bundle's ONNX
            export_s = self.path_for("bundle", precision, batch)[1]
            return export_s + self._build_engine(precision)
        static = source == "static-bundle"
        # A sample batch of 1 would let the dynamo exporter specialise the batch axis to 1.
        sample_batch = batch if static else max(2, *self.settings.batches)
        options = ExportOptions(precision=precision, batch=sample_batch, frames=self.frames, size=self.size,
                                static=static, exporter=self.settings.exporter)
        start = time.perf_counter()
        export_bundle(self.model.checkpoint, self.directory(source, batch), options, log=self.log)
        return time.perf_counter() - start

    def _build_engine(self, precision: str) -> float:
        from vdm.export.tensorrt_build import EngineOptions, build_engine_for_bundle

        largest = (max(self.settings.batches), self.frames)
        start = time.perf_counter()
        build_engine_for_bundle(self.directory("engine", 0), precision, EngineOptions(opt_shape=largest, max_shape=largest),
                                log=self.log)
        return time.perf_counter() - start


# ------------------------------------------------------------------------------------- measurements


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one fn() takes: CUDA events on the current stream on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    start_s = time.perf_counter()
    fn()
    return time.perf_counter() - start_s


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
    x = initial_noise((batch, cfg.in_channels, frames, size, size), seed, device)
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


_FLOPS: dict[tuple, float] = {}


def count_flops(model_config: ModelConfig, batch: int, frames: int, size: int, device: torch.device) -> float:
    """FLOPs of one fp32 forward at (B, C, T, H, W), counted once per shape (they do not depend on weights)."""
    from torch.utils.flop_counter import FlopCounterMode

    key = (json.dumps(to_dict(model_config)), batch, frames, size, device.type)
    if key not in _FLOPS:
        model = Unet3D(model_config).to(device).eval()
        x = torch.zeros(batch, model_config.in_channels, frames, size, size, device=device)
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
            torch.cuda.synchronize(self.device)
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


def psnr(videos: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(PSNR in dB with peak-to-peak 2 for videos in [-1, 1], capped at 200 for identical; max abs difference)."""
    diff = videos.detach().double().cpu() - reference.double().cpu()
    mse = float(diff.pow(2).mean())
    db = PSNR_CAP_DB if mse == 0 else min(10 * math.log10(4.0 / mse), PSNR_CAP_DB)
    return db, float(diff.abs().max())


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


# -------------------------------------------------------------------------------------------- rows


@dataclass
class Run:
    """Everything the rows share."""

    settings: Settings
    model: Model
    bundles: Bundles
    references: References
    frames: int
    size: int
    log: Callable[[str], None]
    threads: int  # CPU threads every engine gets


def unavailable_reason(variant: Variant, device: str) -> str | None:
    """Why `variant` cannot run on this machine at all (package or device), before exporting anything."""
    reasons = []
    package, install = PACKAGES.get(variant.backend, (None, None))
    if package is not None and importlib.util.find_spec(package) is None:
        reasons.append(f"{package} is not installed: {install}")
    if variant.name in CUDA_ONLY and device != "cuda":
        reasons.append(f"{variant.name} needs a CUDA GPU (--device cuda); this run is on the {device}")
    if variant.name in CPU_ONLY and device != "cpu":
        reasons.append(f"{variant.name} runs on the CPU here; run it with --device cpu")
    return "; ".join(reasons) or None


def load(variant: Variant, path: Path, precision: str, run: Run) -> Backend:
    """load_backend with the variant's options; failures that mean 'cannot run here' become Unavailable."""
    options = {"precision": precision, **variant.options}
    if variant.takes_threads:
        options["threads"] = run.threads
    try:
        return load_backend(variant.backend, path, run.settings.device, **options)
    except (VdmError, ImportError) as e:
        raise Unavailable(first_line(e)) from None
    except Exception as e:
        if variant.backend == "openvino":  # any load failure of OpenVINO counts as 'not usable here'
            raise Unavailable(f"{type(e).__name__}: {first_line(e)}") from None
        raise


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def measure_row(variant: Variant, precision: str, batch: int, run: Run) -> Row:
    """Load, time calls and videos, measure memory, FLOP/s and parity: one row, never raising."""
    s = run.settings
    row = Row(variant.name, precision, batch, run.frames, run.size, s.steps, s.sampler)
    reason = unavailable_reason(variant, s.device)
    if reason:
        return dataclasses.replace(row, status="unavailable", reason=reason)
    try:
        path, row.export_s = run.bundles.path_for(variant.source, variant.network or precision, batch)
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
        row.psnr_db, row.max_abs_diff = psnr(videos, reference)


def add_speedups(rows: list[Row]) -> None:
    """speedup_vs_torch_fp32: the torch eager fp32 call median over this row's, at the same batch."""
    base = {r.batch: r.call_ms_median for r in rows if (r.backend, r.precision, r.status) == ("torch", "fp32", "ok")}
    for r in rows:
        if r.status == "ok" and r.batch in base:
            r.speedup_vs_torch_fp32 = base[r.batch] / r.call_ms_median


def plan(settings: Settings) -> tuple[list[tuple[Variant, str, int]], list[str]]:
    """(the rows to measure, in order: per batch, torch fp32 first; the combinations skipped as n/a)."""
    jobs, skipped = [], []
    for batch in settings.batches:
        for name in settings.backends:
            variant = VARIANTS[name]
            for precision in settings.precisions:
                if precision in variant.precisions[settings.device]:
                    jobs.append((variant, precision, batch))
                elif batch == settings.batches[0]:
                    skipped.append(f"{name} {precision}")
    return jobs, skipped


def row_line(row: Row) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.reason}"
    parity = "" if row.psnr_db is None else f", PSNR {row.psnr_db:.1f} dB"
    return (f"call {row.call_ms_median:.2f} ms (p90 {row.call_ms_p90:.2f}), video {row.video_s_median:.2f} s, "
            f"{row.tflops:.4f} TFLOP/s, set-up {row.setup_s:.1f} s, peak {row.peak_mem_mb:.0f} MB{parity}")


# ----------------------------------------------------------------------------------------- reports


def fmt(value, digits: int = 2) -> str:
    """`digits` decimals; None as a dash."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def sig(value, digits: int = 3) -> str:
    """`digits` significant digits (milliseconds to videos/s span several magnitudes); None as a dash."""
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def headline(rows: list[Row]) -> str:
    """Per batch: the fastest row by call median, and its speedup over torch eager fp32 in this run."""
    parts = []
    for batch in sorted({r.batch for r in rows}):
        ok = [r for r in rows if r.batch == batch and r.status == "ok"]
        if not ok:
            parts.append(f"batch {batch}: no row ran")
            continue
        best = min(ok, key=lambda r: r.call_ms_median)
        versus = (f"{best.speedup_vs_torch_fp32:.2f}x torch eager fp32" if best.speedup_vs_torch_fp32
                  else "no torch fp32 row to compare")
        parts.append(f"batch {batch}: **{best.backend} {best.precision}** {sig(best.call_ms_median)} ms/call, "
                     f"{sig(best.videos_per_s)} videos/s ({versus})")
    return "; ".join(parts)


def markdown(report: dict, rows: list[Row]) -> str:
    m, v, s, model = report["machine"], report["versions"], report["settings"], report["model"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["cpu_flags"].items())
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    absent = ", ".join(k for k, val in v.items() if val is None)
    weights = model.get("weights") or f"from the checkpoint (training step {model.get('step')})"
    lines = [
        f"# Latency: {report['name']}",
        "",
        f"- machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), load average at "
        f"start {' / '.join(map(str, m['load_average_at_start']))}, at end "
        f"{' / '.join(map(str, report['load_average_at_end']))}; GPU: {m['gpu'] or 'none'}",
        f"- CPU flags: {flags}",
        f"- versions: {versions}" + (f" (not installed: {absent})" if absent else ""),
        f"- date: {report['date']}; whole run {report['wall_s']:.0f} s",
        f"- command: `{report['command']}`",
        f"- model: {model['kind']} {model.get('path') or model.get('preset')}, {model['parameters']:,} parameters, "
        f"weights {weights}",
        f"- settings: device {s['device']}, {s['threads']} thread(s), T={report['frames']}, "
        f"{report['size']}x{report['size']}, {s['sampler']} {s['steps']} steps, seed {s['seed']}; "
        f"{s['warmup']} warm-up + {s['calls']} timed calls, {s['videos']} timed videos per row; "
        f"{s['exporter']} exporter" + ("; --quick" if s["quick"] else ""),
        "",
        f"**Headline** (measured in this run): {headline(rows)}",
        "",
        "| backend | precision | computes | batch | status | call ms median | call ms p90 | video s median "
        "| videos/s | TFLOP/s | peak MB | set-up s | PSNR dB | speedup vs torch fp32 | notes |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        setup = "" if r.setup_s is None else (f"set-up: {'' if r.export_s is None else f'export {r.export_s:.1f} + '}"
                                              f"load {r.load_s:.2f} + first call {r.first_call_s:.2f} s")
        notes = "; ".join(n for n in (r.reason.replace("|", "/"), setup) if n)
        speedup = "" if r.speedup_vs_torch_fp32 is None else f"{r.speedup_vs_torch_fp32:.2f}x"
        lines.append(f"| {r.backend} | {r.precision} | {r.computes or '–'} | {r.batch} | {r.status} | "
                     f"{sig(r.call_ms_median)} | {sig(r.call_ms_p90)} | {sig(r.video_s_median)} | "
                     f"{sig(r.videos_per_s)} | {sig(r.tflops)} | {fmt(r.peak_mem_mb, 0)} | {fmt(r.setup_s, 1)} | "
                     f"{fmt(r.psnr_db, 1)} | {speedup or '–'} | {notes} |")
    gflop = sorted({(r.batch, r.gflop_per_call) for r in rows if r.gflop_per_call})
    lines += [
        "",
        "Notes:",
        "- call: one denoiser call (network forward) at the row's batch; median and p90 of the timed calls, "
        + ("CUDA events on the current stream." if s["device"] == "cuda" else "time.perf_counter."),
        "- video: one whole generation (all sampler steps, plus the sampling loop's own work); videos/s = batch / median.",
        "- TFLOP/s: FLOPs of one fp32 call counted by torch.utils.flop_counter (" +
        ", ".join(f"{g:.2f} GFLOP at batch {b}" for b, g in gflop) + ") / the median call time.",
        f"- peak MB: {'; '.join(sorted({r.mem_kind for r in rows if r.mem_kind}))}; over the row's load, calls "
        "and videos. Memory a previous row freed but the allocator kept is not counted again.",
        "- set-up: export of the bundle the row loads (shared by the rows that load it; TensorRT adds its engine "
        "build) + backend load + first call (where torch.compile compiles).",
        "- PSNR: final videos against torch eager fp32 from the same seed and sampler settings; 200 dB = identical.",
        "- speedup: torch eager fp32's call median / this row's, same batch, same run.",
    ]
    if report["skipped"]:
        lines.append(f"- not measured (the backend does not compute that precision on this device): "
                     f"{', '.join(report['skipped'])}.")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, title: str, subtitle: str) -> None:
    """Horizontal bars of the median call per backend/precision, grouped by batch, with p90 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    colors = {name: plt.cm.tab10(i) for i, name in enumerate(VARIANTS)}
    labels, positions, y = [], [], 0.0
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.42 * (len(ok) + 1.5 * len({r.batch for r in ok}))))
    for batch in sorted({r.batch for r in ok}):
        group = [r for r in ok if r.batch == batch]
        if labels:  # a rule between batch groups
            ax.axhline(y + 0.75, color="0.7", linewidth=0.8)
        labels.append(f"batch {batch}")
        positions.append(y)
        y -= 1
        for r in group:
            ax.barh(y, r.call_ms_median, xerr=[[0], [r.call_ms_p90 - r.call_ms_median]], capsize=4,
                    color=colors[r.backend], height=0.7)
            ax.text(r.call_ms_p90, y, f"  {sig(r.call_ms_median)} ms", va="center", fontsize=9)
            labels.append(f"{r.backend} {r.precision}" + (f" (computes {r.computes})" if r.computes != r.precision else ""))
            positions.append(y)
            y -= 1
        y -= 0.5
    ax.set_yticks(positions, labels)
    for tick, label in zip(ax.get_yticklabels(), labels):
        if label.startswith("batch "):
            tick.set_fontweight("bold")
    if ok:
        widest = max(r.call_ms_p90 for r in ok)
        if widest / min(r.call_ms_median for r in ok) > 50:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, widest * 1.25)
    ax.set_xlabel("one denoiser call, ms (bar: median; whisker: p90)")
    ax.set_ylabel("backend, precision")
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    missing = list(dict.fromkeys(f"{r.backend} {r.precision} ({r.status})" for r in rows if r.status != "ok"))
    if missing:
        fig.text(0.01, 0.005, "not shown: " + ", ".join(missing), fontsize=8)
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_reports(report: dict, rows: list[Row], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "latency.png"]
    atomic_write_text(paths[0], json.dumps(report | {"results": [dataclasses.asdict(r) for r in rows]}, indent=2,
                                           default=str) + "\n")
    atomic_write_text(paths[1], markdown(report, rows))
    m = report["machine"]
    plot(rows, paths[2], f"{report['name']}: denoiser call latency, T={report['frames']}, "
         f"{report['size']}x{report['size']}, {report['settings']['device']}",
         f"{m['cpu']} ({report['settings']['threads']} thread(s)), torch {report['versions']['torch']}, "
         f"{report['date'][:10]}")
    return paths


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    settings = settings_from(p.parse_args(argv), p)
    started, wall_start = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    settings.threads = torch.get_num_threads()
    machine = machine_info()
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in machine["cpu_flags"].items())
    print(f"{machine['cpu']} ({flags}); GPU {machine['gpu'] or 'none'}; {settings.threads} thread(s)", flush=True)
    busy = machine["load_average_at_start"][0]
    if settings.device == "cpu" and settings.threads > 1 and busy + settings.threads > machine["usable_cores"] + 0.5:
        # Measured here: torch's 2 threads on 2 cores, one busy with training, ran the tiny UNet 7x slower than 1.
        print(f"warning: load average {busy} on {machine['usable_cores']} cores: {settings.threads} thread(s) will "
              "compete with other processes and the timings will show it; consider --threads 1", flush=True)
    with tempfile.TemporaryDirectory(prefix="vdm-latency-") as tmp:
        try:
            model = prepare_model(settings, Path(tmp))
            frames = settings.frames or model.model_config.frames
            size = settings.size or model.model_config.size
            check_video_shape(model.model_config, frames, size, size)
        except VdmError as e:
            p.error(str(e))
        log = lambda line: print(f"    {line}", flush=True)  # noqa: E731
        run = Run(settings, model, Bundles(model, settings, Path(tmp), frames, size, log),
                  References(model, settings.device, log), frames, size, log, settings.threads)
        jobs, skipped = plan(settings)
        rows = []
        for i, (variant, precision, batch) in enumerate(jobs, 1):
            print(f"[{i}/{len(jobs)}] {variant.name} {precision} batch {batch}", flush=True)
            rows.append(measure_row(variant, precision, batch, run))
            print(f"    {row_line(rows[-1])}", flush=True)
    add_speedups(rows)
    report = {"name": settings.name, "machine": machine, "versions": software_versions(),
              "date": started.isoformat(timespec="seconds"), "command": shlex.join(["python", "benchmarks/latency.py",
                                                                                     *argv]),
              "settings": dataclasses.asdict(settings), "model": model.info | {"config": to_dict(model.model_config)},
              "frames": frames, "size": size, "skipped": skipped, "wall_s": time.perf_counter() - wall_start,
              "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}
    for path in write_reports(report, rows, settings.out):
        print(f"wrote {path}")
    print(f"headline: {headline(rows).replace('**', '')}")
    errors = [r for r in rows if r.status == "error"]
    if errors:
        print(f"{len(errors)} row(s) failed: see 'error' rows in results.md", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

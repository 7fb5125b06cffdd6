"""Bundle ONNX -> TensorRT engine: one optimization profile, a timing cache, the engine beside its ONNX.

Written against TensorRT 10.x's Python API (and valid for 11.x): the network is *strongly typed*, so
precision comes from the ONNX's own types. The fp16 engine is built from the bundle's fp16 ONNX
(`unet.fp16.onnx`, fp16 weights with fp32 norms/softmax/IO), the fp32 engine from `unet.onnx`; the
deprecated weakly-typed BuilderFlag.FP16 is never set.

An engine only runs on the TensorRT version and the GPU that built it, so the manifest records both
under `networks[precision]["tensorrt"]`, and the runtime checks them before deserializing.

Profile defaults (each can be overridden with --min-shape/--opt-shape/--max-shape BATCHxFRAMES):
    opt  the exported sample input (`vdm-export --batch/--frames`)
    min  the manifest's minimum: batch 1, the fewest frames the UNet takes
    max  batch 2 x opt (classifier-free guidance runs the conditional and the null-class halves as
         one batch of 2B), frames = opt, both capped at the limits the ONNX was exported for.
We do not default max to the manifest's limits (64 x 128): TensorRT sizes the execution context's
memory for the max shape and tunes kernels across the whole range, so huge ranges cost build time,
GPU memory and often speed at the shapes actually used.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vdm.atomic import atomic_write_bytes
from vdm.bundle import file_record, read_bundle, write_manifest
from vdm.config import ModelConfig
from vdm.engine import TIMING_CACHE_NAME, engine_file, require_tensorrt, trt_logger
from vdm.errors import VdmError

Shape2 = tuple[int, int]  # (batch, frames)
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)


@dataclass
class EngineOptions:
    min_shape: Shape2 | None = None  # profile minimum (batch, frames); None: the manifest's minimum
    opt_shape: Shape2 | None = None  # the shape TensorRT tunes for; None: the exported sample input
    max_shape: Shape2 | None = None  # profile maximum; None: (2 x opt batch for guidance, opt frames)
    workspace_gb: float = 8.0  # limit of TensorRT's scratch memory pool while building and running

    @classmethod
    def from_cli(cls, min_shape: str | None, opt_shape: str | None, max_shape: str | None,
                 workspace_gb: float) -> "EngineOptions":
        """Parse `vdm-export`'s BATCHxFRAMES strings (e.g. '2x16')."""
        if not workspace_gb > 0:
            raise VdmError(f"--workspace-gb must be positive, got {workspace_gb}")
        return cls(parse_shape("min-shape", min_shape), parse_shape("opt-shape", opt_shape),
                   parse_shape("max-shape", max_shape), workspace_gb)


def parse_shape(flag: str, text: str | None) -> Shape2 | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise VdmError(f"--{flag} {text!r}: expected BATCHxFRAMES with positive numbers, e.g. 2x16")
    return int(match[1]), int(match[2])


DEFAULT_MAX_BATCH = 8  # 4 videos with guidance


def profile_shapes(network_entry: dict, model_config: ModelConfig, options: EngineOptions) -> Profile:
    """Full (min, opt, max) shapes of every input: x (B, C, T, H, W), t (B,), y (B,) when conditional.

    Dynamic axes are the manifest's named dims ('batch', 'frames'); fixed dims are kept as exported.
    """
    shapes = network_entry["shapes"]
    multiple = shapes.get("frames_multiple_of", model_config.temporal_factor)
    if shapes["static"]:
        corners = static_corners(shapes, options)
    else:
        corners = dynamic_corners(shapes, options, multiple)
    check_corners(corners, shapes, multiple)
    return {io["name"]: tuple(input_shape(io, corner) for corner in corners) for io in network_entry["inputs"]}


def static_corners(shapes: dict, options: EngineOptions) -> tuple[Shape2, Shape2, Shape2]:
    """A static bundle has one shape: its engine's profile is that shape three times."""
    fixed = (shapes["batch"]["opt"], shapes["frames"]["opt"])
    for given in (options.min_shape, options.opt_shape, options.max_shape):
        if given is not None and given != fixed:
            raise VdmError(f"this bundle was exported with static shape {fixed[0]}x{fixed[1]} (batch x frames); "
                           f"re-export without --static to build a profile over other shapes")
    return fixed, fixed, fixed


def dynamic_corners(shapes: dict, options: EngineOptions, multiple: int) -> tuple[Shape2, Shape2, Shape2]:
    batch, frames = shapes["batch"], shapes["frames"]
    opt = options.opt_shape or (batch["opt"], frames["opt"])
    # The smallest frames the UNet takes; the manifest's minimum may not be a multiple of its levels.
    lo = options.min_shape or (batch["min"], -(-frames["min"] // multiple) * multiple)
    # Guidance runs [conditional; null-class] as one batch of 2B, and vdm-run makes 4 videos by
    # default: cover both unless told otherwise (a wider profile builds slower, so not the manifest's max).
    hi = options.max_shape or (min(max(2 * opt[0], DEFAULT_MAX_BATCH), batch["max"]), opt[1])
    return lo, opt, hi


def check_corners(corners: tuple[Shape2, Shape2, Shape2], shapes: dict, multiple: int) -> None:
    """min <= opt <= max per axis, inside the ONNX's exported limits, frames a multiple of the UNet's factor."""
    for axis, name in enumerate(("batch", "frames")):
        lo, opt, hi = (corner[axis] for corner in corners)
        if not lo <= opt <= hi:
            raise VdmError(f"TensorRT profile {name}: need min <= opt <= max, got {lo}, {opt}, {hi}; "
                           "fix --min-shape/--opt-shape/--max-shape")
        limit = shapes[name]
        if lo < limit["min"] or hi > limit["max"]:
            raise VdmError(f"TensorRT profile {name} {lo}..{hi} is outside the {limit['min']}..{limit['max']} "
                           f"this bundle's ONNX was exported for; re-export with `vdm-export --max-{name} {hi}` "
                           "or narrow --min-shape/--max-shape")
        if name == "frames" and any(value % multiple for value in (lo, opt, hi)):
            raise VdmError(f"TensorRT profile frames {lo}/{opt}/{hi}: every value must be a multiple of "
                           f"{multiple} (this UNet's temporal downsampling)")


def input_shape(io: dict, corner: Shape2) -> tuple[int, ...]:
    """The manifest's input shape with its named dynamic dims set to this (batch, frames)."""
    named = {"batch": corner[0], "frames": corner[1]}
    dims = []
    for dim in io["shape"]:
        if isinstance(dim, str) and dim not in named:
            raise VdmError(f"input {io['name']} has an unknown dynamic axis {dim!r}; re-export the bundle")
        dims.append(named[dim] if isinstance(dim, str) else int(dim))
    return tuple(dims)


def gpu_identity() -> tuple[str, tuple[int, int]]:
    """(name, compute capability) of the current CUDA device: what an engine is tied to."""
    if not torch.cuda.is_available():
        raise VdmError("building a TensorRT engine needs an NVIDIA GPU, and torch sees none here; "
                       "build it on the machine that will run it")
    return torch.cuda.get_device_name(), tuple(torch.cuda.get_device_capability())


def parse_onnx(trt, builder, logger, onnx_path: Path):
    """A strongly typed network from the ONNX file (parse_from_file also reads external weight data)."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
        raise VdmError(f"TensorRT cannot parse {onnx_path.name}: {errors}; try re-exporting with another "
                       "--opset or --exporter")
    return network, parser  # the parser owns weights the network refers to: keep it alive until built


def attach_timing_cache(trt, config, path: Path, log) -> None:
    """Reuse the bundle's timing cache when it came from this GPU and TensorRT; else start a fresh one."""
    previous = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(previous)
    except Exception:  # a truncated or foreign file: TensorRT raises its own error types
        cache = None
    if previous and cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        log(f"reusing the timing cache {path.name} ({len(previous) // 1024} KiB)")
        return
    if previous:
        log(f"{path.name} is from another GPU or TensorRT version: starting a fresh timing cache")
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: Path, engine_path: Path, profile: Profile, workspace_gb: float,
                 timing_cache_path: Path, log=print) -> dict:
    """Build `engine_path` from `onnx_path` for one optimization profile; returns what the manifest records."""
    gpu_name, capability = gpu_identity()
    trt = require_tensorrt()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 1024**3))
    # TensorRT lets float32 convolutions/matmuls use TF32 by default; the fp32 engine should be as exact as
    # the ONNX parity measured, and in the fp16 engine only norms and embeddings are float32 anyway.
    config.clear_flag(trt.BuilderFlag.TF32)
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        trt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(trt_profile)
    attach_timing_cache(trt, config, timing_cache_path, log)

    log(f"building {engine_path.name} from {onnx_path.name} with TensorRT {trt.__version__} on {gpu_name} "
        f"(sm_{capability[0]}{capability[1]}); x {profile_summary(profile)}")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise VdmError(f"TensorRT could not build {engine_path.name} (its messages above say why); if it ran "
                       "out of memory, raise --workspace-gb or lower --max-shape")
    atomic_write_bytes(engine_path, memoryview(serialized))
    atomic_write_bytes(timing_cache_path, memoryview(config.get_timing_cache().serialize()))
    log(f"built {engine_path.name} in {seconds:.1f} s ({engine_path.stat().st_size / 2**20:.1f} MiB)")
    return {
        "file": engine_path.name,
        **file_record(engine_path),  # checked before the engine loads
        "onnx": onnx_path.name,
        "tensorrt_version": trt.__version__,
        "gpu": gpu_name,
        "compute_capability": list(capability),
        "profile": {name: dict(zip(("min", "opt", "max"), map(list, corners))) for name, corners in profile.items()},
        "workspace_gb": workspace_gb,
        "build_seconds": round(seconds, 2),
    }


def profile_summary(profile: Profile) -> str:
    """'min (1, 3, 4, 8, 8) opt (...) max (...)' for x, the input that carries both dynamic axes."""
    lo, opt, hi = profile["x"]
    return f"min {lo} opt {opt} max {hi}"


def build_engine_for_bundle(bundle_dir: Path, precision: str, options: EngineOptions, log=print) -> dict:
    """Build the engine of the bundle's `precision` network and record it in the manifest; returns its entry."""
    gpu_identity()  # fail before reading anything large when there is no GPU
    bundle = read_bundle(bundle_dir)
    entry = bundle.network(precision)
    onnx_path = bundle.file(precision)
    profile = profile_shapes(entry, bundle.model_config, options)
    info = build_engine(onnx_path, bundle.root / engine_file(entry["file"]), profile, options.workspace_gb,
                        bundle.root / TIMING_CACHE_NAME, log)
    info["precision"] = precision
    # Re-read: the manifest is replaced whole, so start from what is on disk now.
    manifest = read_bundle(bundle_dir).manifest
    manifest["networks"][precision]["tensorrt"] = info
    write_manifest(bundle.root, manifest)
    return info

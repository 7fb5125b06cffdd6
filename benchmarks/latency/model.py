"""What is benchmarked: the model (a checkpoint, a bundle or a seeded random preset), and the bundles
and TensorRT engines the rows load, exported from it with vdm's own export functions and timed.

These bundles live in the run's temporary work directory, not in vdm's bundle cache
(vdm.export.pipeline.cached_bundle): the rows need static-shape bundles, fp16 networks and engines
that the cache does not hold, and their export time is part of each row's set-up cost.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.latency.plan import Settings, Source
from vdm.bundle import read_bundle
from vdm.checkpoint import file_sha256, read_checkpoint, save_checkpoint
from vdm.config import DiffusionConfig, ModelConfig, get_preset
from vdm.unet import Unet3D

PERTURB_SCALE = 0.05  # --preset: std of the noise replacing zero-initialised parameters


class Unavailable(Exception):
    """This backend cannot run here (package, provider, device or model file missing)."""


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
    """The model named by MODEL or --preset, with a private copy of its checkpoint in `work`."""
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
        if precision == "int8":  # made from the fp32 network, calibrated and gated (vdm/int8.py)
            from vdm.int8 import Int8Options, export_int8

            export_s = self.path_for(source, "fp32", batch)[1]
            start = time.perf_counter()
            options = Int8Options()
            if self.model.info["kind"] == "preset":  # random weights: their videos say nothing, time the network
                options = Int8Options(calibration_videos=2, gate_videos=1, min_psnr_db=-math.inf,
                                      max_score_change=math.inf)
                self.log("int8 of random weights: every inner convolution quantized, quality gate off (timings only)")
            export_int8(self.model.checkpoint, self.directory(source, batch), options, log=self.log)
            return export_s + time.perf_counter() - start
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

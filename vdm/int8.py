"""INT8 networks with a quality gate: calibrate on the model's own sampling trajectories, quantize
the bundle's fp32 ONNX (vdm.export.int8), and publish only what makes the same videos.

It sits above vdm.export and vdm.runtime and uses both: the runtime records the calibration inputs
(every network call of the default sampler on `calibration_videos` videos) and runs the gate, which
compares final videos from fixed seeds on OpenVINO int8 with the PyTorch fp32 model: PSNR at least
`min_psnr_db`, and every vdm.metrics property score within `max_score_change`.

Before quantizing, the activations' per-channel outliers are moved into the weights (SmoothQuant,
vdm.export.int8.smooth_activations), and the weights take 8 bits where this CPU sums int8 products
in int32 (VNNI/AMX), else 7 (vdm.export.int8 says why; a bundle with 8-bit weights warns on a CPU
without). When the fully quantized network fails, each convolution is ranked by the PSNR of the
videos with it alone in int8, and the most harmful go back to float one by one until the gate
passes. On the demo (OpenVINO, batch 4, 2026-11-29): with 8-bit weights none stays float (1.92x
OpenVINO fp32); with 7-bit weights 5 (1.49x, oneDNN capped to AVX2); before smoothing 7. Keeping
whole UNet levels instead, full resolution first, needed 20 in float and ran at fp32's speed
(2026-11-28). When none passes, nothing is written and the export exits 1.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vdm.atomic import remove_stale, writer_prefix
from vdm.bundle import file_record, network_file, read_bundle, write_manifest
from vdm.errors import VdmError
from vdm.export.int8 import SMOOTHING_ALPHA
from vdm.fidelity import video_psnr
from vdm.metrics import score_videos
from vdm.runtime.backend import Backend
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.openvino_backend import CACHE_NAME
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS


@dataclass
class Int8Options:
    calibration_videos: int = 16  # videos whose every sampling step calibrates the activation ranges
    calibration_seed: int = 1000  # their noise (kept apart from the gate's seeds)
    gate_videos: int = 8  # videos the quality gate compares with fp32
    gate_seed: int = 0
    min_psnr_db: float = 30.0  # final videos against PyTorch fp32 from the same noise
    max_score_change: float = 0.05  # per vdm.metrics property score
    smoothing_alpha: float | None = SMOOTHING_ALPHA  # outliers' share moved into the weights; None: no smoothing
    weight_bits: int | None = None  # 8 or 7; None: 8 where this CPU has VNNI/AMX (the gate runs here), else 7

    def __post_init__(self):
        if self.calibration_videos < 1 or self.gate_videos < 1:
            raise VdmError("--calibration-videos must be at least 1")
        if self.weight_bits not in (None, 7, 8):
            raise VdmError(f"--int8-weight-bits must be 7 or 8, not {self.weight_bits}")
        if self.smoothing_alpha is not None and not 0 <= self.smoothing_alpha <= 1:
            raise VdmError(f"the smoothing alpha must be in [0, 1], not {self.smoothing_alpha}")


class Int8GateError(VdmError):
    """No int8 network made the same videos as fp32: nothing was written (exit 1, as a parity failure)."""

    exit_code = 1


class Recorder(Backend):
    """Wraps a backend and keeps every network input it sees, one feed per video."""

    def __init__(self, inner: Backend):
        self.inner, self.device = inner, inner.device
        self.model_config, self.diffusion_config = inner.model_config, inner.diffusion_config
        self.feeds: list[dict[str, np.ndarray]] = []

    def predict(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        for i in range(x.shape[0]):  # (1, C, T, H, W) each: the dynamic batch axis takes any size
            feed = {"x": x[i:i + 1].cpu().numpy().copy(), "t": t[i:i + 1].cpu().numpy().astype(np.int64)}
            if self.model_config.conditional:
                label = y[i:i + 1] if y is not None else torch.full((1,), self.model_config.null_class)
                feed["y"] = label.cpu().numpy().astype(np.int64)
            self.feeds.append(feed)
        return self.inner.predict(x, t, y)


def record_calibration(reference: VideoGenerator, options: Int8Options) -> list[dict[str, np.ndarray]]:
    """The network inputs of the default sampler's every step on `calibration_videos` videos; a
    class-conditional model's videos are shared out over its classes and the null class."""
    recorder = Recorder(reference.backend)
    cfg = reference.model_config
    labels = [*range(cfg.num_classes), None] if cfg.conditional else [None]
    per_label = -(-options.calibration_videos // len(labels))
    for i, label in enumerate(labels):
        count = min(per_label, options.calibration_videos - i * per_label)
        if count > 0:
            VideoGenerator(backend=recorder).generate(count, seed=options.calibration_seed + i, class_label=label)
    return recorder.feeds


def quality_gate(candidate: torch.Tensor, reference: torch.Tensor, options: Int8Options) -> dict:
    """Compare final videos (N, C, T, H, W) with fp32's: PSNR, and each property score's change."""
    psnr = video_psnr(candidate, reference)
    int8_scores, fp32_scores = score_videos(candidate).property_scores, score_videos(reference).property_scores
    change = max(abs(int8_scores[p] - fp32_scores[p]) for p in fp32_scores)
    return {"psnr_db": psnr, "min_psnr_db": options.min_psnr_db, "property_scores": int8_scores,
            "fp32_property_scores": fp32_scores, "max_score_change": change,
            "allowed_score_change": options.max_score_change,
            "passed": psnr >= options.min_psnr_db and change <= options.max_score_change}


def fallback_plans(sensitivity: dict[str, float]) -> list[list[str]]:
    """The convolutions to keep in float, attempt by attempt: the most sensitive one (the lowest video
    PSNR when quantized alone), then the two most sensitive, ... up to all but the least sensitive
    (keeping that too would quantize nothing)."""
    ranked = sorted(sensitivity, key=sensitivity.get)
    return [ranked[:count] for count in range(1, len(ranked))]


@dataclass
class GateRun:
    """Judges int8 networks made from one quantized network by keeping chosen convolutions in float:
    each is written with its manifest into `staging`, run on OpenVINO, and its videos compared with
    fp32's."""
    bundle: object  # vdm.bundle.Bundle: the fp32 network's entry and the manifest
    staging: Path
    fp32_model: object  # onnx.ModelProto
    quantized: object  # onnx.ModelProto, every convolution but the ends in int8
    quantization: dict  # how `quantized` was made
    fp32_videos: torch.Tensor  # (N, C, T, H, W), the gate's seeds on PyTorch fp32
    calibration_calls: int
    options: Int8Options

    def judge(self, keep: list[str], sensitivity: dict | None = None) -> tuple[dict, dict]:
        """(the manifest entry of the network with `keep` in float, its gate result)."""
        import onnx

        from vdm.export.int8 import end_convs, float_convs, quantized_convs

        network = float_convs(self.quantized, self.fp32_model, keep) if keep else self.quantized
        record = {**self.quantization, "quantized_convs": len(quantized_convs(network)),
                  "fp32_convs": end_convs(self.fp32_model) + keep}
        if sensitivity:
            record["sensitivity_psnr_db"] = sensitivity
        onnx.save(network, str(self.staging / network_file("int8")))
        entry = int8_entry(self.bundle.network("fp32"), self.staging, record, self.calibration_calls, self.options)
        write_manifest(self.staging, {**self.bundle.manifest, "networks": {"int8": entry}})
        candidate = VideoGenerator(self.staging, backend="openvino", precision="int8")
        videos = candidate.generate(self.options.gate_videos, seed=self.options.gate_seed)
        shutil.rmtree(self.staging / CACHE_NAME, ignore_errors=True)  # one compiled blob per candidate otherwise
        return entry, quality_gate(videos, self.fp32_videos, self.options)


def rank_convs(run: GateRun) -> dict[str, float]:
    """conv name -> the final videos' PSNR against fp32 with that convolution alone in int8."""
    from vdm.export.int8 import quantized_convs

    names = quantized_convs(run.quantized)
    sensitivity = {}
    for name in tqdm(names, desc="int8 sensitivity", unit="conv", dynamic_ncols=True):
        _, gate = run.judge([other for other in names if other != name])
        sensitivity[name] = round(gate["psnr_db"], 2)
    return sensitivity


def export_int8(checkpoint: Path, bundle_dir: Path, options: Int8Options, log=print) -> dict:
    """Add an int8 network, made from the bundle's fp32 one and passing the gate; returns its entry."""
    import onnx

    from vdm.checkpoint import file_sha256
    from vdm.export.int8 import import_nncf, quantize_network, smooth_activations

    import_nncf()  # say what to install before any work
    bundle = read_bundle(bundle_dir)
    if bundle.manifest["source"]["sha256"] != file_sha256(checkpoint):
        raise VdmError(f"bundle {bundle_dir} was exported from another checkpoint than {checkpoint}; "
                       "export its fp32 network from this one first")
    reference = VideoGenerator(checkpoint, backend="torch", device="cpu", precision="fp32")
    feeds = record_calibration(reference, options)
    log(f"calibration: {len(feeds)} network calls ({options.calibration_videos} videos x {DEFAULT_SAMPLER} "
        f"{DEFAULT_STEPS} steps, seed {options.calibration_seed})")
    fp32_model = onnx.load(str(bundle.file("fp32")))
    smoothing = {}
    if options.smoothing_alpha is not None:  # the same fp32 network, easier to quantize
        fp32_model, smoothing = smooth_activations(fp32_model, feeds, options.smoothing_alpha)
    quantized, quantization = quantize_network(fp32_model, feeds, options.weight_bits)
    quantization |= smoothing
    fp32_videos = reference.generate(options.gate_videos, seed=options.gate_seed)
    for stale in remove_stale(bundle.root, ".export-*", "export"):
        log(f"removed {stale.name}, left by an interrupted export")
    staging = Path(tempfile.mkdtemp(prefix=writer_prefix("", "export"), dir=bundle.root))
    try:
        run = GateRun(bundle, staging, fp32_model, quantized, quantization, fp32_videos, len(feeds), options)
        entry, gate = run.judge([])
        log_attempt(log, entry, gate, options)
        if not gate["passed"]:
            log("ranking the quantized convolutions by what each alone costs the videos")
            sensitivity = rank_convs(run)
            for keep in fallback_plans(sensitivity):
                entry, gate = run.judge(keep, sensitivity)
                log_attempt(log, entry, gate, options)
                if gate["passed"]:
                    break
            else:
                raise Int8GateError(f"no int8 network passed the quality gate, even with only the least "
                                    f"sensitive convolution quantized; nothing was written to {bundle_dir}")
        entry["parity"] = {"rel_error": None, "passed": True, "gate": gate}
        return publish(bundle_dir, staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def log_attempt(log, entry: dict, gate: dict, options: Int8Options) -> None:
    quantization = entry["quantization"]
    log(f"int8 with {quantization['quantized_convs']} convolutions quantized ({len(quantization['fp32_convs'])} "
        f"in float): final videos {gate['psnr_db']:.1f} dB against fp32 (gate {options.min_psnr_db:g}), largest "
        f"score change {gate['max_score_change']:.3f} (gate {options.max_score_change:g}): "
        f"{'passed' if gate['passed'] else 'failed'}")


def int8_entry(fp32_entry: dict, folder: Path, quantization: dict, samples: int, options: Int8Options) -> dict:
    """The manifest entry of the int8 network in `folder`: the fp32 entry's I/O, and how it was made."""
    name = network_file("int8")
    return {
        **{k: fp32_entry[k] for k in ("inputs", "outputs", "shapes", "opset", "exporter", "group_norm")
           if k in fp32_entry},  # bundles exported before group_norm was recorded lack it
        "file": name, "external_data": None, "files": {name: file_record(folder / name)}, "precision": "int8",
        "parity": {"rel_error": None, "passed": False},
        "calibration": {"sampler": DEFAULT_SAMPLER, "steps": DEFAULT_STEPS, "videos": options.calibration_videos,
                        "seed": options.calibration_seed, "network_calls": samples},
        "quantization": quantization, "gate_options": dataclasses.asdict(options),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def publish(bundle_dir: Path, staging: Path, entry: dict) -> dict:
    """Move the int8 network into the bundle, then replace the manifest (re-read: the latest wins)."""
    manifest = read_bundle(bundle_dir).manifest
    os.replace(staging / entry["file"], Path(bundle_dir) / entry["file"])
    manifest["networks"]["int8"] = entry
    write_manifest(bundle_dir, manifest)
    return entry

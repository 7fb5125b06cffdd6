"""Checkpoint -> bundle: export, check, measure parity, and only then publish into the bundle directory.

Everything is written into a temporary directory beside the bundle first; files move into the bundle
and the manifest is replaced (atomically, last) only when every check passed. A failed export leaves
a previous bundle exactly as it was.
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vdm.atomic import remove_stale, writer_prefix
from vdm.bundle import FORMAT, FORMAT_VERSION, MANIFEST_NAME, file_record, network_file, read_bundle, write_manifest
from vdm.checkpoint import file_sha256, load_model
from vdm.config import check_video_shape, to_dict
from vdm.errors import VdmError
from vdm.export.onnx_export import Exporter, ExportShapes, export_onnx
from vdm.export.parity import TOLERANCE, measure_parity, parity_cases
from vdm.machine import software_versions


# The lowest opset each exporter writes a valid UNet in (measured with torch 2.13): the dynamo exporter's
# graphs fail onnx.checker below 18; the TorchScript one needs 14 for scaled_dot_product_attention.
MIN_OPSET = {"dynamo": 18, "torchscript": 14}


def check_options(options: "ExportOptions") -> None:
    """Flag mistakes an export would only hit late (or not at all), before any work."""
    import onnx

    low, high = MIN_OPSET[options.exporter], onnx.defs.onnx_opset_version()
    if not low <= options.opset <= high:
        raise VdmError(f"--opset {options.opset}: the {options.exporter} exporter writes opsets {low}..{high} "
                       f"(this onnx {onnx.__version__}); use one of those")


class ParityError(VdmError):
    """The exported network disagrees with the PyTorch model beyond the documented tolerance."""

    exit_code = 1


@dataclass
class ExportOptions:
    precision: str = "fp32"  # 'fp32' or 'fp16'
    opset: int = 18  # ONNX opset
    batch: int = 1  # sample-input batch (the only batch when static)
    frames: int | None = None  # sample-input frames (default: the model's)
    size: int | None = None  # frame size H = W (default: the model's); fixed in the graph
    static: bool = False  # fix every shape
    max_batch: int = 64  # dynamic-axis limits recorded in the manifest and used for engine profiles
    max_frames: int = 128
    exporter: Exporter = "dynamo"
    external_data: bool | None = None  # None: only when the weights approach protobuf's 2 GB limit


def ort_runner(path: Path):
    """A function feed -> output running the ONNX file on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(["out"], feed)[0]


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise VdmError(f"the exported {path.name} fails onnx.checker: {e}") from None


def export_bundle(checkpoint: Path, out_dir: Path, options: ExportOptions, log=print) -> dict:
    """Export `checkpoint` into the bundle `out_dir`; returns the manifest written."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise VdmError(f"vdm-export needs onnx and onnxruntime: pip install 'vdm[onnx]' ({e.name} missing)") from None
    # Everything that can be wrong with the inputs is found here, before the (slow) export.
    check_options(options)
    model, diffusion_config, metadata = load_model(checkpoint)  # checks the metadata and the weights
    cfg = model.cfg
    frames = cfg.frames if options.frames is None else options.frames
    size = cfg.size if options.size is None else options.size
    shapes = ExportShapes(options.batch, frames, size, size, options.static, options.max_batch, options.max_frames)
    check_video_shape(cfg, shapes.frames, shapes.height, shapes.width)
    if options.batch < 1 or options.batch > options.max_batch or shapes.frames > options.max_frames:
        raise VdmError("--batch/--frames must be within 1..--max-batch/--max-frames")
    sha = file_sha256(checkpoint)
    manifest = merged_manifest(out_dir, sha, checkpoint, metadata, cfg, diffusion_config, log)

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale(out_dir, ".export-*", "export"):
        log(f"removed {stale.name}, left by an interrupted export")
    staging = Path(tempfile.mkdtemp(prefix=writer_prefix("", "export"), dir=out_dir))
    try:
        name = network_file(options.precision)
        onnx_path = staging / name
        log(f"exporting {checkpoint.name} -> {name} ({options.precision}, {options.exporter} exporter)")
        export_onnx(model, onnx_path, shapes, options.precision, options.opset, options.exporter,
                    options.external_data)
        check_onnx(onnx_path)
        log("onnx.checker: ok (full check)")
        cases = parity_cases(model, shapes.batch, shapes.frames, shapes.height, shapes.width)
        parity = measure_parity(model, ort_runner(onnx_path), cases, TOLERANCE[options.precision])
        log(f"parity vs torch fp32 ({parity['cases']} inputs, t={parity['timesteps']}): max abs "
            f"{parity['max_abs_error']:.3g}, rel {parity['rel_error']:.3g} (tolerance "
            f"{parity['tolerance_rel_error']:g}), PSNR {parity['psnr_db']:.1f} dB")
        if not parity["passed"]:
            raise ParityError(f"{options.precision} export is outside the parity tolerance "
                              f"(rel error {parity['rel_error']:.3g} > {parity['tolerance_rel_error']:g}); "
                              f"nothing was written to {out_dir}")
        manifest["networks"][options.precision] = network_entry(model, onnx_path, shapes, options, parity)
        for produced in staging.iterdir():
            os.replace(produced, out_dir / produced.name)
        write_manifest(out_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def group_norm_form(options: ExportOptions) -> str:
    """How the exported network writes its GroupNorms (vdm.export.onnx_export), as the manifest says it."""
    from vdm.export.onnx_export import channel_statistics_for

    return "channel statistics" if channel_statistics_for(options.precision, options.exporter) else "reshaped"


def network_entry(model, onnx_path: Path, shapes: ExportShapes, options: ExportOptions, parity: dict) -> dict:
    from vdm.export.onnx_export import io_spec

    inputs, outputs = io_spec(model, shapes)
    data = onnx_path.with_name(onnx_path.name + ".data")
    needed = [onnx_path] + ([data] if data.exists() else [])
    return {
        "file": onnx_path.name,
        "external_data": data.name if data.exists() else None,
        "files": {path.name: file_record(path) for path in needed},  # checked at every load
        "precision": options.precision,
        "opset": options.opset,
        "exporter": options.exporter,
        "group_norm": group_norm_form(options),
        "inputs": inputs,
        "outputs": outputs,
        "shapes": {"static": shapes.static, "height": shapes.height, "width": shapes.width,
                   "batch": shapes.axis("batch"), "frames": shapes.axis("frames"),
                   "frames_multiple_of": model.cfg.temporal_factor},
        "parity": parity,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": software_versions(("onnx", "onnxruntime", "onnxscript")),
    }


def merged_manifest(out_dir: Path, sha: str, checkpoint: Path, metadata: dict, cfg, diffusion_config,
                    log=print) -> dict:
    """The bundle's manifest so far when it came from the same checkpoint; else a fresh one. A
    damaged or outdated manifest is replaced (exporting again is how a bundle is repaired)."""
    fresh = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": to_dict(cfg),
        "diffusion_config": to_dict(diffusion_config),
        "source": {"checkpoint": checkpoint.name, "sha256": sha, "step": int(metadata.get("step", 0))},
        "networks": {},
    }
    if not (out_dir / MANIFEST_NAME).exists():
        return fresh
    try:
        previous = read_bundle(out_dir).manifest
    except VdmError as e:
        log(f"the bundle's manifest will be replaced: {e}")
        return fresh
    if previous.get("source", {}).get("sha256") != sha:
        return fresh  # another checkpoint's networks must not stay listed
    previous["networks"] = {p: e for p, e in previous["networks"].items() if (out_dir / e["file"]).exists()}
    return previous


def cached_bundle(checkpoint: Path, bundle_dir: Path, log=print) -> Path:
    """A bundle for `checkpoint` in `bundle_dir`, exported on first use and reused while the checkpoint
    is unchanged and its network is in the form this vdm exports (an older, slower form is replaced)."""
    options = ExportOptions()
    try:
        bundle = read_bundle(bundle_dir)
        if bundle.manifest["source"]["sha256"] == file_sha256(checkpoint) and "fp32" in bundle.networks:
            bundle.file("fp32")  # a damaged cached network is exported again, not reported
            if bundle.networks["fp32"].get("group_norm") == group_norm_form(options):
                log(f"reusing the exported bundle in {bundle_dir}")
                return bundle_dir
            log(f"the bundle in {bundle_dir} was exported by an older vdm: exporting it again")
    except VdmError:
        pass
    log(f"first use: exporting {checkpoint.name} to {bundle_dir} (once)")
    export_bundle(checkpoint, bundle_dir, options, log=log)
    return bundle_dir

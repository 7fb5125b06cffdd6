"""TensorRT: profile shapes, compatibility checks and CLI failures on the CPU; real engines on a GPU.

The CPU tests run everywhere (TensorRT is never imported by them). The GPU tests at the end build real
engines from real tiny ONNX exports and skip, saying why, without TensorRT or without CUDA.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import _make_tiny_unet, _tiny_model_config

from vdm.bundle import FORMAT, FORMAT_VERSION, read_bundle
from vdm.checkpoint import load_model, save_checkpoint
from vdm.cli.export import main as export_main
from vdm.cli.run import main as run_main
from vdm.config import DiffusionConfig, to_dict
from vdm.engine import check_engine_compatible, check_engine_shape, require_tensorrt
from vdm.errors import VdmError
from vdm.export import tensorrt_build
from vdm.export.tensorrt_build import EngineOptions, build_engine_for_bundle, profile_shapes
from vdm.runtime.tensorrt_backend import TensorRTBackend

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


def quiet(*_):
    pass


def network_entry(static: bool = False, batch=(1, 2, 64), frames=(1, 4, 128), multiple: int = 1,
                  conditional: bool = False) -> dict:
    """A manifest network entry as vdm-export writes it (x: (B, 3, T, 8, 8), t: (B,), y: (B,))."""
    b = batch[1] if static else "batch"
    f = frames[1] if static else "frames"
    inputs = [{"name": "x", "dtype": "float32", "shape": [b, 3, f, 8, 8]},
              {"name": "t", "dtype": "int64", "shape": [b]}]
    if conditional:
        inputs.append({"name": "y", "dtype": "int64", "shape": [b]})
    return {"file": "unet.onnx", "precision": "fp32", "inputs": inputs, "parity": {"rel_error": 0.0, "passed": True},
            "outputs": [{"name": "out", "dtype": "float32", "shape": [b, 3, f, 8, 8]}],
            "shapes": {"static": static, "height": 8, "width": 8,
                       "batch": dict(zip(("min", "opt", "max"), batch)),
                       "frames": dict(zip(("min", "opt", "max"), frames)), "frames_multiple_of": multiple}}


def trt_info(precision: str = "fp32", version: str = "10.3.0", gpu=H100) -> dict:
    """A manifest `tensorrt` entry: engine for batch 1..4, frames 4, built on an H100."""
    return {"file": "unet.plan", **EMPTY_FILE, "precision": precision, "tensorrt_version": version, "gpu": gpu[0],
            "compute_capability": list(gpu[1]),
            "profile": {"x": {"min": [1, 3, 4, 8, 8], "opt": [2, 3, 4, 8, 8], "max": [4, 3, 4, 8, 8]},
                        "t": {"min": [1], "opt": [2], "max": [4]}}}


EMPTY_FILE = {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}


def write_bundle(root: Path, networks: dict[str, dict]) -> Path:
    """A hand-made bundle directory: the manifest plus an (empty) file for each network, recorded with
    its checksum as vdm-export records it."""
    root.mkdir(parents=True, exist_ok=True)
    networks = {p: entry | {"files": {entry["file"]: EMPTY_FILE}} for p, entry in networks.items()}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_config": to_dict(_tiny_model_config()),
                "diffusion_config": to_dict(DiffusionConfig()),
                "source": {"checkpoint": "tiny.safetensors", "sha256": "0" * 64, "step": 0}, "networks": networks}
    for entry in networks.values():
        (root / entry["file"]).write_bytes(b"")
    (root / "vdm.json").write_text(json.dumps(manifest))
    return root


# --- EngineOptions.from_cli -------------------------------------------------------------------------------

def test_from_cli_parses_batch_x_frames():
    options = EngineOptions.from_cli("1x4", "2X8", " 4x16 ", 2.5)
    assert (options.min_shape, options.opt_shape, options.max_shape) == ((1, 4), (2, 8), (4, 16))
    assert options.workspace_gb == 2.5


def test_from_cli_leaves_unset_shapes_to_the_manifest():
    options = EngineOptions.from_cli(None, None, None, 8.0)
    assert (options.min_shape, options.opt_shape, options.max_shape) == (None, None, None)


@pytest.mark.parametrize("text", ["1x", "x8", "1*8", "0x8", "2x0", "1x8x2", "ax8", "-1x8", ""])
def test_from_cli_refuses_malformed_shapes_naming_the_format(text):
    with pytest.raises(VdmError, match=r"--max-shape .*BATCHxFRAMES"):
        EngineOptions.from_cli(None, None, text, 8.0)


def test_from_cli_refuses_a_non_positive_workspace():
    with pytest.raises(VdmError, match="--workspace-gb"):
        EngineOptions.from_cli(None, None, None, 0.0)


# --- profile_shapes -----------------------------------------------------------------------------------------

def test_dynamic_profile_defaults_cover_guidance_at_the_sample_shape():
    profile = profile_shapes(network_entry(), _tiny_model_config(), EngineOptions())
    # max batch: 4 videos with guidance (8) by default, and at least 2x the optimum batch.
    assert profile == {"x": ((1, 3, 1, 8, 8), (2, 3, 4, 8, 8), (8, 3, 4, 8, 8)), "t": ((1,), (2,), (8,))}


def test_default_max_batch_is_twice_opt_but_capped_at_the_exported_limit():
    profile = profile_shapes(network_entry(batch=(1, 2, 3)), _tiny_model_config(), EngineOptions())
    assert profile["x"][2][0] == 3


def test_default_min_frames_rounds_up_to_the_unets_multiple():
    cfg = _tiny_model_config(temporal_downsample=True)  # frames must be multiples of 2
    profile = profile_shapes(network_entry(multiple=2), cfg, EngineOptions())
    assert profile["x"][0] == (1, 3, 2, 8, 8)


def test_cli_overrides_set_full_input_shapes():
    options = EngineOptions(min_shape=(1, 4), opt_shape=(2, 8), max_shape=(6, 16))
    profile = profile_shapes(network_entry(), _tiny_model_config(), options)
    assert profile["x"] == ((1, 3, 4, 8, 8), (2, 3, 8, 8, 8), (6, 3, 16, 8, 8))
    assert profile["t"] == ((1,), (2,), (6,))


def test_default_max_follows_an_overridden_opt():
    profile = profile_shapes(network_entry(), _tiny_model_config(), EngineOptions(opt_shape=(5, 8)))
    assert profile["x"][2] == (10, 3, 8, 8, 8)


def test_conditional_profile_gives_y_the_batch_axis_of_t():
    cfg = _tiny_model_config(num_classes=3)
    profile = profile_shapes(network_entry(conditional=True), cfg, EngineOptions())
    assert profile["y"] == profile["t"] == ((1,), (2,), (8,))


def test_static_bundle_forces_min_opt_max_to_its_shape():
    entry = network_entry(static=True, batch=(2, 2, 2), frames=(4, 4, 4))
    profile = profile_shapes(entry, _tiny_model_config(), EngineOptions(opt_shape=(2, 4)))
    assert profile == {"x": ((2, 3, 4, 8, 8),) * 3, "t": ((2,),) * 3}


def test_static_bundle_refuses_another_shape():
    entry = network_entry(static=True, batch=(2, 2, 2), frames=(4, 4, 4))
    with pytest.raises(VdmError, match="static shape 2x4.*without --static"):
        profile_shapes(entry, _tiny_model_config(), EngineOptions(max_shape=(4, 4)))


@pytest.mark.parametrize("options, message", [
    (EngineOptions(max_shape=(100, 4)), r"batch 1\.\.100 is outside the 1\.\.64.*--max-batch 100"),
    (EngineOptions(max_shape=(2, 256)), r"frames 1\.\.256 is outside the 1\.\.128.*--max-frames 256"),
    (EngineOptions(min_shape=(4, 4)), r"batch: need min <= opt <= max, got 4, 2, 8"),
    (EngineOptions(opt_shape=(2, 8), max_shape=(4, 4)), r"frames: need min <= opt <= max, got 1, 8, 4"),
])
def test_profile_out_of_order_or_beyond_the_export_is_refused(options, message):
    with pytest.raises(VdmError, match=message):
        profile_shapes(network_entry(), _tiny_model_config(), options)


def test_profile_frames_must_be_multiples_of_the_unets_factor():
    cfg = _tiny_model_config(temporal_downsample=True)
    with pytest.raises(VdmError, match="multiple of 2"):
        profile_shapes(network_entry(multiple=2), cfg, EngineOptions(max_shape=(4, 5)))


# --- check_engine_compatible ------------------------------------------------------------------------------

def test_engine_from_this_tensorrt_and_gpu_is_accepted():
    assert check_engine_compatible(trt_info(), "10.3.0", *H100) is None


def test_engine_from_another_tensorrt_version_is_refused_with_the_rebuild_command():
    with pytest.raises(VdmError, match=r"TensorRT 10\.3\.0, this is TensorRT 10\.8\.0.*vdm-export CHECKPOINT "
                                       r"--out DIR --tensorrt --fp16`"):
        check_engine_compatible(trt_info("fp16"), "10.8.0", *H100)


@pytest.mark.parametrize("gpu", [("NVIDIA A100-SXM4-80GB", (8, 0)), ("NVIDIA H100 PCIe", (9, 0))])
def test_engine_from_another_gpu_is_refused(gpu):
    with pytest.raises(VdmError, match=rf"built on NVIDIA H100 80GB HBM3.*this GPU is {gpu[0]}.*--tensorrt`"):
        check_engine_compatible(trt_info(), "10.3.0", *gpu)


def test_incomplete_tensorrt_entry_asks_for_a_rebuild():
    info = trt_info()
    del info["gpu"]
    with pytest.raises(VdmError, match="incomplete; rebuild"):
        check_engine_compatible(info, "10.3.0", *H100)


def test_engine_shape_outside_the_profile_names_the_flag_to_rebuild_with():
    check_engine_shape(trt_info(), 4, 4)  # inside: no error
    with pytest.raises(VdmError, match=r"batch=8 \(2 x the samples when guided\) is outside .*\(1\.\.4\); "
                                       r"rebuild .*--max-shape 8x4`"):
        check_engine_shape(trt_info(), 8, 4)
    with pytest.raises(VdmError, match=r"frames=2 is outside .*--min-shape 1x2`"):
        check_engine_shape(trt_info(), 1, 2)


# --- require_tensorrt and the CLIs without TensorRT or without an engine -----------------------------------

def test_require_tensorrt_refuses_tensorrt_8(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(VdmError, match=r"TensorRT 8\.6\.1 is installed, vdm needs TensorRT 10"):
        require_tensorrt()


def test_vdm_export_tensorrt_without_tensorrt_exits_2_before_exporting(tmp_path, monkeypatch,
                                                                      save_tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "bundle"
    result = CliRunner().invoke(export_main, [str(checkpoint), "--out", str(out), "--tensorrt"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and result.output.count("\n") == 1
    assert "pip install tensorrt" in result.output and "Traceback" not in result.output
    assert not out.exists()  # failed before the ONNX export wrote anything


def run_tensorrt(bundle: Path, tmp_path: Path, *args: str):
    return CliRunner().invoke(run_main, [str(bundle), "--backend", "tensorrt", "--steps", "2", "-n", "1",
                                         "--out", str(tmp_path / "videos"), *args])


def test_vdm_run_tensorrt_on_a_bundle_without_an_engine_exits_2_saying_how_to_build_it(tmp_path):
    bundle = write_bundle(tmp_path / "bundle", {"fp32": network_entry()})
    result = run_tensorrt(bundle, tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"bundle {bundle} has no TensorRT engine" in result.output
    assert f"`vdm-export CHECKPOINT --out {bundle} --tensorrt`" in result.output
    assert not (tmp_path / "videos").exists()


@pytest.mark.parametrize("args, message", [
    (["--precision", "fp16"], "has no fp16 network"),
    (["--precision", "bf16"], "the tensorrt backend computes fp32 or fp16 on cuda, not bf16"),
    (["--cuda-graph"], "--cuda-graph needs a bundle with static shapes"),
    (["--device", "cpu"], "the tensorrt backend runs on an NVIDIA GPU (--device cuda), not on the CPU"),
])
def test_vdm_run_tensorrt_checks_flags_before_touching_the_gpu(tmp_path, args, message):
    entry = network_entry() | {"tensorrt": trt_info()}
    bundle = write_bundle(tmp_path / "bundle", {"fp32": entry})
    result = run_tensorrt(bundle, tmp_path, *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_explicit_precision_without_its_engine_names_that_precision(tmp_path):
    networks = {"fp32": network_entry() | {"tensorrt": trt_info()},
                "fp16": network_entry() | {"file": "unet.fp16.onnx", "precision": "fp16"}}
    bundle = write_bundle(tmp_path / "bundle", networks)
    with pytest.raises(VdmError, match=r"no fp16 TensorRT engine.*--tensorrt --fp16`"):
        TensorRTBackend.load(bundle, precision="fp16")  # refused before any GPU is looked for


# --- build_engine_for_bundle's bookkeeping (TensorRT itself replaced) --------------------------------------

def test_build_for_bundle_without_cuda_says_so_before_anything_else(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VdmError, match="needs an NVIDIA GPU"):
        build_engine_for_bundle(tmp_path / "not-even-a-bundle", "fp32", EngineOptions())


def test_build_for_bundle_writes_the_engine_beside_the_onnx_and_records_it(tmp_path, monkeypatch):
    networks = {"fp32": network_entry(),
                "fp16": network_entry() | {"file": "unet.fp16.onnx", "precision": "fp16"}}
    bundle = write_bundle(tmp_path / "bundle", networks)
    calls = []

    def fake_build(onnx_path, engine_path, profile, workspace_gb, timing_cache_path, log):
        calls.append((onnx_path.name, engine_path, profile, workspace_gb, timing_cache_path.name))
        built = {k: v for k, v in trt_info().items() if k != "precision"}  # what build_engine records
        return built | {"file": engine_path.name}

    monkeypatch.setattr(tensorrt_build, "gpu_identity", lambda: H100)
    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build)
    info = build_engine_for_bundle(bundle, "fp16", EngineOptions(max_shape=(8, 4), workspace_gb=2.0), log=quiet)

    assert calls == [("unet.fp16.onnx", bundle / "unet.fp16.plan",
                      {"x": ((1, 3, 1, 8, 8), (2, 3, 4, 8, 8), (8, 3, 4, 8, 8)), "t": ((1,), (2,), (8,))},
                      2.0, "timing.cache")]
    networks = read_bundle(bundle).networks
    assert networks["fp16"]["tensorrt"] == info == trt_info("fp16") | {"file": "unet.fp16.plan"}
    assert "tensorrt" not in networks["fp32"]


# --- GPU: real engines ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed: pip install tensorrt "
                                                 "(TensorRT 10.x, needs an NVIDIA GPU and driver)")
    if not torch.cuda.is_available():
        pytest.skip("the TensorRT engine tests need a CUDA GPU; torch sees none")
    return trt


@pytest.fixture(scope="module")
def engine_bundle(trt_gpu, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, bundle) with fp32 and fp16 ONNX networks, each with a TensorRT engine built here."""
    from vdm.export.pipeline import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("trt")
    checkpoint = root / "tiny.safetensors"
    cfg = _tiny_model_config()
    save_checkpoint(checkpoint, _make_tiny_unet(cfg).state_dict(), cfg, DiffusionConfig())
    bundle = root / "bundle"
    for precision in ("fp32", "fp16"):
        export_bundle(checkpoint, bundle, ExportOptions(precision=precision, batch=2), log=quiet)
        build_engine_for_bundle(bundle, precision, EngineOptions(workspace_gb=1.0), log=quiet)
    return checkpoint, bundle


@pytest.fixture
def exact_fp32_torch(monkeypatch):
    """torch's CUDA convolutions use TF32 by default; the reference must be true fp32, as the engines are."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS error relative to the reference's std: the measure (and tolerances) of the export's parity."""
    return ((out.double() - ref.double()).pow(2).mean().sqrt() / ref.double().std()).item()


@pytest.mark.gpu
def test_engines_are_recorded_with_this_tensorrt_gpu_and_profile(trt_gpu, engine_bundle):
    _, bundle = engine_bundle
    for precision, name in (("fp32", "unet.plan"), ("fp16", "unet.fp16.plan")):
        info = read_bundle(bundle).networks[precision]["tensorrt"]
        assert (bundle / name).stat().st_size > 0 and info["file"] == name
        assert info["tensorrt_version"] == trt_gpu.__version__
        assert tuple(info["compute_capability"]) == torch.cuda.get_device_capability()
        assert info["profile"]["x"]["max"] == [4, 3, 4, 8, 8]  # 2 x the exported batch 2, for guidance


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_the_torch_model_at_every_batch_of_the_profile(engine_bundle, exact_fp32_torch, precision):
    from vdm.export.parity import TOLERANCE

    checkpoint, bundle = engine_bundle
    model, _, _ = load_model(checkpoint, "cuda")
    backend = TensorRTBackend.load(bundle, device="cuda", precision=precision)
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 4, 4, 2):  # a new shape re-binds; the same shape reuses the output buffer
        x = torch.randn(batch, 3, 4, 8, 8, generator=generator).cuda()
        t = torch.randint(0, 1000, (batch,), generator=generator).cuda()
        with torch.no_grad():
            ref = model(x, t)
        out = backend.predict(x, t, None).clone()
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert rel_error(out, ref) < TOLERANCE[precision]


@pytest.mark.gpu
def test_vdm_run_tensorrt_generates_what_the_torch_backend_does(engine_bundle, exact_fp32_torch, tmp_path):
    from vdm.runtime.generator import VideoGenerator

    checkpoint, bundle = engine_bundle
    ours = VideoGenerator(bundle, backend="tensorrt", device="cuda", precision="fp32")
    ref = VideoGenerator(checkpoint, backend="torch", device="cuda", precision="fp32")
    ours, ref = (gen.generate(2, num_steps=4, seed=0) for gen in (ours, ref))
    assert rel_error(ours, ref) < 1e-3
    result = run_tensorrt(bundle, tmp_path, "--device", "cuda", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert "backend: tensorrt" in result.output and (tmp_path / "videos" / "sample_000.mp4").is_file()


@pytest.mark.gpu
def test_cuda_graph_replay_matches_plain_enqueue(trt_gpu, engine_bundle, tmp_path):
    from vdm.export.pipeline import ExportOptions, export_bundle

    checkpoint, _ = engine_bundle
    bundle = tmp_path / "static"
    export_bundle(checkpoint, bundle, ExportOptions(batch=2, static=True), log=quiet)
    build_engine_for_bundle(bundle, "fp32", EngineOptions(workspace_gb=1.0), log=quiet)
    plain = TensorRTBackend.load(bundle, device="cuda", precision="fp32")
    graphed = TensorRTBackend.load(bundle, device="cuda", precision="fp32", cuda_graph=True)
    for seed in range(3):  # warm-up + capture, then two replays on new inputs
        x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(seed)).cuda()
        t = torch.full((2,), 100 * seed + 1, device="cuda")
        torch.testing.assert_close(graphed.predict(x, t, None).clone(), plain.predict(x, t, None).clone(),
                                   rtol=1e-5, atol=1e-6)
    assert graphed.graph is not None


@pytest.mark.gpu
def test_rebuilding_reuses_the_bundles_timing_cache(engine_bundle):
    _, bundle = engine_bundle
    lines = []
    build_engine_for_bundle(bundle, "fp32", EngineOptions(workspace_gb=1.0), log=lines.append)
    assert any(line.startswith("reusing the timing cache timing.cache") for line in lines), lines


@pytest.mark.gpu
def test_engine_from_another_tensorrt_is_refused_before_deserializing(engine_bundle, tmp_path):
    _, bundle = engine_bundle
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "vdm.json").read_text())
    manifest["networks"]["fp32"]["tensorrt"]["tensorrt_version"] = "9.9.9"
    (copy / "vdm.json").write_text(json.dumps(manifest))
    (copy / "unet.plan").write_bytes(b"not an engine")  # would fail differently if it were deserialized
    with pytest.raises(VdmError, match=r"built with TensorRT 9\.9\.9"):
        TensorRTBackend.load(copy, device="cuda", precision="fp32")

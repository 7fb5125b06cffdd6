"""The onnxruntime backend: same videos as the torch backend from the same seed, and clear errors."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vdm.errors import VdmError
from vdm.runtime import VideoGenerator
from vdm.bundle import read_bundle
from vdm.cli.run import main as run_main
from vdm.runtime.onnxruntime_backend import OnnxRuntimeBackend, import_onnxruntime, providers_for
from vdm.video import read_video


def psnr(a, b, peak: float = 2.0) -> float:
    """PSNR of two videos in [-1, 1] (peak-to-peak 2); 200 dB for identical ones."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 200.0 if mse == 0 else 10 * math.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def torch_videos(tiny_bundle_checkpoint):
    return VideoGenerator(tiny_bundle_checkpoint, backend="torch", device="cpu").generate(
        2, num_steps=5, seed=3).numpy()


@pytest.mark.parametrize("precision, min_db", [("fp32", 40.0), ("fp16", 30.0)])
def test_onnxruntime_videos_match_torch_from_the_same_seed(tiny_bundle, torch_videos, precision, min_db):
    videos = VideoGenerator(tiny_bundle, backend="onnxruntime", device="cpu", precision=precision).generate(
        2, num_steps=5, seed=3)
    assert videos.shape == torch_videos.shape
    assert psnr(videos, torch_videos) >= min_db


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++2m", "dpm++2m-sde", "unipc"])
def test_every_sampler_gives_torchs_videos_from_the_same_seed(tiny_bundle, tiny_bundle_checkpoint, sampler):
    args = dict(num_samples=1, num_steps=6, sampler=sampler, seed=11)
    ref = VideoGenerator(tiny_bundle_checkpoint, backend="torch", device="cpu").generate(**args)
    out = VideoGenerator(tiny_bundle, backend="onnxruntime", device="cpu").generate(**args)
    assert psnr(out, ref) >= 40.0


def test_predict_writes_into_a_fresh_tensor_each_call(tiny_bundle):
    backend = OnnxRuntimeBackend.load(tiny_bundle, device="cpu")
    x = torch.randn(2, 3, 4, 8, 8)
    a = backend.predict(x, torch.tensor([10, 10]), None)
    b = backend.predict(x, torch.tensor([900, 900]), None)
    assert a.data_ptr() != b.data_ptr() and not torch.equal(a, b)


def test_auto_precision_on_cpu_picks_fp32(tiny_bundle):
    assert OnnxRuntimeBackend.load(tiny_bundle, device="cpu").precision == "fp32"


def test_class_guidance_runs_through_one_batched_call(tmp_path, save_tiny_checkpoint):
    from conftest import _tiny_model_config, quiet
    from vdm.export.pipeline import ExportOptions, export_bundle

    ckpt = save_tiny_checkpoint(tmp_path / "c.safetensors", _tiny_model_config(num_classes=3))
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    args = dict(num_samples=2, num_steps=3, seed=0, class_label=1, guidance=3.0)
    ref = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32").generate(**args)
    gen = VideoGenerator(tmp_path / "b", backend="onnxruntime", device="cpu")
    calls = []
    predict = gen.backend.predict
    gen.backend.predict = lambda x, t, y: calls.append(x.shape[0]) or predict(x, t, y)
    out = gen.generate(**args)
    assert calls == [4, 4, 4]  # conditional and null-class halves together
    assert psnr(out, ref) >= 40.0


def test_cli_runs_both_backends_to_the_same_mp4s(tmp_path, tiny_bundle, tiny_bundle_checkpoint):
    common = ["--steps", "3", "-n", "2", "--seed", "5", "--device", "cpu"]
    for name, model in (("torch", tiny_bundle_checkpoint), ("onnxruntime", tiny_bundle)):
        result = CliRunner().invoke(run_main, [str(model), "--backend", name, "--out", str(tmp_path / name), *common])
        assert result.exit_code == 0, result.output
        assert "ms per step" in result.output
    for i in range(2):
        a = read_video(tmp_path / "torch" / f"sample_{i:03d}.mp4")
        b = read_video(tmp_path / "onnxruntime" / f"sample_{i:03d}.mp4")
        assert a.shape == b.shape == (4, 8, 8, 3)
        assert psnr(a / 127.5 - 1, b / 127.5 - 1) >= 40.0
    assert (tmp_path / "onnxruntime" / "grid.gif").is_file()


def run_cli(*args):
    return CliRunner().invoke(run_main, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def test_missing_onnx_file_is_a_clear_error(bundle_copy):
    (bundle_copy / "unet.onnx").unlink()
    assert_one_line_error(run_cli(bundle_copy, "--backend", "onnxruntime", "--precision", "fp32"),
                          "unet.onnx is missing")


def test_corrupt_onnx_file_is_a_clear_error(bundle_copy):
    (bundle_copy / "unet.onnx").write_bytes(b"\x08garbage" * 100)
    assert_one_line_error(run_cli(bundle_copy, "--backend", "onnxruntime", "--precision", "fp32"),
                          "unet.onnx is not the file its manifest describes", "vdm-export CHECKPOINT --out")


def test_an_onnx_file_onnxruntime_cannot_load_is_a_clear_error_even_with_a_matching_checksum(bundle_copy):
    from vdm.bundle import file_record

    (bundle_copy / "unet.onnx").write_bytes(b"\x08garbage" * 100)
    manifest = json.loads((bundle_copy / "vdm.json").read_text())
    manifest["networks"]["fp32"]["files"]["unet.onnx"] = file_record(bundle_copy / "unet.onnx")
    (bundle_copy / "vdm.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli(bundle_copy, "--backend", "onnxruntime", "--precision", "fp32"),
                          "cannot load", "unet.onnx")


def test_manifest_from_another_version_is_a_clear_error(bundle_copy):
    manifest = json.loads((bundle_copy / "vdm.json").read_text())
    manifest["format_version"] = 0
    (bundle_copy / "vdm.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli(bundle_copy, "--backend", "onnxruntime"), "re-export")


def test_manifest_that_does_not_match_the_model_is_a_clear_error(bundle_copy):
    manifest = json.loads((bundle_copy / "vdm.json").read_text())
    manifest["model_config"]["num_classes"] = 5  # the network has no class input
    for net in manifest["networks"].values():
        net["inputs"].append({"name": "y", "dtype": "int64", "shape": ["batch"]})
    (bundle_copy / "vdm.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli(bundle_copy, "--backend", "onnxruntime"), "re-export")


@pytest.mark.parametrize("args, fragment", [
    (["--size", "16"], "exported for 8x8"),
    (["--frames", "500"], "--max-frames 500"),
    (["--num-samples", "100"], "batch=100"),
    (["--precision", "bf16"], "fp32 or fp16"),
])
def test_shapes_or_precisions_the_bundle_cannot_take_are_clear_errors(tiny_bundle, args, fragment):
    assert_one_line_error(run_cli(tiny_bundle, "--backend", "onnxruntime", *args), fragment)


def test_a_checkpoint_is_not_a_bundle(tiny_bundle_checkpoint):
    assert_one_line_error(run_cli(tiny_bundle_checkpoint, "--backend", "onnxruntime"), "bundle directory")


def test_cuda_without_onnxruntime_gpu_says_what_to_install(tiny_bundle):
    ort = import_onnxruntime()
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(VdmError, match="pip install onnxruntime-gpu"):
        providers_for(ort, torch.device("cuda"), None, read_bundle(tiny_bundle), "fp32", False)


def test_cuda_device_without_a_gpu_is_a_clear_error(tiny_bundle):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_one_line_error(run_cli(tiny_bundle, "--backend", "onnxruntime", "--device", "cuda"), "--device")


def test_debug_shows_the_traceback(bundle_copy):
    (bundle_copy / "unet.onnx").unlink()
    result = run_cli(bundle_copy, "--backend", "onnxruntime", "--precision", "fp32", "--debug")
    assert result.exit_code != 0 and isinstance(result.exception, VdmError)

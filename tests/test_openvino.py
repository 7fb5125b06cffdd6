"""Specification of the OpenVINO backend (vdm.runtime.openvino_backend) on tiny exported bundles.

Each bundle is exported once per module (TorchScript exporter, ~2 s); every OpenVINO backend here
runs on one thread, like the rest of the suite.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

ov = pytest.importorskip("openvino", reason="the openvino backend needs openvino: pip install 'vdm[openvino]'")
pytest.importorskip("onnxruntime", reason="making a bundle (vdm-export) needs onnx and onnxruntime")

from click.testing import CliRunner  # noqa: E402
from conftest import _make_tiny_unet, _tiny_model_config  # noqa: E402

from vdm.checkpoint import save_checkpoint  # noqa: E402
from vdm.config import DiffusionConfig  # noqa: E402
from vdm.errors import VdmError  # noqa: E402
from vdm.export.pipeline import ExportOptions, export_bundle  # noqa: E402
from vdm.runtime.backend import load_backend  # noqa: E402
from vdm.cli.run import main as run_main  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402
from vdm.runtime.openvino_backend import CACHE_NAME, OpenVINOBackend, choose_precision  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(4.0 / mse)).item()


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).norm() / ref.norm()).item()


def export(tmp_path_factory, name: str, **config) -> tuple[Path, Path, torch.nn.Module]:
    """(checkpoint, bundle, model): a perturbed tiny model (non-zero output), saved and exported."""
    folder = tmp_path_factory.mktemp(name)
    cfg = _tiny_model_config(**config)
    model = _make_tiny_unet(cfg)
    checkpoint = folder / f"{name}.safetensors"
    save_checkpoint(checkpoint, model.state_dict(), cfg, DiffusionConfig())
    export_bundle(checkpoint, folder / "bundle", ExportOptions(exporter="torchscript"), log=lambda *_: None)
    return checkpoint, folder / "bundle", model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return export(tmp_path_factory, "tiny")


@pytest.fixture(scope="module")
def tiny_conditional(tmp_path_factory):
    return export(tmp_path_factory, "tiny_conditional", num_classes=3)


@pytest.fixture(scope="module")
def backend(tiny) -> OpenVINOBackend:
    return load_backend("openvino", tiny[1], device="cpu", precision="fp32", threads=1)


@pytest.fixture(scope="module")
def conditional_backend(tiny_conditional) -> OpenVINOBackend:
    return load_backend("openvino", tiny_conditional[1], device="cpu", precision="fp32", threads=1)


# ---------------------------------------------------------------------------------------------
# Numerics


@pytest.mark.parametrize("batch, frames", [(1, 4), (3, 8)])  # the dynamic axes: one compiled model
@pytest.mark.parametrize("timestep", [10, 990])
def test_fp32_predict_matches_torch(tiny, backend, batch, frames, timestep):
    _, _, model = tiny
    x = torch.randn(batch, 3, frames, 8, 8, generator=torch.Generator().manual_seed(batch))
    t = torch.full((batch,), timestep)
    with torch.no_grad():
        ref = model(x, t)
    out = backend.predict(x, t, None)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert rel_error(out, ref) < 1e-4


def test_predict_returns_a_tensor_openvino_never_writes_again(backend):
    x = torch.randn(2, 3, 4, 8, 8)
    t = torch.tensor([100, 700])
    first = backend.predict(x, t, None)
    kept = first.clone()
    backend.predict(-x, t, None)
    assert torch.equal(first, kept)


def test_generated_videos_match_the_torch_backend(tiny):
    checkpoint, bundle, _ = tiny
    reference = VideoGenerator(checkpoint, backend="torch", device="cpu", precision="fp32").generate(
        2, num_steps=3, seed=0)
    # fp32 asked for: auto computes bf16 on CPUs with bf16 units (avx512_bf16, AMX)
    videos = VideoGenerator(bundle, backend="openvino", device="cpu", precision="fp32", threads=1).generate(
        2, num_steps=3, seed=0)
    assert psnr(videos, reference) >= 40


@pytest.mark.slow  # bf16 is emulated (or, as OpenVINO does here, ignored) on CPUs without bf16 units
def test_bf16_requested_runs_close_to_fp32(tiny):
    checkpoint, bundle, _ = tiny
    reference = VideoGenerator(checkpoint, backend="torch", device="cpu", precision="fp32").generate(
        2, num_steps=3, seed=0)
    generator = VideoGenerator(bundle, backend="openvino", device="cpu", precision="bf16", threads=1)
    assert generator.backend.requested_precision == "bf16"
    assert generator.backend.precision in ("bf16", "fp32")  # what OpenVINO actually computes on this CPU
    assert psnr(generator.generate(2, num_steps=3, seed=0), reference) >= 25


# ---------------------------------------------------------------------------------------------
# Class-conditional models


@pytest.mark.parametrize("label", [2, None])  # None: the null class, as for classifier-free guidance
def test_conditional_predict_matches_torch(tiny_conditional, conditional_backend, label):
    model = tiny_conditional[2]
    x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([50, 600])
    y = None if label is None else torch.full((2,), label)
    with torch.no_grad():
        ref = model(x, t, y)
    assert rel_error(conditional_backend.predict(x, t, y), ref) < 1e-4


def test_conditional_label_changes_the_prediction(conditional_backend):
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([500])
    with_label = conditional_backend.predict(x, t, torch.tensor([0]))
    assert not torch.allclose(with_label, conditional_backend.predict(x, t, None))


# ---------------------------------------------------------------------------------------------
# Loading: cache, precision choice, refusals


def test_compiled_model_is_cached_in_the_bundle_and_reused(tiny, tmp_path):
    bundle = shutil.copytree(tiny[1], tmp_path / "bundle", ignore=shutil.ignore_patterns(CACHE_NAME))
    first = load_backend("openvino", bundle, device="cpu", precision="fp32", threads=1)
    assert "compiled, cached" in first.describe()
    assert any((bundle / CACHE_NAME).glob("*/*.blob"))
    second = load_backend("openvino", bundle, device="cpu", precision="fp32", threads=1)
    assert "loaded from the cache" in second.describe()


def test_each_network_file_content_has_a_cache_of_its_own(tiny, tmp_path):
    # OpenVINO keys its cache on the model's path: a network re-exported there must not load the old blob.
    bundle = Path(shutil.copytree(tiny[1], tmp_path / "bundle", ignore=shutil.ignore_patterns(CACHE_NAME)))
    load_backend("openvino", bundle, device="cpu", precision="fp32", threads=1)
    sha = json.loads((bundle / "vdm.json").read_text())["networks"]["fp32"]["files"]["unet.onnx"]["sha256"]
    assert [p.name for p in (bundle / CACHE_NAME).iterdir()] == [f"fp32-{sha[:16]}"]


@pytest.mark.parametrize("flags, expected", [({"avx2"}, "fp32"), ({"avx2", "avx512_bf16"}, "bf16"),
                                             ({"amx_bf16", "amx_tile"}, "bf16")])
def test_auto_precision_is_bf16_only_with_bf16_units(flags, expected):
    precision, why = choose_precision("auto", {"FP32", "BF16"}, flags)
    assert precision == expected and why.startswith("auto:")


def test_describe_says_the_precision_and_why(backend):
    assert backend.describe().startswith("openvino CPU (fp32, 1 thread; fp32 requested;")


def test_cuda_device_is_refused(tiny):
    with pytest.raises(VdmError, match=r"the openvino backend runs on the CPU \(--device cpu\), not on an NVIDIA GPU"):
        load_backend("openvino", tiny[1], device="cuda")


@pytest.mark.skipif("FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
                    reason="this CPU computes f16 in OpenVINO (AMX-FP16)")
def test_fp16_is_refused_where_openvino_has_no_f16(tiny):
    with pytest.raises(VdmError, match="cannot compute fp16 on this CPU"):
        load_backend("openvino", tiny[1], device="cpu", precision="fp16")


def test_a_checkpoint_instead_of_a_bundle_is_refused(tiny):
    with pytest.raises(VdmError, match="takes a bundle directory"):
        load_backend("openvino", tiny[0], device="cpu")


# ---------------------------------------------------------------------------------------------
# vdm-run


def test_vdm_run_writes_a_video(tiny, tmp_path):
    result = CliRunner().invoke(run_main, [str(tiny[1]), "--backend", "openvino", "--steps", "2", "-n", "1",
                                           "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "backend: openvino CPU" in result.output
    assert (tmp_path / "out" / "sample_000.mp4").stat().st_size > 0

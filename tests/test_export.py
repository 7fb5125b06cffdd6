"""vdm-export: checkpoint -> bundle (ONNX fp32/fp16, manifest, checker, parity), and its failure modes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import _tiny_model_config, quiet

from vdm.checkpoint import file_sha256, load_model
from vdm.errors import VdmError
from vdm.export import pipeline
from vdm.cli.export import main as export_main
from vdm.export.pipeline import ExportOptions, ParityError, export_bundle
from vdm.bundle import read_bundle


def test_bundle_lists_both_precisions_with_their_files(tiny_bundle):
    manifest = json.loads((tiny_bundle / "vdm.json").read_text())
    assert set(manifest["networks"]) == {"fp32", "fp16"}
    assert (tiny_bundle / "unet.onnx").is_file() and (tiny_bundle / "unet.fp16.onnx").is_file()


def test_manifest_records_source_configs_and_versions(tiny_bundle, tiny_bundle_checkpoint):
    manifest = json.loads((tiny_bundle / "vdm.json").read_text())
    assert manifest["source"] == {"checkpoint": tiny_bundle_checkpoint.name,
                                  "sha256": file_sha256(tiny_bundle_checkpoint), "step": 7}
    assert manifest["model_config"]["base_channels"] == 8
    assert manifest["diffusion_config"]["prediction"] == "v"
    versions = manifest["networks"]["fp32"]["versions"]
    assert versions["torch"] == torch.__version__ and versions["onnx"] == onnx.__version__


def test_manifest_declares_dynamic_batch_and_frames(tiny_bundle):
    net = read_bundle(tiny_bundle).network("fp32")
    assert net["inputs"][0] == {"name": "x", "dtype": "float32", "shape": ["batch", 3, "frames", 8, 8]}
    assert net["shapes"]["batch"] == {"min": 1, "opt": 2, "max": 64}
    graph_input = onnx.load(str(tiny_bundle / "unet.onnx")).graph.input[0]
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims[1:] == [3, dims[2], 8, 8] and isinstance(dims[0], str) and isinstance(dims[2], str)


@pytest.mark.parametrize("precision, min_psnr", [("fp32", 100.0), ("fp16", 50.0)])
def test_parity_is_measured_and_within_tolerance(tiny_bundle, precision, min_psnr):
    parity = read_bundle(tiny_bundle).network(precision)["parity"]
    assert parity["passed"] and parity["cases"] == 3
    assert parity["rel_error"] <= parity["tolerance_rel_error"]
    assert parity["psnr_db"] >= min_psnr


def test_fp16_network_has_float16_weights_and_float32_io(tiny_bundle):
    model = onnx.load(str(tiny_bundle / "unet.fp16.onnx"))
    weight_types = {init.data_type for init in model.graph.initializer if len(init.dims) == 5}
    assert weight_types == {onnx.TensorProto.FLOAT16}  # every Conv3d kernel
    io_types = {v.type.tensor_type.elem_type for v in [model.graph.input[0], model.graph.output[0]]}
    assert io_types == {onnx.TensorProto.FLOAT}


def test_fp16_keeps_normalization_and_softmax_in_float32(tiny_bundle):
    model = onnx.load(str(tiny_bundle / "unet.fp16.onnx"))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    fragile = [n for n in model.graph.node if n.op_type in ("Softmax", "InstanceNormalization", "GroupNormalization")]
    assert fragile, "expected normalization and softmax nodes"
    for node in fragile:
        assert types.get(node.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, node.name


def test_the_fp32_network_writes_groupnorm_as_channel_statistics_and_fp16_keeps_it(tiny_bundle):
    ops = {precision: {n.op_type for n in onnx.load(str(tiny_bundle / name)).graph.node}
           for precision, name in (("fp32", "unet.onnx"), ("fp16", "unet.fp16.onnx"))}
    assert {"ReduceMean", "ReduceL2"} <= ops["fp32"] and "InstanceNormalization" not in ops["fp32"]
    assert "InstanceNormalization" in ops["fp16"] and "ReduceL2" not in ops["fp16"]
    networks = read_bundle(tiny_bundle).networks
    assert networks["fp32"]["group_norm"] == "channel statistics" and networks["fp16"]["group_norm"] == "reshaped"
    assert networks["fp32"]["parity"]["passed"]


def test_exported_network_takes_other_batch_and_frames(tiny_bundle):
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_bundle / "unet.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 6, 8, 8)).astype(np.float32)
    out = session.run(None, {"x": x, "t": np.array([1, 2, 3], dtype=np.int64)})[0]
    assert out.shape == x.shape


def test_static_export_fixes_every_shape(tmp_path, tiny_bundle_checkpoint):
    export_bundle(tiny_bundle_checkpoint, tmp_path / "b", ExportOptions(static=True, batch=2, frames=4,
                                                             exporter="torchscript"), log=quiet)
    net = read_bundle(tmp_path / "b").network("fp32")
    assert net["inputs"][0]["shape"] == [2, 3, 4, 8, 8]
    assert net["group_norm"] == "reshaped"  # the TorchScript exporter's form
    assert net["shapes"]["batch"] == {"min": 2, "opt": 2, "max": 2}


def test_conditional_model_exports_a_class_input(tmp_path, save_tiny_checkpoint):
    ckpt = save_tiny_checkpoint(tmp_path / "c.safetensors", _tiny_model_config(num_classes=3))
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    net = read_bundle(tmp_path / "b").network("fp32")
    assert [i["name"] for i in net["inputs"]] == ["x", "t", "y"]
    assert net["parity"]["passed"]


@pytest.mark.parametrize("label_embedding", ["shared", "shared_count"])
def test_a_shared_label_embedding_exports_and_runs_each_label_in_onnxruntime(tmp_path, save_tiny_checkpoint,
                                                                           label_embedding):
    import onnxruntime as ort

    config = _tiny_model_config(num_classes=728, class_label="shapes", label_embedding=label_embedding)
    ckpt = save_tiny_checkpoint(tmp_path / "s.safetensors", config)
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    assert read_bundle(tmp_path / "b").network("fp32")["parity"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "b" / "unet.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 8, 8)).astype(np.float32)
    t, y = np.array([1, 700], dtype=np.int64), np.array([18, 728], dtype=np.int64)  # a two-shape label, the null
    model, _, _ = load_model(ckpt)
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x, "t": t, "y": y})[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention", [dict(joint_attention_levels=(1,)), dict(temporal_attention_levels=(0, 1)),
                                       dict(motion_align_levels=(0,))], ids=["joint", "temporal", "motion"])
def test_attention_variants_export_with_parity_and_dynamic_frames(tmp_path, save_tiny_checkpoint, attention):
    import onnxruntime as ort

    ckpt = save_tiny_checkpoint(tmp_path / "j.safetensors", _tiny_model_config(**attention))
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    assert read_bundle(tmp_path / "b").network("fp32")["parity"]["passed"]
    session = ort.InferenceSession(str(tmp_path / "b" / "unet.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8, 8)).astype(np.float32)  # T=6: not the traced length
    t = np.array([1, 700], dtype=np.int64)
    model, _, _ = load_model(ckpt)
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x, "t": t})[0], expected, rtol=1e-4, atol=1e-4)


def test_external_data_bundle_stays_loadable_after_moving(tmp_path, tiny_bundle_checkpoint):
    import onnxruntime as ort

    options = ExportOptions(external_data=True, exporter="torchscript")
    export_bundle(tiny_bundle_checkpoint, tmp_path / "b", options, log=quiet)
    assert read_bundle(tmp_path / "b").network("fp32")["external_data"] == "unet.onnx.data"
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.move(tmp_path / "b", moved)
    onnx.checker.check_model(str(moved / "unet.onnx"), full_check=True)
    session = ort.InferenceSession(str(moved / "unet.onnx"), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 3, 4, 8, 8), np.float32)
    assert session.run(None, {"x": x, "t": np.array([5])})[0].shape == x.shape


def test_parity_failure_exits_nonzero_and_keeps_the_previous_bundle(tmp_path, tiny_bundle_checkpoint,
                                                                     monkeypatch):
    out = tmp_path / "b"
    export_bundle(tiny_bundle_checkpoint, out, ExportOptions(exporter="torchscript"), log=quiet)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setitem(pipeline.TOLERANCE, "fp32", 0.0)  # any error at all now fails
    with pytest.raises(ParityError, match="outside the parity tolerance"):
        export_bundle(tiny_bundle_checkpoint, out, ExportOptions(exporter="torchscript"), log=quiet)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_of_another_checkpoint_replaces_the_manifest(tmp_path, tiny_bundle_checkpoint, save_tiny_checkpoint):
    out = tmp_path / "b"
    export_bundle(tiny_bundle_checkpoint, out, ExportOptions(exporter="torchscript"), log=quiet)
    other = save_tiny_checkpoint(tmp_path / "other.safetensors", seed=1)
    manifest = export_bundle(other, out, ExportOptions(exporter="torchscript"), log=quiet)
    assert manifest["source"]["sha256"] == file_sha256(other)
    assert set(manifest["networks"]) == {"fp32"}


def test_cli_exports_and_prints_parity(tmp_path, tiny_bundle_checkpoint):
    result = CliRunner().invoke(export_main, [str(tiny_bundle_checkpoint), "--out", str(tmp_path / "b"),
                                              "--exporter", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "parity vs torch fp32" in result.output and "PSNR" in result.output
    assert (tmp_path / "b" / "vdm.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--size", "9"], "height=9 is not a multiple of 2"),
    (["--min-shape", "1x4"], "only apply with --tensorrt"),
    (["--batch", "100"], "--max-batch"),
])
def test_cli_bad_flags_exit_2_with_one_line(tmp_path, tiny_bundle_checkpoint, args, message):
    result = CliRunner().invoke(export_main, [str(tiny_bundle_checkpoint), "--out", str(tmp_path / "b"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "b" / "vdm.json").exists()


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_cli_missing_or_corrupt_checkpoint_exits_2(tmp_path, content):
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(export_main, [str(path), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and result.output.startswith("error:") and str(path) in result.output


def test_read_bundle_refuses_a_manifest_from_another_version(tmp_path, tiny_bundle):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    manifest = json.loads((copy / "vdm.json").read_text())
    manifest["format_version"] = 99
    (copy / "vdm.json").write_text(json.dumps(manifest))
    with pytest.raises(VdmError, match="format 99"):
        read_bundle(copy)


def test_a_shifted_schedule_travels_into_the_bundle_and_its_samplers(tmp_path, save_tiny_checkpoint):
    from vdm.config import DiffusionConfig
    from vdm.runtime.backend import load_backend
    from vdm.runtime.sampling import sampler_for

    ckpt = save_tiny_checkpoint(tmp_path / "s.safetensors", diffusion_config=DiffusionConfig(noise_shift=2.0))
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    assert read_bundle(tmp_path / "b").diffusion_config.noise_shift == 2.0
    plans = [sampler_for(load_backend(name, path, "cpu"), "ddim", 4)
             for name, path in (("torch", ckpt), ("onnxruntime", tmp_path / "b"))]
    plain = sampler_for(load_backend("torch", save_tiny_checkpoint(tmp_path / "p.safetensors"), "cpu"), "ddim", 4)
    assert plans[0].timesteps == plans[1].timesteps == plain.timesteps and plans[0].abars == plans[1].abars
    snr = lambda abar: abar / (1 - abar)  # noqa: E731
    np.testing.assert_allclose(snr(np.array(plans[0].abars[:-1])), snr(np.array(plain.abars[:-1])) / 4, rtol=1e-9)

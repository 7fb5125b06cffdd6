"""INT8 (vdm-export --int8, vdm/int8.py, export/int8.py): calibration on sampling trajectories, a QDQ
network TensorRT's explicit quantization can read, OpenVINO running it, and the quality gate that
publishes only what makes fp32's videos."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("nncf", reason="int8 export needs NNCF: pip install 'vdm[int8]'")
pytest.importorskip("openvino", reason="int8 runs on OpenVINO: pip install 'vdm[openvino]'")
import onnx  # noqa: E402

from vdm.cli.export import main as export_main  # noqa: E402
from vdm.cli.run import main as run_main  # noqa: E402
from vdm.errors import VdmError  # noqa: E402
from vdm.int8 import Int8GateError, Int8Options, export_int8, fallback_plans  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402

SMALL = Int8Options(calibration_videos=2, gate_videos=2)


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, save_tiny_checkpoint) -> tuple[Path, Path, str]:
    """(checkpoint, bundle with fp32 and int8 networks, the export's output), exported once."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = save_tiny_checkpoint(folder / "tiny.safetensors")
    result = invoke(export_main, checkpoint, "--out", folder / "bundle", "--exporter", "torchscript", "--int8",
                    "--calibration-videos", 2)
    assert result.exit_code == 0, result.output
    return checkpoint, folder / "bundle", result.output


def test_the_manifest_records_how_the_int8_network_was_calibrated_and_gated(int8_bundle):
    _, bundle, output = int8_bundle
    entry = json.loads((bundle / "vdm.json").read_text())["networks"]["int8"]
    assert entry["file"] == "unet.int8.onnx" and entry["precision"] == "int8"
    assert entry["calibration"] == {"sampler": "unipc", "steps": 6, "videos": 2, "seed": 1000, "network_calls": 12}
    gate = entry["parity"]["gate"]
    assert entry["parity"]["passed"] and gate["psnr_db"] >= 30 and gate["max_score_change"] <= 0.05
    assert "calibration: 12 network calls (2 videos x unipc 6 steps, seed 1000)" in output
    from vdm.machine import cpu_has_int8_dot_product

    quantization = entry["quantization"]
    assert quantization["smoothing"].startswith("SmoothQuant alpha 0.5 on ")
    assert quantization["weight_bits"] == (8 if cpu_has_int8_dot_product() else 7)  # the gate ran on this CPU


def test_the_int8_network_is_symmetric_qdq_with_the_first_and_last_convolutions_in_float(int8_bundle):
    _, bundle, _ = int8_bundle
    model = onnx.load(str(bundle / "unet.int8.onnx"))
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    constants |= {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                  if n.op_type == "Constant"}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero_point = constants[node.input[2]]
            assert zero_point.dtype.name == "int8" and not zero_point.any()  # what TensorRT takes
    producers = {out: n for n in model.graph.node for out in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in (convs[0], convs[-1]):
        weight = producers.get(conv.input[1])
        assert weight is None or weight.op_type != "DequantizeLinear"


def test_channel_statistics_stay_float_and_only_feature_convolutions_are_quantized(tiny_bundle, tmp_path):
    import openvino as ov

    from vdm.export.int8 import end_convs, quantize_network, quantized_convs, statistics_convs

    fp32 = onnx.load(str(tiny_bundle / "unet.onnx"))  # the dynamo export: GroupNorms as channel statistics
    generator = np.random.default_rng(0)
    feeds = [{"x": generator.standard_normal((1, 3, 4, 8, 8)).astype(np.float32), "t": np.array([t])}
             for t in (999, 500, 0)]
    quantized, _ = quantize_network(fp32, feeds)
    statistics, ends = statistics_convs(quantized), end_convs(quantized)
    convs = [n.name for n in quantized.graph.node if n.op_type == "Conv"]
    assert statistics and set(quantized_convs(quantized)) == set(convs) - set(statistics) - set(ends)
    consumers = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in (n for n in quantized.graph.node if n.op_type == "DequantizeLinear"):
        assert {user.name for user in consumers[node.output[0]]} <= set(quantized_convs(quantized))
    onnx.save(quantized, str(tmp_path / "int8.onnx"))
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # not OpenVINO's bf16 default on CPUs with bf16 units
    out = {name: ov.Core().compile_model(str(path), "CPU", f32)(feeds[0])[0] for name, path in
           (("fp32", tiny_bundle / "unet.onnx"), ("int8", tmp_path / "int8.onnx"))}
    assert np.isfinite(out["int8"]).all()
    assert np.abs(out["int8"] - out["fp32"]).max() < 0.1 * np.abs(out["fp32"]).max()


def test_openvino_runs_the_int8_network_close_to_fp32(int8_bundle):
    checkpoint, bundle, _ = int8_bundle
    gen = VideoGenerator(bundle, backend="openvino", precision="int8", threads=1)
    assert gen.backend.precision == "int8" and "int8 network" in gen.backend.describe()
    reference = VideoGenerator(checkpoint, backend="torch", device="cpu", precision="fp32").generate(2, seed=0)
    from vdm.fidelity import video_psnr

    assert video_psnr(gen.generate(2, seed=0), reference) >= 30


def test_onnxruntime_refuses_int8_saying_why(int8_bundle):
    _, bundle, _ = int8_bundle
    with pytest.raises(VdmError, match="no int8 kernel for 3D convolutions.*use --backend openvino"):
        VideoGenerator(bundle, backend="onnxruntime", device="cpu", precision="int8")


def test_vdm_run_runs_int8_on_openvino(int8_bundle, tmp_path):
    _, bundle, _ = int8_bundle
    result = invoke(run_main, bundle, "--backend", "openvino", "--precision", "int8", "-n", 1, "--out", tmp_path / "v")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "sample_000.mp4").is_file()


def test_a_bundle_without_int8_says_how_to_make_it(tiny_bundle, tmp_path):
    result = invoke(run_main, tiny_bundle, "--backend", "openvino", "--precision", "int8", "--out", tmp_path / "v")
    assert result.exit_code == 2 and "has no int8 network" in result.output and "vdm-export --int8" in result.output


def snapshot(folder: Path) -> dict[str, str]:
    """The bundle's files and their sha256, without the caches a load may refresh."""
    from vdm.bundle import VERIFIED_NAME
    from vdm.runtime.openvino_backend import CACHE_NAME

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and CACHE_NAME not in p.parts and p.name != VERIFIED_NAME}


def test_a_network_that_fails_the_gate_is_not_written_and_the_export_exits_1(int8_bundle, tmp_path, monkeypatch):
    checkpoint, bundle, _ = int8_bundle
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    manifest = json.loads((copy / "vdm.json").read_text())
    del manifest["networks"]["int8"]
    (copy / "vdm.json").write_text(json.dumps(manifest))
    (copy / "unet.int8.onnx").unlink()
    before = snapshot(copy)
    impossible = Int8Options(calibration_videos=2, gate_videos=2, min_psnr_db=500)
    with pytest.raises(Int8GateError, match="no int8 network passed the quality gate") as error:
        export_int8(checkpoint, copy, impossible, log=lambda *_: None)
    assert error.value.exit_code == 1
    assert snapshot(copy) == before and not list(copy.glob(".export-*"))


def test_a_network_failing_the_gate_keeps_its_most_harmful_convolutions_in_float(int8_bundle, tmp_path):
    checkpoint, bundle, _ = int8_bundle
    first = json.loads((bundle / "vdm.json").read_text())["networks"]["int8"]
    copy = Path(shutil.copytree(bundle, tmp_path / "bundle"))
    stricter = Int8Options(calibration_videos=2, gate_videos=2, min_psnr_db=first["parity"]["gate"]["psnr_db"] + 1)
    lines = []
    entry = export_int8(checkpoint, copy, stricter, log=lines.append)
    quantization = entry["quantization"]
    sensitivity = quantization["sensitivity_psnr_db"]
    kept = quantization["fp32_convs"][2:]  # after the first and last convolutions
    assert kept == sorted(sensitivity, key=sensitivity.get)[:len(kept)] and kept
    assert quantization["quantized_convs"] == len(sensitivity) - len(kept)
    assert entry["parity"]["passed"] and entry["parity"]["gate"]["psnr_db"] >= stricter.min_psnr_db
    assert "failed" in lines[1] and "ranking the quantized convolutions" in lines[2] and "passed" in lines[-1]
    assert json.loads((copy / "vdm.json").read_text())["networks"]["int8"] == entry
    assert not list(copy.glob(".export-*"))


def test_fallback_keeps_the_most_sensitive_convolutions_first():
    sensitivity = {"a": 40.0, "b": 25.0, "c": 33.0}  # PSNR with that convolution alone in int8
    assert fallback_plans(sensitivity) == [["b"], ["b", "c"]]  # never all: that quantizes nothing


def run_network(model, feed) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def random_feeds(count: int, batch: int = 1) -> list[dict]:
    generator = np.random.default_rng(0)
    return [{"x": generator.standard_normal((batch, 3, 4, 8, 8), dtype=np.float32),
             "t": generator.integers(0, 1000, batch)} for _ in range(count)]


def test_smoothing_moves_the_activations_outliers_into_the_weights_and_computes_the_same(tiny_bundle):
    from vdm.export.int8 import channel_maxima, inner_convs, smooth_activations

    fp32 = onnx.load(str(tiny_bundle / "unet.onnx"))
    feeds, original = random_feeds(3), fp32.SerializeToString()
    smoothed, record = smooth_activations(fp32, feeds, alpha=0.5)
    assert fp32.SerializeToString() == original  # a copy is smoothed, not the network given
    convs = inner_convs(fp32)
    assert record == {"smoothing": f"SmoothQuant alpha 0.5 on {len(convs)} convolutions"}
    muls = [[n.op_type for n in model.graph.node].count("Mul") for model in (fp32, smoothed)]
    assert muls[1] == muls[0] + len(convs)  # one per quantized convolution
    feed = random_feeds(1, batch=2)[0]
    np.testing.assert_allclose(run_network(smoothed, feed), run_network(fp32, feed), rtol=1e-4, atol=1e-5)
    before = channel_maxima(fp32, feeds, [c.input[0] for c in convs])
    after = channel_maxima(smoothed, feeds, [c.input[0] for c in inner_convs(smoothed)])
    spread = [m.max() / m.min() for m in before.values()], [m.max() / m.min() for m in after.values()]
    assert np.median(spread[1]) < np.median(spread[0])  # the channels' ranges are closer together


def test_taking_every_convolution_out_of_int8_gives_the_fp32_network_back(tiny_bundle):
    from vdm.export.int8 import float_convs, quantize_network, quantized_convs, smooth_activations

    fp32 = onnx.load(str(tiny_bundle / "unet.onnx"))
    smoothed, _ = smooth_activations(fp32, random_feeds(3))
    int8, _ = quantize_network(smoothed, random_feeds(3))
    names = quantized_convs(int8)
    assert len(names) >= 4
    feed = random_feeds(1, batch=2)[0]
    restored = float_convs(int8, smoothed, names)
    assert quantized_convs(restored) == [] and not any(n.op_type == "QuantizeLinear" for n in restored.graph.node)
    np.testing.assert_allclose(run_network(restored, feed), run_network(fp32, feed), rtol=1e-4, atol=1e-5)
    one = float_convs(int8, smoothed, names[:1])
    assert quantized_convs(one) == names[1:]
    assert not np.allclose(run_network(one, feed), run_network(fp32, feed), rtol=1e-4, atol=1e-5)


def test_weights_take_8_bits_or_7_for_cpus_that_sum_int8_products_in_int16(tiny_bundle):
    from vdm.export.int8 import quantize_network

    fp32, feeds = onnx.load(str(tiny_bundle / "unet.onnx")), random_feeds(2)
    for bits, largest in ((8, 127), (7, 64)):  # NNCF's overflow fix halves the range: -64..64
        model, record = quantize_network(fp32, feeds, weight_bits=bits)
        constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
        weights = [constants[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in constants]
        assert record["weight_bits"] == bits and weights
        assert max(int(np.abs(w.astype(int)).max()) for w in weights) == largest
    with pytest.raises(VdmError, match="7 or 8 bits"):
        quantize_network(fp32, feeds, weight_bits=4)


def test_only_cpus_summing_int8_products_in_int32_take_8_bit_weights_unwarned(monkeypatch):
    from vdm.machine import cpu_has_int8_dot_product
    from vdm.runtime.openvino_backend import saturation_warning

    vnni, avx2 = {"avx2", "avx512f", "avx512_vnni"}, {"avx2", "fma"}
    assert cpu_has_int8_dot_product(vnni, environ={}) and not cpu_has_int8_dot_product(avx2, environ={})
    assert cpu_has_int8_dot_product({"amx_int8"}, environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert not cpu_has_int8_dot_product(vnni, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})  # capped below VNNI
    for cap in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(cap, raising=False)  # the warning reads the process's own cap
    eight, seven = {"quantization": {"weight_bits": 8}}, {"quantization": {"weight_bits": 7}}
    assert "may saturate" in saturation_warning(eight, avx2) and "re-export" in saturation_warning(eight, avx2)
    assert saturation_warning(eight, vnni) == saturation_warning(seven, avx2) == saturation_warning({}, avx2) == ""


def test_int8_with_fp16_is_refused_before_any_work(tiny_checkpoint, tmp_path):
    result = invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--int8", "--fp16")
    assert result.exit_code == 2 and "--int8 is made from the fp32 network" in result.output
    assert not (tmp_path / "b").exists()


def test_int8_without_nncf_says_what_to_install_before_exporting(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)
    result = invoke(export_main, tiny_checkpoint, "--out", tmp_path / "b", "--int8")
    assert result.exit_code == 2 and "pip install 'vdm[int8]'" in result.output
    assert not (tmp_path / "b").exists()


def test_calibration_records_every_network_call_of_the_default_sampler(tiny_checkpoint):
    from vdm.int8 import record_calibration

    reference = VideoGenerator(tiny_checkpoint, backend="torch", device="cpu")
    feeds = record_calibration(reference, SMALL)
    assert len(feeds) == 2 * 6 and sorted({int(f["t"][0]) for f in feeds}, reverse=True) == \
        reference.check_request(1)[1].sampler.timesteps
    assert all(f["x"].shape == (1, 3, 4, 8, 8) and torch.isfinite(torch.from_numpy(f["x"])).all() for f in feeds)


def test_a_conditional_models_calibration_covers_its_classes_and_the_null_class(tiny_conditional_checkpoint):
    from vdm.int8 import record_calibration

    reference = VideoGenerator(tiny_conditional_checkpoint, backend="torch", device="cpu")
    feeds = record_calibration(reference, Int8Options(calibration_videos=4, gate_videos=1))
    assert len(feeds) == 4 * 6 and sorted({int(f["y"][0]) for f in feeds}) == [0, 1, 2, 3]  # 3: the null class


def test_the_openvino_profile_splits_each_networks_call_by_node_type(int8_bundle, tiny_bundle):
    from benchmarks.openvino_profile import main as profile_main

    _, bundle, _ = int8_bundle
    result = invoke(profile_main, bundle, "--batch", 1, "--threads", 1, "--calls", 2)
    assert result.exit_code == 0, result.output
    assert "**fp32** (unet.onnx; GroupNorm reshaped)" in result.output and "**int8** (unet.int8.onnx" in result.output
    assert "| Convolution (" in result.output and "CPU flags:" in result.output
    both = invoke(profile_main, tiny_bundle, bundle, "--precisions", "fp32", "--batch", 1, "--threads", 1, "--calls", 2)
    assert both.exit_code == 0, both.output  # the dynamo export (channel statistics) beside the TorchScript one
    assert f"**fp32** ({tiny_bundle.name}/unet.onnx; GroupNorm channel statistics)" in both.output
    assert f"**fp32** ({bundle.name}/unet.onnx; GroupNorm reshaped)" in both.output
    missing = invoke(profile_main, tiny_bundle, "--precisions", "int8")
    assert missing.exit_code == 2 and "has no int8 network" in missing.output


def test_the_latency_benchmark_times_int8_of_random_weights_without_a_gate(tmp_path):
    from benchmarks.latency import cli as latency_cli

    result = invoke(latency_cli.main, "--preset", "tiny", "--quick", "--backends", "openvino", "--precisions",
                    "fp32,int8", "--steps", 2, "--threads", 1, "--out", tmp_path, "--name", "r")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [(row["precision"], row["status"]) for row in report["results"]] == [("fp32", "ok"), ("int8", "ok")]
    assert "quality gate off (its videos say nothing)" in (tmp_path / "r" / "results.md").read_text()

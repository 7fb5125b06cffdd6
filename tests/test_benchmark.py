"""benchmarks.latency end to end on a tiny checkpoint: rows, parity, an unavailable backend, the three
reports; and its plan: which precisions each backend's rows take, read from the backend declarations."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.latency import cli
from benchmarks.latency.plan import VARIANTS, plan_rows
from vdm.runtime.backend import backend_class


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, save_tiny_checkpoint):
    """One --quick run on the tiny test model (T=4, 8x8): (exit code, its results folder, the argv)."""
    tmp = tmp_path_factory.mktemp("latency")
    checkpoint = save_tiny_checkpoint(tmp / "tiny.safetensors")
    argv = [str(checkpoint), "--quick", "--backends", "torch,onnxruntime,tensorrt", "--steps", "2",
            "--device", "cpu", "--threads", "1", "--out", str(tmp / "results"), "--name", "run"]
    result = CliRunner().invoke(cli.main, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, tmp / "results" / "run", argv


def rows_of(results_dir: Path) -> dict[str, dict]:
    report = json.loads((results_dir / "results.json").read_text())
    return {row["backend"]: row for row in report["results"]}


def test_quick_run_exits_zero_with_only_ok_and_unavailable_rows(quick_run):
    code, results_dir, _ = quick_run
    assert code == 0
    assert {row["status"] for row in rows_of(results_dir).values()} == {"ok", "unavailable"}


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_available_backends_have_positive_timings(quick_run, backend):
    row = rows_of(quick_run[1])[backend]
    assert row["status"] == "ok"
    assert (row["precision"], row["batch"], row["steps"]) == ("fp32", 1, 2)
    for key in ("call_ms_median", "call_ms_p90", "video_s_median", "videos_per_s", "tflops", "setup_s"):
        assert row[key] > 0, key
    assert row["call_ms_p90"] >= row["call_ms_median"]


def test_onnxruntime_videos_match_torch_fp32(quick_run):
    rows = rows_of(quick_run[1])
    assert rows["onnxruntime"]["psnr_db"] >= 40
    assert rows["torch"]["psnr_db"] == 200.0  # the reference itself: identical
    assert rows["torch"]["speedup_vs_torch_fp32"] == pytest.approx(1.0)


def test_tensorrt_is_unavailable_with_a_reason(quick_run):
    row = rows_of(quick_run[1])["tensorrt"]
    assert row["status"] == "unavailable"
    assert "tensorrt" in row["reason"].lower() or "cuda" in row["reason"].lower()
    assert row["call_ms_median"] is None


def test_json_header_names_machine_versions_and_command(quick_run):
    _, results_dir, argv = quick_run
    report = json.loads((results_dir / "results.json").read_text())
    assert set(report["machine"]["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert {"python", "torch", "onnxruntime", "openvino", "onnx", "numpy"} <= set(report["versions"])
    assert report["command"].endswith(argv[-1])


def test_markdown_has_the_table_header_and_the_command_line(quick_run):
    _, results_dir, argv = quick_run
    text = (results_dir / "results.md").read_text()
    assert "| backend | precision |" in text
    assert "python -m benchmarks.latency " + argv[0] in text
    assert "**Headline**" in text


def test_chart_is_a_png(quick_run):
    png = quick_run[1] / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_takes_the_precisions_its_backend_declares_on_each_device(name):
    variant = VARIANTS[name]
    for device, precisions in backend_class(variant.backend).computes.items():
        assert variant.precisions(device) == precisions


def test_the_plan_follows_a_changed_declaration(monkeypatch):
    """A backend declaring fewer precisions on a device loses those rows there: they become skipped n/a."""
    cls = backend_class("onnxruntime")
    monkeypatch.setattr(cls, "computes", cls.computes | {"cpu": ("fp32",)})
    jobs, skipped = plan_rows(["onnxruntime"], ["fp32", "fp16", "bf16"], [1], "cpu")
    assert [(j.variant.name, j.precision) for j in jobs] == [("onnxruntime", "fp32")]
    assert skipped == ["onnxruntime fp16", "onnxruntime bf16"]


def test_int8_rows_read_the_int8_network_where_the_backend_computes_it():
    jobs, skipped = plan_rows(["onnxruntime", "openvino"], ["fp32", "int8"], [1], "cpu")
    assert [(j.variant.name, j.precision) for j in jobs] == [("onnxruntime", "fp32"), ("openvino", "fp32"),
                                                             ("openvino", "int8")]
    assert skipped == ["onnxruntime int8"]
    assert [VARIANTS["openvino"].network_for(p) for p in ("fp32", "bf16", "int8")] == ["fp32", "fp32", "int8"]


def test_reports_say_when_instruction_sets_are_capped_below_the_cpu_flags(monkeypatch):
    from benchmarks.common import facts_markdown, machine_info, run_facts

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert machine_info()["isa_caps"] == {}
    assert "capped" not in "\n".join(facts_markdown(run_facts("benchmarks.latency", [])))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert machine_info()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    flags_line = next(line for line in facts_markdown(run_facts("benchmarks.latency", [])) if "CPU flags" in line)
    assert "instruction sets capped by ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2" in flags_line

"""benchmarks/train_step.py end to end: timed rows of the tiny preset on the CPU (fp32 and bf16), and its
two reports."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_row(tmp_path_factory):
    """(exit code, results folder, argv) of one-process, one-thread rows in fp32 and bf16: 1 warm-up step,
    2 blocks of 1 step."""
    out = tmp_path_factory.mktemp("train-step")
    argv = ["--world-sizes", "1", "--threads", "1", "--batch-size", "2", "--precisions", "fp32,bf16", "--steps", "1",
            "--repeats", "2", "--warmup", "1", "--out", str(out), "--name", "run"]
    sys.path.insert(0, str(SCRIPT.parent))  # it imports its sibling common.py, as when run as a script
    try:
        code = load_script().main(argv)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return code, out / "run", argv


def test_a_row_reports_positive_throughput_and_the_data_time(one_row):
    code, folder, _ = one_row
    assert code == 0
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [row["precision"] for row in rows] == ["fp32", "bf16"]  # what each row's trainer ran in
    for row in rows:
        assert row["status"] == "ok" and row["world_size"] == 1 and row["threads_per_process"] == 1
        for key in ("steps_per_s", "clips_per_s", "tflops", "data_wait_ms", "draw_numpy_ms", "draw_torch_ms"):
            assert row[key] > 0, key
        assert row["clips_per_s"] == pytest.approx(2 * row["steps_per_s"])
        assert row["memory_format"] == "channels_last_3d"  # the CPU's auto layout


def test_the_headline_compares_bf16_with_fp32_in_one_run(one_row):
    _, folder, _ = one_row
    report = json.loads((folder / "results.json").read_text())
    fp32, bf16 = report["rows"]
    (line,) = [h for h in report["headlines"] if "in fp32" in h]
    assert f"({fp32['ms_per_step'] / bf16['ms_per_step']:.2f}x the steps/s)" in line


def test_the_report_names_the_machine_versions_and_command(one_row):
    _, folder, argv = one_row
    report = json.loads((folder / "results.json").read_text())
    assert {"avx512f", "avx512_vnni", "amx_bf16"} <= set(report["machine"]["cpu_flags"])
    assert {"python", "torch", "numpy"} <= set(report["versions"])
    assert report["command"] == "python benchmarks/train_step.py " + " ".join(argv)
    text = (folder / "results.md").read_text()
    assert "| code | processes | threads/process | layout | precision |" in text and report["command"] in text

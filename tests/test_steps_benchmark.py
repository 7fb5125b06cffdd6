"""benchmarks/steps.py end to end on a tiny checkpoint: the reference, the rows, the three reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks import steps


@pytest.fixture(scope="module")
def report(tmp_path_factory, save_tiny_checkpoint):
    tmp = tmp_path_factory.mktemp("steps")
    checkpoint = save_tiny_checkpoint(tmp / "tiny.safetensors")
    result = CliRunner().invoke(steps.main, [
        str(checkpoint), "--samplers", "ddim,unipc", "--spacings", "linspace", "--steps", "3,20",
        "--seeds", "0,1", "--videos-per-seed", "1", "--reference-steps", "20", "--vdm-run-repeats", "1",
        "--threads", "1", "--out", str(tmp), "--name", "run"])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_it_writes_json_markdown_and_a_plot(report):
    assert {p.name for p in report.iterdir()} == {"steps.json", "steps.md", "steps.png"}
    assert (report / "steps.png").stat().st_size > 1000


def test_each_sampler_and_step_count_is_one_row_and_ddim_at_the_references_steps_is_exact(report):
    rows = json.loads((report / "steps.json").read_text())["rows"]
    assert [(r["sampler"], r["spacing"], r["steps"]) for r in rows] == [  # with the baseline, ddim 50
        ("ddim", "linspace", 3), ("ddim", "linspace", 20), ("ddim", "linspace", 50), ("unipc", "linspace", 3),
        ("unipc", "linspace", 20)]
    exact = rows[1]
    assert exact["psnr_db"] == 200.0 and exact["psnr_db_per_seed"] == [200.0, 200.0]
    assert all(r["psnr_db"] < 200 for r in rows if r is not exact)
    assert all(r["seconds_per_video"] > 0 and 0 <= r["pass_rate"] <= 1 for r in rows)


def test_the_report_states_the_machine_the_baseline_and_the_vdm_run_speed_up(report):
    data = json.loads((report / "steps.json").read_text())
    text = (report / "steps.md").read_text()
    assert data["baseline"]["sampler"] == "ddim" and data["baseline"]["steps"] == 50
    assert set(data["fewest_steps"]) == {"ddim linspace", "unipc linspace"}
    assert data["vdm_run"]["speedup"] > 0
    for needle in ("machine:", "CPU flags:", "versions:", "date:", "command: `python -m benchmarks.steps",
                   "**Baseline**", "**vdm-run's generation**", "| unipc | linspace | 20 |"):
        assert needle in text

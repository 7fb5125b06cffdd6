"""benchmarks/sampler_quality.py end to end on a tiny checkpoint: one row per plan, both reports."""
from __future__ import annotations

import json

from click.testing import CliRunner

from benchmarks import sampler_quality
from vdm.metrics import PROPERTIES


def test_it_scores_every_plan_from_the_same_noise_and_writes_both_reports(tmp_path, tiny_checkpoint):
    args = [str(tiny_checkpoint), "--plans", "ddim:2,dpm++2m-sde:3,dpm++2m:2+0.1:2", "-n", "2", "--out", str(tmp_path),
            "--name", "r"]
    result = CliRunner().invoke(sampler_quality.main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [(row["sampler"], row["steps"], row["restarts"]) for row in report["rows"]] == \
        [("ddim", 2, []), ("dpm++2m-sde", 3, []), ("dpm++2m", 2, ["0.1:2"])]
    assert all(set(row["property_scores"]) == set(PROPERTIES) and "videos" not in row for row in report["rows"])
    assert report["facts"]["machine"]["cpu_flags"] and report["facts"]["date"]
    assert "dpm++2m 2 steps+0.1:2: pass" in result.output
    table = (tmp_path / "r" / "results.md").read_text()
    assert "| dpm++2m-sde | 3 | - |" in table and "| dpm++2m | 2 | 0.1:2 |" in table and "CPU flags" in table


def test_a_plan_that_is_not_sampler_colon_steps_is_refused_before_any_work(tmp_path, tiny_checkpoint):
    for plans in ("euler:5", "ddim", "ddim:0", ",", "ddim:2+", "ddim:2+0.1", "ddim:2+0:3"):
        args = [str(tiny_checkpoint), "--plans", plans, "--out", str(tmp_path / "results")]
        result = CliRunner().invoke(sampler_quality.main, args)
        assert result.exit_code == 2 and "--plans" in result.output, (plans, result.output)
    assert not (tmp_path / "results").exists()


def test_the_demo_is_scored_with_its_labels_and_guidance_and_a_conditional_checkpoint_with_the_flag(
        tmp_path, tiny_conditional_checkpoint):
    from vdm.demo import DEMO_GUIDANCE

    demo = CliRunner().invoke(sampler_quality.main, ["--plans", "unipc:2", "-n", "2", "--out", str(tmp_path),
                                                     "--name", "demo"])
    assert demo.exit_code == 0, demo.output
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["guidance"] == DEMO_GUIDANCE
    assert f"guidance {DEMO_GUIDANCE:g})" in (tmp_path / "demo" / "results.md").read_text()
    args = [str(tiny_conditional_checkpoint), "--plans", "ddim:2", "-n", "2", "--out", str(tmp_path)]
    guided = CliRunner().invoke(sampler_quality.main, [*args, "--guidance", "3", "--name", "guided"])
    plain = CliRunner().invoke(sampler_quality.main, [*args, "--name", "plain"])
    assert guided.exit_code == 0 and plain.exit_code == 0, guided.output + plain.output
    rows = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("guided", "plain")]
    assert [row["guidance"] for row in rows] == [3.0, 1.0]
    assert "guidance" not in (tmp_path / "plain" / "results.md").read_text().split("|")[0]

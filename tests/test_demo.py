"""The bundled demo model: vdm-run works out of the box, on torch and (exported once, cached) onnxruntime."""
from __future__ import annotations

from click.testing import CliRunner

from vdm.checkpoint import read_checkpoint
from vdm.demo import DEMO_CHECKPOINT
from vdm.cli.run import main as run_main
from vdm.video import read_video


def test_the_demo_checkpoint_ships_small_with_its_recipe():
    assert DEMO_CHECKPOINT.stat().st_size < 5_000_000
    _, model_config, diffusion_config, metadata = read_checkpoint(DEMO_CHECKPOINT)
    assert (model_config.frames, model_config.size) == (8, 32) and int(metadata["step"]) > 0
    recipe = (DEMO_CHECKPOINT.parent / "TRAINING.md").read_text()
    assert "vdm-train" in recipe and "python -m vdm.demo" in recipe


def test_vdm_run_without_a_model_uses_the_demo(tmp_path):
    result = CliRunner().invoke(run_main, ["--steps", "2", "-n", "1", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "bundled demo" in result.output
    assert read_video(tmp_path / "sample_000.mp4").shape == (8, 32, 32, 3)


def test_onnxruntime_demo_is_exported_on_first_use_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("VDM_CACHE", str(tmp_path / "cache"))
    args = ["--backend", "onnxruntime", "--steps", "2", "-n", "1", "--device", "cpu"]
    first = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "first use: exporting" in first.output
    assert (tmp_path / "cache" / "demo-bundle" / "unet.onnx").is_file()
    second = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "reusing the exported bundle" in second.output
    assert (tmp_path / "b" / "sample_000.mp4").is_file()

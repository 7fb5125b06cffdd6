"""The bundled demo model: vdm-run works out of the box, on torch and (exported once, cached) onnxruntime."""
from __future__ import annotations

import json

import torch
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
    assert "vdm-train" in recipe and "--config vdm/demo/demo.toml" in recipe and "python -m vdm.demo" in recipe


def test_the_recipe_config_gives_the_shipped_networks_config():
    from vdm.config import get_preset, load_config_file

    recipe = load_config_file(DEMO_CHECKPOINT.with_name("demo.toml"), get_preset("tiny"))
    _, model_config, diffusion_config, _ = read_checkpoint(DEMO_CHECKPOINT)
    assert (recipe.model, recipe.diffusion) == (model_config, diffusion_config)


def test_packing_a_checkpoint_elsewhere_keeps_its_configs_in_float16(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    dest = tmp_path / "candidate-fp16.safetensors"
    before = DEMO_CHECKPOINT.read_bytes()
    subprocess.run([sys.executable, "-m", "vdm.demo", str(tiny_checkpoint), str(dest)], check=True)
    assert DEMO_CHECKPOINT.read_bytes() == before  # the bundled demo is left alone
    state, model_config, diffusion_config, metadata = read_checkpoint(dest)
    source_state, source_model, source_diffusion, source_metadata = read_checkpoint(tiny_checkpoint)
    assert (model_config, diffusion_config, metadata["step"]) == (source_model, source_diffusion, source_metadata["step"])
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    assert all(torch.allclose(state[k].float(), source_state[k].float(), rtol=1e-3, atol=1e-4) for k in state)
    missing = subprocess.run([sys.executable, "-m", "vdm.demo", str(tmp_path / "none.safetensors"), str(dest)],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"error: checkpoint {tmp_path / 'none.safetensors'} does not exist"]


def test_vdm_run_without_a_model_uses_the_demo_with_shape_labels_guidance_and_a_restart(tmp_path):
    from vdm.data import data_labels

    _, model_config, _, _ = read_checkpoint(DEMO_CHECKPOINT)
    assert (model_config.num_classes, model_config.class_label) == (728, "shapes")
    args = ["--steps", "2", "-n", "2", "--device", "cpu", "--precision", "fp32", "--seed", "3"]
    result = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "guided")])
    assert result.exit_code == 0, result.output
    assert "bundled demo" in result.output and "; classifier-free guidance 5" in result.output
    assert "restarted from t=872 in 6 steps (8 network calls)" in result.output  # SNR 0.01 (DEMO_RESTARTS)
    assert f"class labels {data_labels('shapes', 2, 3)}" in result.output  # each video its own
    guided = read_video(tmp_path / "guided" / "sample_000.mp4")
    assert guided.shape == (8, 32, 32, 3)
    alone = CliRunner().invoke(run_main, [*args, "--guidance", "1", "--restart", "none",
                                          "--out", str(tmp_path / "alone")])
    assert alone.exit_code == 0, alone.output
    assert "bundled demo" in alone.output and "guidance" not in alone.output and "restarted" not in alone.output
    assert (read_video(tmp_path / "alone" / "sample_000.mp4").astype(int) - guided).any()


def test_onnxruntime_demo_is_exported_on_first_use_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("VDM_CACHE", str(tmp_path / "cache"))
    args = ["--backend", "onnxruntime", "--steps", "2", "-n", "1", "--device", "cpu"]
    first = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "first use: exporting" in first.output
    assert (tmp_path / "cache" / "demo-bundle" / "unet.onnx").is_file()
    assert "classifier-free guidance 5" in first.output
    second = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "reusing the exported bundle" in second.output
    assert (tmp_path / "b" / "sample_000.mp4").is_file()
    manifest_path = tmp_path / "cache" / "demo-bundle" / "vdm.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["networks"]["fp32"]["group_norm"]  # as vdm wrote it before the channel-statistics form
    manifest_path.write_text(json.dumps(manifest))
    third = CliRunner().invoke(run_main, [*args, "--out", str(tmp_path / "c")])
    assert third.exit_code == 0, third.output
    assert "exported by an older vdm: exporting it again" in third.output
    assert json.loads(manifest_path.read_text())["networks"]["fp32"]["group_norm"] == "channel statistics"


def test_frames_sheet_marks_real_clips_passing_and_a_recoloured_one_failing():
    import numpy as np

    from vdm.data import SyntheticShapes
    from vdm.demo.frames import BAR, FAIL_COLOR, GAP, PASS_COLOR, SCALE, SWATCH, frames_sheet

    data = SyntheticShapes(8, 32, seed=0)
    clips = data.batch(0, 2).numpy()  # (2, 3, T, H, W)
    broken = clips[0].copy()
    broken[:, 4:] = broken[[1, 2, 0], 4:]  # from frame 4 on, every shape takes another colour
    sheet, reports = frames_sheet(np.stack([clips[0], clips[1], broken]))
    row_height = 32 * SCALE
    bars = [tuple(sheet[i * (row_height + GAP) + row_height // 2, BAR // 2]) for i in range(3)]
    assert bars == [PASS_COLOR, PASS_COLOR, FAIL_COLOR]
    assert [r.passed for r in reports] == [True, True, False]
    first_swatch = sheet[row_height // 2, sheet.shape[1] - 6 * SWATCH + 1]
    assert tuple(first_swatch) == tuple(reports[0].colors[0])
    assert {tr.color for tr in data.tracks(0)} == set(reports[0].colors)


def test_frames_cli_writes_a_png_and_refuses_a_missing_folder(tmp_path, tiny_checkpoint):
    from PIL import Image

    from vdm.cli.frames import main as frames_main
    from vdm.demo.frames import GAP, SCALE

    out = tmp_path / "frames.png"
    args = [str(tiny_checkpoint), "--videos", "1", "--real", "1", "--sampler", "dpm++2m-sde", "--steps", "3"]
    result = CliRunner().invoke(frames_main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 training clips, then 1 videos (dpm++2m-sde, 3 steps, " in result.output
    size = read_checkpoint(tiny_checkpoint)[1].size
    assert Image.open(out).size[1] == 2 * size * SCALE + GAP  # two rows of frames, one gap between
    missing = CliRunner().invoke(frames_main, [str(tiny_checkpoint), "--out", str(tmp_path / "no" / "f.png")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_the_gpu_candidates_script_parses_and_its_configs_differ_from_the_demo_in_width_or_output_only():
    import re
    import subprocess
    from pathlib import Path

    from vdm.config import get_preset, load_config_file

    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "demo_gpu" / "run.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr

    configs = re.search(r'CONFIGS="\$\{CONFIGS:-([^}]*)\}"', script.read_text()).group(1).split()
    assert configs[0] == "vdm/demo/demo.toml" and all((root / c).is_file() for c in configs)  # the control first
    demo = load_config_file(root / configs[0], get_preset("tiny"))
    for config in sorted((root / "benchmarks" / "demo_gpu").glob("*.toml")):
        candidate = load_config_file(config, get_preset("tiny"))
        if config.name == "palette.toml":
            assert candidate.model.palette and candidate.diffusion.prediction == "x0"
            candidate.model.palette, candidate.diffusion.prediction = demo.model.palette, demo.diffusion.prediction
        else:
            assert candidate.model.base_channels > demo.model.base_channels, config
            candidate.model.base_channels = demo.model.base_channels
        assert (candidate.model, candidate.diffusion) == (demo.model, demo.diffusion), config

"""Specification of `vdm-run` (vdm.cli.run) on the torch backend: the files it writes, and the
one-line errors (exit 2, no traceback) for user mistakes, checked before any sampling."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from vdm.errors import VdmError
from vdm.cli.run import main
from vdm.video import read_video


def vdm_run(*args, catch_exceptions: bool = True):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=catch_exceptions)


def assert_user_error(result, exit_code: int = 2) -> str:
    """The command exited with `exit_code` through a VdmError (no traceback); returns its stderr."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    assert "Traceback" not in result.output and "error: " in result.stderr
    return result.stderr


def assert_one_line_error(result, exit_code: int = 2) -> str:
    """As assert_user_error, and stderr is one line `error: ...` (nothing started before the check)."""
    lines = assert_user_error(result, exit_code).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ---------------------------------------------------------------------------------------------
# A successful run


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, save_tiny_checkpoint) -> Path:
    """The --out folder of `vdm-run CKPT --backend torch --steps 2 -n 2 --device cpu` on the tiny checkpoint."""
    folder = tmp_path_factory.mktemp("vdm_run")
    checkpoint = save_tiny_checkpoint(folder / "tiny.safetensors")
    result = vdm_run(checkpoint, "--backend", "torch", "--steps", 2, "-n", 2, "--out", folder / "out",
                     "--device", "cpu", "--seed", 0)
    assert result.exit_code == 0, result.output
    return folder / "out"


def test_vdm_run_writes_one_mp4_per_video_and_a_grid(run_output):
    assert sorted(p.name for p in run_output.iterdir()) == ["grid.gif", "sample_000.mp4", "sample_001.mp4"]


@pytest.mark.parametrize("name", ["sample_000.mp4", "sample_001.mp4"])
def test_vdm_run_mp4s_read_back_at_the_models_shape(run_output, name):
    assert read_video(run_output / name).shape == (4, 8, 8, 3)  # (T, H, W, RGB)


def test_vdm_run_grid_reads_back_with_every_frame(run_output):
    # Two 8x8 videos side by side; noise-like samples leave Pillow no identical frames to merge.
    assert len(read_video(run_output / "grid.gif")) == 4


def test_vdm_run_generates_a_class_with_guidance(tmp_path, tiny_conditional_checkpoint):
    result = vdm_run(tiny_conditional_checkpoint, "--backend", "torch", "--steps", 2, "-n", 1, "--class", 2,
                     "--guidance", 3, "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "out" / "sample_000.mp4").shape == (4, 8, 8, 3)


def test_vdm_run_takes_an_explicit_shape(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--steps", 1, "-n", 1, "--frames", 2, "--size", 4,
                     "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "out" / "sample_000.mp4").shape == (2, 4, 4, 3)


# ---------------------------------------------------------------------------------------------
# User mistakes: exit 2, one line, nothing written


def test_vdm_run_refuses_a_missing_checkpoint(tmp_path):
    result = vdm_run(tmp_path / "nowhere.safetensors", "--out", tmp_path / "out", "--device", "cpu")
    assert "does not exist" in assert_one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_vdm_run_refuses_a_size_the_model_cannot_take(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--size", 7, "--out", tmp_path / "out", "--device", "cpu")
    assert "height=7" in assert_one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_vdm_run_refuses_a_class_for_an_unconditional_model(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--class", 0, "--steps", 2, "--out", tmp_path / "out", "--device", "cpu")
    assert "error: this model is unconditional" in assert_user_error(result)
    assert not (tmp_path / "out").exists()


def test_vdm_run_refuses_steps_beyond_the_training_timesteps(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--steps", 1001, "--out", tmp_path / "out", "--device", "cpu")
    assert "error: steps must be in 1..1000" in assert_user_error(result)


@pytest.mark.parametrize("flags", [("--class", 0), ("--steps", 1001)], ids=["class", "steps"])
def test_vdm_run_checks_class_and_steps_before_showing_progress(tmp_path, tiny_checkpoint, flags):
    result = vdm_run(tiny_checkpoint, *flags, "--out", tmp_path / "out", "--device", "cpu")
    lines = assert_user_error(result).strip().splitlines()
    assert lines[-1].startswith("error: ")


def test_vdm_run_refuses_an_onnxruntime_provider_for_the_torch_backend(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--backend", "torch", "--provider", "cuda", "--out", tmp_path / "out")
    assert "--provider only applies to --backend onnxruntime" in assert_one_line_error(result)


def test_vdm_run_refuses_fp16_on_the_cpu(tmp_path, tiny_checkpoint):
    result = vdm_run(tiny_checkpoint, "--precision", "fp16", "--device", "cpu", "--out", tmp_path / "out")
    assert "fp16" in assert_one_line_error(result)


def test_vdm_run_with_debug_lets_the_error_propagate_with_its_traceback(tmp_path):
    with pytest.raises(VdmError, match="does not exist"):
        vdm_run(tmp_path / "nowhere.safetensors", "--device", "cpu", "--debug", catch_exceptions=False)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm++2m", "dpm++2m-sde", "unipc"])
def test_vdm_run_takes_every_sampler_and_says_which_plan_it_runs(tmp_path, tiny_checkpoint, sampler):
    result = vdm_run(tiny_checkpoint, "--sampler", sampler, "--spacing", "trailing", "--steps", 3, "-n", 1,
                     "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"sampler: {sampler}, 3 steps, trailing spacing" in result.output
    assert (tmp_path / "out" / "sample_000.mp4").is_file()


@pytest.mark.parametrize("flags, message", [
    (("--sampler", "unipc", "--eta", 0.5),
     "error: eta applies to the ddim sampler only; unipc takes no eta (leave it at 0)"),
    (("--sampler", "ddim", "--eta", "nan"), "error: eta must be a finite number >= 0, got nan"),
])
def test_vdm_run_refuses_an_eta_the_sampler_cannot_take_before_any_work(tmp_path, tiny_checkpoint, flags, message):
    result = vdm_run(tiny_checkpoint, *flags, "--out", tmp_path / "out", "--device", "cpu")
    assert assert_user_error(result).strip().splitlines()[-1] == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--sampler", "euler"), ("--spacing", "quadratic")])
def test_vdm_run_refuses_an_unknown_sampler_or_spacing_as_a_usage_error(tmp_path, tiny_checkpoint, flag, value):
    result = vdm_run(tiny_checkpoint, flag, value, "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output

"""Specification of vdm.checkpoint: exact round trips, one-line errors naming the file for every kind
of bad file, and atomic writes that never leave a half-written checkpoint."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from safetensors.torch import save_file

from vdm import atomic
from vdm.checkpoint import load_model, read_checkpoint, save_checkpoint
from vdm.config import DiffusionConfig
from vdm.errors import VdmError


def forward(model, seed: int = 0) -> torch.Tensor:
    """The model's prediction for a fixed (B=2) noisy video at its training shape."""
    cfg = model.cfg
    x = torch.randn(2, cfg.in_channels, cfg.frames, cfg.size, cfg.size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(x, torch.tensor([3, 700]))


# ---------------------------------------------------------------------------------------------
# Round trips


def test_a_loaded_checkpoint_predicts_exactly_what_the_saved_model_did(tmp_path, tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model.state_dict(), tiny_model_config, DiffusionConfig())
    loaded, _, _ = load_model(path)
    assert torch.equal(forward(loaded), forward(model))


def test_loaded_model_is_in_eval_mode_on_the_cpu(tiny_checkpoint):
    model, _, _ = load_model(tiny_checkpoint, device="cpu")
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_configs_round_trip_through_a_checkpoint(tmp_path, save_tiny_checkpoint, tiny_model_config):
    model_config = dataclasses.replace(tiny_model_config, num_classes=3, norm="batch", temporal_downsample=True,
                                       dropout=0.1)
    diffusion_config = DiffusionConfig(num_timesteps=200, schedule="linear", prediction="v")
    path = save_tiny_checkpoint(tmp_path / "model.safetensors", model_config, diffusion_config)
    _, read_model_config, read_diffusion_config, _ = read_checkpoint(path)
    assert read_model_config == model_config
    assert read_diffusion_config == diffusion_config


def test_checkpoint_records_its_step(tmp_path, tiny_model_config, make_tiny_unet):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, make_tiny_unet(tiny_model_config).state_dict(), tiny_model_config, DiffusionConfig(),
                    step=1234)
    _, _, metadata = load_model(path)
    assert metadata["step"] == "1234" and metadata["format"] == "vdm.checkpoint"


# ---------------------------------------------------------------------------------------------
# Bad files


def test_a_missing_checkpoint_is_a_vdm_error_naming_it(tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(VdmError, match="does not exist") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [lambda n: n // 2, lambda n: n - 1, lambda n: 20],
                         ids=["half", "all-but-one-byte", "mid-header"])
def test_a_truncated_checkpoint_is_a_one_line_vdm_error_naming_it(tiny_checkpoint, keep):
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes(data[:keep(len(data))])
    with pytest.raises(VdmError, match="truncated or corrupt") as info:
        load_model(tiny_checkpoint)
    assert str(tiny_checkpoint) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_file_of_garbage_is_a_vdm_error_naming_it(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(os.urandom(64))
    with pytest.raises(VdmError, match="truncated or corrupt") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_a_foreign_safetensors_file_is_a_vdm_error_saying_it_is_not_a_vdm_checkpoint(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"framework": "someone else"})
    with pytest.raises(VdmError, match="not a vdm checkpoint") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_a_newer_format_version_is_a_vdm_error_naming_both_versions(tmp_path, tiny_model_config, make_tiny_unet):
    path = tmp_path / "future.safetensors"
    save_file(make_tiny_unet(tiny_model_config).state_dict(), str(path),
              metadata={"format": "vdm.checkpoint", "format_version": "2"})
    with pytest.raises(VdmError, match="format 2; this vdm reads format 1"):
        load_model(path)


def test_weights_of_a_different_width_are_a_vdm_error_naming_a_tensor(tmp_path, tiny_model_config, make_tiny_unet):
    # The file says base_channels=16, the weights are the 8-channel model's.
    path = tmp_path / "mismatched.safetensors"
    wider = dataclasses.replace(tiny_model_config, base_channels=16)
    save_checkpoint(path, make_tiny_unet(tiny_model_config).state_dict(), wider, DiffusionConfig())
    with pytest.raises(VdmError, match=r"tensor .* has shape .* the model config needs") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_weights_of_a_different_depth_are_a_vdm_error_counting_missing_tensors(tmp_path, tiny_model_config,
                                                                               make_tiny_unet):
    path = tmp_path / "mismatched.safetensors"
    deeper = dataclasses.replace(tiny_model_config, num_res_blocks=2)
    save_checkpoint(path, make_tiny_unet(tiny_model_config).state_dict(), deeper, DiffusionConfig())
    with pytest.raises(VdmError, match=r"weights do not match the model config \(\d+ missing, 0 unexpected"):
        load_model(path)


def test_an_unknown_config_field_is_a_vdm_error_naming_it(tmp_path, tiny_model_config, make_tiny_unet):
    path = tmp_path / "odd.safetensors"
    metadata = {"format": "vdm.checkpoint", "format_version": "1", "step": "0",
                "model_config": '{"base_channels": 8, "wings": 2}', "diffusion_config": "{}"}
    save_file(make_tiny_unet(tiny_model_config).state_dict(), str(path), metadata=metadata)
    with pytest.raises(VdmError, match="unknown ModelConfig field.*wings"):
        load_model(path)


# ---------------------------------------------------------------------------------------------
# Atomic writes


@pytest.fixture
def failing_rename(monkeypatch):
    """Make the final rename of every atomic write fail, as a crash between write and rename would."""

    def fail(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(atomic.os, "replace", fail)


def test_a_failed_write_leaves_the_previous_checkpoint_loadable(tiny_checkpoint, tiny_model_config, make_tiny_unet,
                                                                failing_rename):
    before = tiny_checkpoint.read_bytes()
    other = make_tiny_unet(tiny_model_config, seed=1)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tiny_checkpoint, other.state_dict(), tiny_model_config, DiffusionConfig(), step=99)
    assert tiny_checkpoint.read_bytes() == before
    _, _, metadata = load_model(tiny_checkpoint)
    assert metadata["step"] == "0"


def test_a_failed_write_leaves_no_temporary_file(tiny_checkpoint, tiny_model_config, make_tiny_unet, failing_rename):
    with pytest.raises(OSError):
        save_checkpoint(tiny_checkpoint, make_tiny_unet(tiny_model_config).state_dict(), tiny_model_config,
                        DiffusionConfig())
    assert sorted(p.name for p in tiny_checkpoint.parent.iterdir()) == [tiny_checkpoint.name]


def test_a_failure_while_serialising_leaves_the_previous_checkpoint_loadable(tiny_checkpoint, tiny_model_config,
                                                                             make_tiny_unet, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure inside safetensors")

    monkeypatch.setattr("vdm.checkpoint.st_save", fail)
    before = tiny_checkpoint.read_bytes()
    with pytest.raises(RuntimeError):
        save_checkpoint(tiny_checkpoint, make_tiny_unet(tiny_model_config).state_dict(), tiny_model_config,
                        DiffusionConfig())
    assert tiny_checkpoint.read_bytes() == before
    load_model(tiny_checkpoint)


def test_a_checkpoint_without_its_configs_is_a_vdm_error_naming_it(tmp_path):
    path = tmp_path / "no_configs.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"format": "vdm.checkpoint", "format_version": "1"})
    with pytest.raises(VdmError, match="no_configs.safetensors"):
        load_model(path)

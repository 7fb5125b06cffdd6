"""Frame-correlated noise (DiffusionConfig.frame_noise_correlation): its statistics, and that training,
every sampler, the runtime and the bundle all draw it the way the model was trained."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import quiet

from vdm.config import DiffusionConfig
from vdm.diffusion import correlate_frames
from vdm.errors import VdmError
from vdm.samplers import SAMPLERS, make_sampler
from vdm.train import Trainer

from test_samplers import alphas_cumprod
from test_train import CPU, tiny_model, tiny_preset


def frame_correlations(noise: torch.Tensor) -> np.ndarray:
    """The (T, T) correlation matrix of noise (B, C, T, H, W) over every batch, channel and pixel."""
    frames = noise.permute(2, 0, 1, 3, 4).reshape(noise.shape[2], -1)  # (T, B*C*H*W)
    return torch.corrcoef(frames.double()).numpy()


@pytest.mark.parametrize("correlation", [0.3, 0.8])
def test_correlated_noise_has_unit_variance_and_the_asked_correlation_between_any_two_frames(correlation):
    noise = torch.randn(4000, 2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    mixed = correlate_frames(noise, correlation)
    assert mixed.var().item() == pytest.approx(1.0, abs=0.01)
    corr = frame_correlations(mixed)
    off_diagonal = corr[~np.eye(8, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, correlation, atol=0.02)


def test_zero_correlation_and_a_single_frame_leave_the_noise_as_drawn():
    noise = torch.randn(2, 3, 4, 8, 8)
    assert correlate_frames(noise, 0.0) is noise
    single = torch.randn(2, 3, 1, 8, 8)
    torch.testing.assert_close(correlate_frames(single, 0.7), single)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_frame_noise_correlation_must_lie_in_zero_to_one(value):
    with pytest.raises(VdmError, match="frame_noise_correlation"):
        DiffusionConfig(frame_noise_correlation=value)


@pytest.mark.parametrize("name", ["ddpm", "dpm++2m-sde"])
def test_stochastic_samplers_draw_fresh_noise_with_the_models_correlation(name):
    sampler = make_sampler(name, alphas_cumprod(), 8, frame_noise_correlation=0.6)
    x = torch.zeros(500, 2, 6, 4, 4)
    fresh = sampler.fresh_noise(x, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(frame_correlations(fresh)[0, 1:], 0.6, atol=0.03)
    assert make_sampler(name, alphas_cumprod(), 8).frame_noise_correlation == 0.0


def test_every_sampler_takes_the_correlation():
    for name in SAMPLERS:
        assert make_sampler(name, alphas_cumprod(), 4, frame_noise_correlation=0.5).frame_noise_correlation == 0.5


def test_training_noise_is_frame_correlated(tmp_path):
    preset = dataclasses.replace(tiny_preset(tiny_model()), diffusion=DiffusionConfig(frame_noise_correlation=0.7))
    trainer = Trainer(preset, tmp_path, CPU)
    _, noise, _, _, _ = trainer.draws(0, torch.Size((preset.train.batch_size, 3, 8, 16, 16)))
    assert frame_correlations(noise)[0, 1:].min() > 0.55


def test_init_from_may_change_the_frame_correlation_alone(tmp_path, save_tiny_checkpoint):
    ckpt = save_tiny_checkpoint(tmp_path / "plain.safetensors", tiny_model())
    preset = dataclasses.replace(tiny_preset(tiny_model()), diffusion=DiffusionConfig(frame_noise_correlation=0.5))
    assert Trainer(preset, tmp_path / "run", CPU).init_from(ckpt) == []


def test_the_correlation_travels_into_the_bundle_and_both_backends_make_the_same_video(tmp_path, save_tiny_checkpoint):
    from vdm.bundle import read_bundle
    from vdm.export.pipeline import ExportOptions, export_bundle
    from vdm.runtime.generator import VideoGenerator

    ckpt = save_tiny_checkpoint(tmp_path / "c.safetensors", diffusion_config=DiffusionConfig(frame_noise_correlation=0.9))
    export_bundle(ckpt, tmp_path / "b", ExportOptions(exporter="torchscript"), log=quiet)
    assert read_bundle(tmp_path / "b").diffusion_config.frame_noise_correlation == 0.9
    torch_video = VideoGenerator(ckpt, backend="torch", precision="fp32").generate(2, num_steps=4, sampler="ddpm", seed=3)
    ort_video = VideoGenerator(tmp_path / "b", backend="onnxruntime").generate(2, num_steps=4, sampler="ddpm", seed=3)
    torch.testing.assert_close(ort_video, torch_video, rtol=1e-3, atol=1e-3)
    plain = save_tiny_checkpoint(tmp_path / "p.safetensors")
    plain_video = VideoGenerator(plain, backend="torch", precision="fp32").generate(2, num_steps=4, sampler="ddpm", seed=3)
    assert not torch.allclose(plain_video, torch_video, atol=1e-2)  # the correlation changed the draws

"""Specification of the Python generation API (vdm.runtime.generator.VideoGenerator) and the shared
sampling loop on the torch backend: shapes, seeding, guidance, DDIM inversion, interpolation."""
from __future__ import annotations

import pytest
import torch

from vdm.config import DiffusionConfig
from vdm.errors import VdmError
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sample, sampler_for, slerp


def uniform_video(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Uniform in [-1, 1]: a clean video in the data range."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def generator(tiny_checkpoint) -> VideoGenerator:
    return VideoGenerator(tiny_checkpoint, backend="torch", device="cpu")


@pytest.fixture
def conditional_generator(tiny_conditional_checkpoint) -> VideoGenerator:
    return VideoGenerator(tiny_conditional_checkpoint, backend="torch", device="cpu")


@pytest.fixture
def make_zero_generator(tmp_path, save_tiny_checkpoint):
    """Factory: schedule -> a generator whose network predicts exactly zero noise (a fresh epsilon UNet)."""

    def make(schedule: str = "cosine") -> VideoGenerator:
        path = save_tiny_checkpoint(tmp_path / f"zero_{schedule}.safetensors",
                                    diffusion_config=DiffusionConfig(schedule=schedule, prediction="epsilon"),
                                    perturb=False)
        return VideoGenerator(path, backend="torch", device="cpu")

    return make


# ---------------------------------------------------------------------------------------------
# Shapes and range


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("num_steps", [1, 5, 20])
def test_generate_returns_videos_in_the_data_range(generator, sampler, num_steps):
    videos = generator.generate(2, num_steps=num_steps, sampler=sampler, seed=0)
    assert videos.shape == (2, 3, 4, 8, 8) and videos.dtype == torch.float32
    assert videos.min() >= -1 and videos.max() <= 1


def test_generate_defaults_to_the_models_training_shape(generator):
    cfg = generator.model_config
    videos = generator.generate(1, num_steps=2, seed=0)
    assert videos.shape == (1, cfg.in_channels, cfg.frames, cfg.size, cfg.size)


def test_generate_takes_an_explicit_shape(generator):
    videos = generator.generate(1, num_frames=3, height=4, width=6, num_steps=2, seed=0)
    assert videos.shape == (1, 3, 3, 4, 6)


@pytest.mark.parametrize("shape", [dict(height=7), dict(width=5), dict(num_frames=-1)])
def test_generate_refuses_a_shape_the_unet_cannot_take(generator, shape):
    with pytest.raises(VdmError):
        generator.generate(1, num_steps=2, seed=0, **shape)


@pytest.mark.parametrize("num_steps", [0, 1001])
def test_generate_refuses_step_counts_outside_the_training_timesteps(generator, num_steps):
    with pytest.raises(VdmError, match="steps must be in 1..1000"):
        generator.generate(1, num_steps=num_steps)


def test_generate_refuses_an_unknown_sampler(generator):
    with pytest.raises(VdmError, match="unknown sampler"):
        generator.generate(1, num_steps=2, sampler="euler")


def test_generate_refuses_a_guidance_that_is_not_finite(conditional_generator):
    with pytest.raises(VdmError, match="guidance must be a finite number"):
        conditional_generator.generate(1, num_steps=2, class_label=0, guidance=float("nan"))


def test_guidance_on_an_unconditional_model_says_so(generator):
    with pytest.raises(VdmError, match="guidance needs a class-conditional model; this one is unconditional"):
        generator.generate(1, num_steps=2, guidance=2.0)


def test_guidance_without_a_class_label_asks_for_one(conditional_generator):
    with pytest.raises(VdmError, match=r"guidance needs a class label \(--class\)"):
        conditional_generator.generate(1, num_steps=2, guidance=2.0)


def test_interpolate_decodes_with_any_sampler(generator):
    a, b = uniform_video((3, 4, 8, 8), seed=1), uniform_video((3, 4, 8, 8), seed=2)
    calls = []
    predict = generator.backend.predict
    generator.backend.predict = lambda x, t, y: calls.append(x.shape[0]) or predict(x, t, y)
    videos = generator.interpolate(a, b, num_steps=6, num_interp_frames=3, sampler="unipc", decode_steps=4)
    assert videos.shape == (3, 3, 4, 8, 8)
    assert calls == [2] * 6 + [3] * 4  # DDIM inversion of both inputs, then the sampler on the three noises


def test_generate_refuses_zero_samples(generator):
    with pytest.raises(VdmError, match="num_samples"):
        generator.generate(0, num_steps=2)


def test_generate_reports_every_step(generator):
    calls = []
    generator.generate(1, num_steps=5, seed=0, on_step=lambda i, total: calls.append((i, total)))
    assert calls == [(i, 5) for i in range(5)]


# ---------------------------------------------------------------------------------------------
# Seeding


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_the_same_seed_gives_identical_videos(generator, sampler):
    first = generator.generate(2, num_steps=5, sampler=sampler, seed=7)
    second = generator.generate(2, num_steps=5, sampler=sampler, seed=7)
    assert torch.equal(first, second)


def test_stochastic_ddim_is_reproducible_from_its_seed(generator):
    first = generator.generate(1, num_steps=5, sampler="ddim", eta=1.0, seed=3)
    second = generator.generate(1, num_steps=5, sampler="ddim", eta=1.0, seed=3)
    assert torch.equal(first, second)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_different_seeds_give_different_videos(generator, sampler):
    first = generator.generate(1, num_steps=5, sampler=sampler, seed=0)
    second = generator.generate(1, num_steps=5, sampler=sampler, seed=1)
    assert not torch.equal(first, second)


# ---------------------------------------------------------------------------------------------
# Class labels and guidance


def test_class_label_generates_on_a_conditional_model(conditional_generator):
    videos = conditional_generator.generate(2, num_steps=3, seed=0, class_label=2)
    assert videos.shape == (2, 3, 4, 8, 8)
    assert videos.min() >= -1 and videos.max() <= 1


def test_guidance_changes_the_videos_of_a_conditional_model(conditional_generator):
    plain = conditional_generator.generate(1, num_steps=3, seed=0, class_label=1, guidance=1.0)
    guided = conditional_generator.generate(1, num_steps=3, seed=0, class_label=1, guidance=3.0)
    assert not torch.allclose(plain, guided)


def test_the_class_label_changes_the_videos(conditional_generator):
    zero = conditional_generator.generate(1, num_steps=3, seed=0, class_label=0)
    two = conditional_generator.generate(1, num_steps=3, seed=0, class_label=2)
    assert not torch.allclose(zero, two)


def test_each_video_may_have_its_own_class_label(conditional_generator):
    one_each = conditional_generator.generate(2, num_steps=3, seed=0, class_label=[0, 2], guidance=2.0)
    for i, label in enumerate((0, 2)):
        alone = conditional_generator.generate(2, num_steps=3, seed=0, class_label=label, guidance=2.0)
        torch.testing.assert_close(one_each[i], alone[i], rtol=1e-4, atol=1e-5)


def test_a_label_list_of_the_wrong_length_is_refused(conditional_generator):
    with pytest.raises(VdmError, match="3 class labels for 2 videos"):
        conditional_generator.generate(2, num_steps=2, class_label=[0, 1, 2])


def test_class_label_on_an_unconditional_model_is_refused(generator):
    with pytest.raises(VdmError, match="unconditional"):
        generator.generate(1, num_steps=2, class_label=0)


@pytest.mark.parametrize("label", [-1, 3, [0, 3]])
def test_class_label_outside_the_models_classes_is_refused(conditional_generator, label):
    with pytest.raises(VdmError, match="class 3 out of range" if label != -1 else "out of range"):
        conditional_generator.generate(1 if isinstance(label, int) else 2, num_steps=2, class_label=label)


# ---------------------------------------------------------------------------------------------
# DDIM inversion and interpolation


# With eps = 0, DDIM maps x0 -> sqrt(abar_T) x0 and back. What is left is float32 rounding of eps
# (~1e-7 at the scale of the previous step's x) divided by sqrt(abar_T): the cosine schedule's
# abar_T = 2.4e-9 needs steps close together at the noisy end (50 steps: ~4e-5; 10 steps: ~1.5e-4),
# the linear schedule's abar_T = 4e-5 is exact to ~1e-6 at 10 steps.
@pytest.mark.parametrize("schedule, num_steps", [("linear", 10), ("cosine", 50)])
def test_ddim_inversion_then_decoding_reconstructs_the_video_for_a_zero_noise_model(make_zero_generator,
                                                                                    schedule, num_steps):
    generator = make_zero_generator(schedule)
    video = uniform_video((1, 3, 4, 8, 8), seed=0)
    noise = generator.invert(video, num_steps=num_steps)
    decoded = sample(generator.backend, noise, sampler_for(generator.backend, "ddim", num_steps))
    torch.testing.assert_close(decoded, video, rtol=0, atol=1e-4)


def test_ddim_inversion_returns_noise_of_the_video_shape(generator):
    video = uniform_video((3, 4, 8, 8), seed=0)  # one (C, T, H, W) video
    assert generator.invert(video, num_steps=3).shape == (1, 3, 4, 8, 8)


def test_interpolate_returns_num_interp_frames_videos_of_the_input_shape(generator):
    a, b = uniform_video((3, 4, 8, 8), seed=1), uniform_video((3, 4, 8, 8), seed=2)
    videos = generator.interpolate(a, b, num_steps=3, num_interp_frames=3)
    assert videos.shape == (3, 3, 4, 8, 8)
    assert videos.min() >= -1 and videos.max() <= 1


def test_interpolation_end_points_reconstruct_the_inputs_for_a_zero_noise_model(make_zero_generator):
    a, b = uniform_video((3, 4, 8, 8), seed=1), uniform_video((3, 4, 8, 8), seed=2)
    videos = make_zero_generator("linear").interpolate(a, b, num_steps=5, num_interp_frames=4)
    torch.testing.assert_close(videos[0], a, rtol=0, atol=1e-4)
    torch.testing.assert_close(videos[-1], b, rtol=0, atol=1e-4)


def test_interpolate_refuses_videos_of_different_shapes(generator):
    with pytest.raises(VdmError, match="share a shape"):
        generator.interpolate(torch.zeros(3, 4, 8, 8), torch.zeros(3, 2, 8, 8), num_steps=2)


def test_interpolate_needs_at_least_the_two_end_points(generator):
    with pytest.raises(VdmError, match="at least 2"):
        generator.interpolate(torch.zeros(3, 4, 8, 8), torch.zeros(3, 4, 8, 8), num_steps=2, num_interp_frames=1)


def test_slerp_end_points_are_the_inputs():
    a, b = uniform_video((3, 4, 8, 8), seed=1), uniform_video((3, 4, 8, 8), seed=2)
    torch.testing.assert_close(slerp(a, b, 0.0), a, rtol=0, atol=1e-6)
    torch.testing.assert_close(slerp(a, b, 1.0), b, rtol=0, atol=1e-6)


def test_slerp_of_parallel_tensors_is_linear():
    a = uniform_video((3, 4, 8, 8), seed=1)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)


def test_torch_backend_on_cpu_uses_onednn_convolutions_with_the_same_output(tiny_checkpoint):
    from vdm.checkpoint import load_model
    from vdm.runtime.torch_backend import TorchBackend

    model, diffusion_config, _ = load_model(tiny_checkpoint)
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([300])
    with torch.inference_mode():
        reference = model(x, t)
    backend = TorchBackend(model, diffusion_config, torch.device("cpu"))
    if not backend.onednn:
        pytest.skip("this torch build has no oneDNN")
    assert not any(isinstance(m, torch.nn.Conv3d) for m in backend.model.modules())
    torch.testing.assert_close(backend.predict(x, t, None), reference, atol=1e-4, rtol=1e-4)

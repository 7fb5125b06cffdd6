"""Palette models (`[model] palette`, `[diffusion] prediction = "x0"`): the network predicts logits over
a few colours per pixel and outputs their expected colour as its clean video. Training uses the
logits' cross-entropy, sampling and every backend the clean video, so a bundle's contract is unchanged."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import _make_tiny_unet, _tiny_model_config, quiet

from vdm.checkpoint import save_checkpoint
from vdm.config import DiffusionConfig, Preset, TrainConfig, get_preset, load_config_file
from vdm.data import BACKGROUND, PALETTE, SyntheticShapes
from vdm.diffusion import Schedule, palette_colours, palette_labels, palette_loss, split_prediction
from vdm.errors import VdmError
from vdm.evaluate import held_out_loss
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.train import Trainer

CPU = torch.device("cpu")
COLOURS = (BACKGROUND, *PALETTE)
PAL = _tiny_model_config(palette=COLOURS)
X0 = DiffusionConfig(prediction="x0")


def test_a_palette_needs_x0_prediction_and_valid_colours(tmp_path):
    with pytest.raises(VdmError, match='needs \\[diffusion\\] prediction = "x0"'):
        Preset(model=PAL)
    with pytest.raises(VdmError, match="this model has no palette"):
        Preset(model=_tiny_model_config(), train=TrainConfig(palette_v_loss=1.0))
    with pytest.raises(VdmError, match="min_snr_gamma"):
        Preset(model=PAL, diffusion=X0, train=TrainConfig(min_snr_gamma=5.0))
    for bad in ([(0, 0, 0)], [(0, 0, 0), (256, 0, 0)], [(0, 0, 0), (1, 2)]):
        with pytest.raises(VdmError, match="palette must list"):
            _tiny_model_config(palette=bad)
    config = tmp_path / "p.toml"
    config.write_text('[model]\npalette = [[0, 0, 0], [255, 0, 0]]\n[diffusion]\nprediction = "x0"\n')
    preset = load_config_file(config, get_preset("tiny"))
    assert preset.model.palette == ((0, 0, 0), (255, 0, 0)) and preset.diffusion.prediction == "x0"


def test_the_output_is_the_expected_colour_of_the_logits():
    model = _make_tiny_unet(PAL)
    assert model.conv_out.out_channels == len(COLOURS)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([3, 800])
    with torch.no_grad():
        logits, out = model(x, t, logits=True), model(x, t)
    colours = palette_colours(COLOURS)  # (K, 3)
    expected = torch.einsum("bkthw,kc->bcthw", logits.softmax(1), colours)
    assert logits.shape == (2, len(COLOURS), 4, 8, 8) and out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    certain = model.palette_mix(torch.nn.functional.one_hot(torch.tensor([4]), len(COLOURS)).float().mul(50)
                                .reshape(1, -1, 1, 1, 1))
    torch.testing.assert_close(certain.flatten(), colours[4])  # sure of yellow: exactly yellow


def test_labels_read_back_each_pixels_colour_and_a_sure_right_answer_costs_nothing():
    clip = torch.from_numpy(np.stack([SyntheticShapes(frames=4, size=16, seed=s)[0] for s in range(3)]))
    colours = palette_colours(COLOURS)
    labels = palette_labels(clip, colours)  # (B, T, H, W)
    torch.testing.assert_close(colours[labels].permute(0, 4, 1, 2, 3), clip)
    assert labels.unique().numel() > 2  # background and several shapes
    sure = torch.nn.functional.one_hot(labels, len(COLOURS)).permute(0, 4, 1, 2, 3).float() * 30
    assert palette_loss(sure, clip, colours) < 1e-6
    assert palette_loss(torch.zeros_like(sure), clip, colours) == pytest.approx(math.log(len(COLOURS)))


def test_training_minimises_the_cross_entropy_from_log_k(tmp_path):
    preset = Preset(model=PAL, diffusion=X0, train=TrainConfig(steps=40, batch_size=4, lr=3e-3, warmup_steps=1,
                                                                sample_every=0, checkpoint_every=40))
    trainer = Trainer(preset, tmp_path, CPU)
    first, _ = trainer.train_step()  # zero-initialised logits: every colour equally likely
    assert float(first) == pytest.approx(math.log(len(COLOURS)), rel=1e-5)
    losses = [float(trainer.train_step()[0]) for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * float(first)


def test_palette_v_loss_adds_the_squared_error_of_the_implied_v(tmp_path):
    preset = Preset(model=PAL, diffusion=X0, train=TrainConfig(batch_size=2, palette_v_loss=0.5, sample_every=0))
    trainer = Trainer(preset, tmp_path, CPU)
    perturb = _make_tiny_unet(PAL, seed=4)
    trainer.model.load_state_dict(perturb.state_dict())
    x0 = torch.from_numpy(np.stack([SyntheticShapes(frames=4, size=8, seed=s)[0] for s in range(2)]))
    noise, t = torch.randn_like(x0), torch.tensor([30, 700])
    abar = torch.from_numpy(Schedule.from_config(X0).alphas_cumprod)[t].float().reshape(-1, 1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        logits = trainer.model(x_t, t, logits=True)
        loss = trainer.palette_loss_on(logits, x0, t)
        squared_v_error = ((x0 - trainer.model(x_t, t)) ** 2 / (1 - abar)).mean()  # v error = x0 error / sigma
    expected = palette_loss(logits, x0, palette_colours(COLOURS)) + 0.5 * squared_v_error
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)


def test_a_self_conditioned_palette_model_trains_with_the_v_loss(tmp_path):
    model = _tiny_model_config(palette=COLOURS, self_condition=True)
    preset = Preset(model=model, diffusion=X0, train=TrainConfig(steps=2, batch_size=4, warmup_steps=1,
                                                                  palette_v_loss=1.0, sample_every=0))
    trainer = Trainer(preset, tmp_path, CPU)
    losses = [float(trainer.train_step()[0]) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.fixture(scope="module")
def palette_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("palette") / "p.safetensors"
    save_checkpoint(path, _make_tiny_unet(PAL, seed=2).state_dict(), PAL, X0)
    return path


def test_sampling_takes_the_output_as_the_clean_video_and_stays_in_the_palettes_hull(palette_checkpoint):
    backend = load_backend("torch", palette_checkpoint, "cpu")
    x, t = torch.randn(1, 3, 4, 8, 8), torch.tensor([500])
    out = backend.predict(x, t, None)
    x0, eps = split_prediction(out, x, 0.5, "x0")
    torch.testing.assert_close(x0, out)
    torch.testing.assert_close(eps, (x - math.sqrt(0.5) * out) / math.sqrt(0.5))
    videos = VideoGenerator(backend=backend).generate(2, num_steps=4, seed=0)
    assert videos.shape == (2, 3, 4, 8, 8) and videos.abs().max() <= 1.0


def test_the_held_out_loss_of_an_x0_model_is_its_implied_v_loss(palette_checkpoint):
    """Scored as a v model that outputs the v the palette network's clean video implies, it loses the same."""
    palette_backend = load_backend("torch", palette_checkpoint, "cpu")
    abars = torch.from_numpy(Schedule.from_config(X0).alphas_cumprod)

    class AsV:  # the palette network's backend, its output rewritten as v = (a x_t - x0) / b
        model_config, diffusion_config, device = PAL, DiffusionConfig(), CPU
        check_shape = palette_backend.check_shape

        def predict(self, x, t, y):
            a = abars[t].sqrt().reshape(-1, 1, 1, 1, 1).float()
            return (a * x - palette_backend.predict(x, t, y)) / (1 - a * a).sqrt()

    assert held_out_loss(palette_backend, 2, 2) == pytest.approx(held_out_loss(AsV(), 2, 2), rel=1e-4)


def test_a_palette_model_exports_with_parity_and_runs_on_onnx_runtime(palette_checkpoint, tmp_path):
    from vdm.bundle import read_bundle
    from vdm.export.pipeline import ExportOptions, export_bundle

    export_bundle(palette_checkpoint, tmp_path / "b", ExportOptions(batch=2), log=quiet)
    bundle = read_bundle(tmp_path / "b")
    assert bundle.network("fp32")["parity"]["passed"] and bundle.diffusion_config.prediction == "x0"
    videos = [VideoGenerator(backend=load_backend(name, path, "cpu")).generate(2, num_steps=3, seed=1)
              for name, path in (("torch", palette_checkpoint), ("onnxruntime", tmp_path / "b"))]
    mse = float(torch.mean((videos[1] - videos[0]) ** 2))
    assert 10 * math.log10(4.0 / mse) >= 40.0  # dB, peak-to-peak 2: the bar of the other backends' tests

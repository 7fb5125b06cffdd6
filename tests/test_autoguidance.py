"""Autoguidance (runtime/autoguidance.py): a weaker model's prediction, extrapolated past, on real
checkpoints and bundles, through the sampling loop and the CLIs."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from vdm.cli.eval import main as eval_main
from vdm.cli.run import main as run_main
from vdm.config import DiffusionConfig
from vdm.errors import VdmError
from vdm.runtime.autoguidance import AutoguidedBackend, load_autoguided
from vdm.runtime.backend import load_backend
from vdm.runtime.generator import VideoGenerator
from vdm.video import read_video


@pytest.fixture
def model_and_guide(tmp_path, save_tiny_checkpoint, tiny_model_config):
    """A tiny checkpoint and a guide of half its width, with other weights (seed 1)."""
    model = save_tiny_checkpoint(tmp_path / "model.safetensors")
    narrow = dataclasses.replace(tiny_model_config, base_channels=4, num_groups=2)
    guide = save_tiny_checkpoint(tmp_path / "guide.safetensors", narrow, seed=1)
    return model, guide


def test_the_prediction_extrapolates_from_the_guide_past_the_model(model_and_guide):
    model, guide = model_and_guide
    main_backend = load_backend("torch", model, "cpu", "fp32")
    guide_backend = load_backend("torch", guide, "cpu", "fp32")
    x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    main_out, guide_out = main_backend.predict(x, t, None), guide_backend.predict(x, t, None)
    assert (main_out - guide_out).abs().max() > 1e-3  # two different networks
    guided = AutoguidedBackend(main_backend, guide_backend, 2.5, guide).predict(x, t, None)
    torch.testing.assert_close(guided, guide_out + 2.5 * (main_out - guide_out))
    torch.testing.assert_close(main_backend.predict(x, t, None), main_out)  # neither input buffer was changed

    class Refusing:  # a weight of 1 is the model alone: the guide is never asked
        def predict(self, *args):
            raise AssertionError("the guide was called")

    alone = AutoguidedBackend(main_backend, guide_backend, 1.0, guide)
    alone.guide = Refusing()
    torch.testing.assert_close(alone.predict(x, t, None), main_out)


def test_guided_sampling_differs_from_the_models_and_is_seeded(model_and_guide):
    model, guide = model_and_guide
    guided = VideoGenerator(backend=load_autoguided("torch", model, guide, 2.0, "cpu", "fp32"))
    plain = VideoGenerator(model, backend="torch", device="cpu", precision="fp32")
    first = guided.generate(2, num_steps=3, seed=5)
    assert first.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(guided.generate(2, num_steps=3, seed=5), first)
    assert (first - plain.generate(2, num_steps=3, seed=5)).abs().max() > 1e-3
    assert "autoguided by guide.safetensors (weight 2)" in guided.backend.describe()


def test_a_guide_from_another_recipe_or_shape_is_refused(tmp_path, save_tiny_checkpoint, tiny_model_config,
                                                         model_and_guide):
    model, _ = model_and_guide
    shifted = save_tiny_checkpoint(tmp_path / "shifted.safetensors", diffusion_config=DiffusionConfig(noise_shift=2.0))
    with pytest.raises(VdmError, match="another diffusion process"):
        load_autoguided("torch", model, shifted, 1.5, "cpu", "fp32")
    longer = save_tiny_checkpoint(tmp_path / "longer.safetensors", dataclasses.replace(tiny_model_config, frames=8))
    with pytest.raises(VdmError, match="frames 8, the model 4"):
        load_autoguided("torch", model, longer, 1.5, "cpu", "fp32")
    for weight in (0.5, float("nan"), float("inf")):
        with pytest.raises(VdmError, match="--autoguide-weight must be a finite number >= 1"):
            load_autoguided("torch", model, model, weight, "cpu", "fp32")


def test_an_unconditional_guide_guides_a_conditional_model_with_its_own_prediction(
        tmp_path, save_tiny_checkpoint, tiny_model_config, model_and_guide):
    _, guide = model_and_guide
    conditional = save_tiny_checkpoint(tmp_path / "cond.safetensors", dataclasses.replace(tiny_model_config, num_classes=3))
    guided = load_autoguided("torch", conditional, guide, 2.0, "cpu", "fp32")
    x, t, y = torch.randn(2, 3, 4, 8, 8), torch.tensor([10, 900]), torch.tensor([0, 2])
    main_out = guided.main.predict(x, t, y)
    torch.testing.assert_close(guided.predict(x, t, y), torch.lerp(guided.guide.predict(x, t, None), main_out, 2.0))
    other = save_tiny_checkpoint(tmp_path / "other.safetensors", dataclasses.replace(tiny_model_config, num_classes=4))
    with pytest.raises(VdmError, match="a conditional guide must share the model's labels"):
        load_autoguided("torch", conditional, other, 1.5, "cpu", "fp32")


def test_vdm_run_autoguided_writes_videos_and_refuses_bad_flags(model_and_guide, tmp_path):
    model, guide = model_and_guide
    args = [str(model), "--steps", "2", "-n", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(run_main, [*args, "--autoguide", str(guide), "--autoguide-weight", "2"])
    assert result.exit_code == 0, result.output
    assert "autoguided by guide.safetensors (weight 2)" in result.output
    assert read_video(tmp_path / "out" / "sample_000.mp4").shape == (4, 8, 8, 3)

    for extra, message in ((["--autoguide-weight", "2"], "--autoguide-weight needs --autoguide GUIDE"),
                           (["--autoguide", str(guide), "--autoguide-weight", "0.5"], "must be a finite number >= 1"),
                           (["--autoguide", str(tmp_path / "none.safetensors")], "none.safetensors does not exist")):
        result = CliRunner().invoke(run_main, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_vdm_eval_scores_the_guided_videos_and_the_models_own_loss(model_and_guide, tmp_path):
    import json

    model, guide = model_and_guide
    args = [str(model), "-n", "2", "--steps", "2", "--device", "cpu", "--loss-batches", "1", "--one-step-snr", "0"]
    plain = CliRunner().invoke(eval_main, [*args, "--json", str(tmp_path / "plain.json")])
    guided = CliRunner().invoke(eval_main, [*args, "--autoguide", str(guide), "--json", str(tmp_path / "guided.json")])
    assert plain.exit_code == 0 and guided.exit_code == 0, plain.output + guided.output
    plain, guided = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "guided"))
    assert guided["held_out_loss"] == plain["held_out_loss"]  # the model's own network
    assert (guided["autoguide"], guided["autoguide_weight"]) == (str(guide), 1.5)
    assert plain["autoguide"] is None


def test_bundles_are_guided_by_bundles_as_checkpoints_by_checkpoints(tiny_bundle, tiny_bundle_checkpoint,
                                                                      model_and_guide, tmp_path):
    from tests.conftest import quiet
    from vdm.export.pipeline import ExportOptions, export_bundle

    _, guide = model_and_guide
    guide_bundle = tmp_path / "guide-bundle"
    export_bundle(guide, guide_bundle, ExportOptions(batch=2, exporter="torchscript"), log=quiet)
    by_onnxruntime = load_autoguided("onnxruntime", tiny_bundle, guide_bundle, 2.0, "cpu", "fp32")
    by_torch = load_autoguided("torch", tiny_bundle_checkpoint, guide, 2.0, "cpu", "fp32")
    x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    torch.testing.assert_close(by_onnxruntime.predict(x, t, None), by_torch.predict(x, t, None),
                               rtol=1e-4, atol=1e-4)

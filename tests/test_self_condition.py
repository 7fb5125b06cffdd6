"""Self-conditioning (`[model] self_condition = true`): the network also reads its previous clean-video
estimate. Training feeds it the network's own estimate for half the clips, sampling the previous
step's, a plain checkpoint grafts onto it unchanged, and every backend runs its 2C-in, C-out network."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import _make_tiny_unet, _tiny_model_config, quiet

from vdm.checkpoint import load_model, save_checkpoint
from vdm.config import DiffusionConfig, Preset, TrainConfig
from vdm.diffusion import Schedule, split_prediction, with_estimate
from vdm.runtime.generator import VideoGenerator
from vdm.runtime.sampling import sampler_for
from vdm.runtime.torch_backend import TorchBackend
from vdm.train import Trainer, zero_estimate_inputs

CPU = torch.device("cpu")
SELF = _tiny_model_config(self_condition=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return 200.0 if mse == 0 else 10 * math.log10(4.0 / mse)


@pytest.fixture(scope="module")
def self_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("self") / "self.safetensors"
    save_checkpoint(path, _make_tiny_unet(SELF, seed=3).state_dict(), SELF, DiffusionConfig())
    return path


def test_the_network_reads_2c_channels_and_predicts_c():
    model = _make_tiny_unet(SELF)
    assert model.conv_in.in_channels == 6 and model.conv_out.out_channels == 3
    x = torch.randn(2, 3, 4, 8, 8)
    with torch.no_grad():
        assert model(with_estimate(x, torch.zeros_like(x)), torch.tensor([1, 900])).shape == x.shape
    with pytest.raises(ValueError, match=r"expected x of shape \(B, 6, T, H, W\)"):
        model(x, torch.tensor([1, 900]))


def test_a_plain_checkpoint_grafts_on_and_computes_what_it_did_whatever_the_estimate(tmp_path):
    plain_config = _tiny_model_config()
    plain = _make_tiny_unet(plain_config, seed=1)
    path = tmp_path / "plain.safetensors"
    save_checkpoint(path, plain.state_dict(), plain_config, DiffusionConfig())
    preset = Preset(model=SELF, diffusion=DiffusionConfig(), train=TrainConfig(steps=2, batch_size=2, warmup_steps=1,
                                                                                sample_every=0))
    trainer = Trainer(preset, tmp_path / "run", CPU)
    assert trainer.init_from(path) == []
    assert torch.equal(trainer.model.conv_in.weight, zero_estimate_inputs(plain.conv_in.weight))
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([5, 900])
    with torch.no_grad():
        expected = plain(x, t)
        for estimate in (torch.zeros_like(x), torch.rand_like(x) * 2 - 1):
            torch.testing.assert_close(trainer.ema.eval()(with_estimate(x, estimate), t), expected)
    trainer.run()  # and it trains: the estimate's input weights leave zero
    assert trainer.model.conv_in.weight[:, 3:].abs().sum() > 0


def test_training_feeds_the_networks_own_clipped_estimate_to_the_chosen_clips_and_zeros_to_the_others(tmp_path):
    preset = Preset(model=SELF, diffusion=DiffusionConfig(), train=TrainConfig(batch_size=4, sample_every=0))
    trainer = Trainer(preset, tmp_path, CPU)
    t, _, _, _, chosen = trainer.draws(0, torch.Size((4, 3, 4, 8, 8)))
    assert chosen is not None and chosen.dtype == torch.bool
    chosen = torch.tensor([True, False, True, False])
    x_t = torch.randn(4, 3, 4, 8, 8)
    net_in = trainer.self_conditioned(x_t, t, None, chosen)
    assert net_in.shape == (4, 6, 4, 8, 8) and torch.equal(net_in[:, :3], x_t)
    schedule = Schedule.from_config(preset.diffusion)
    with torch.no_grad():
        out = trainer.model(with_estimate(x_t, torch.zeros_like(x_t)), t)
    for i in range(4):
        expected = split_prediction(out[i:i + 1], x_t[i:i + 1], float(schedule.alphas_cumprod[t[i]]), "v")[0]
        if chosen[i]:
            torch.testing.assert_close(net_in[i:i + 1, 3:], expected, rtol=1e-5, atol=1e-5)
        else:
            assert not net_in[i, 3:].any()


class Recording(TorchBackend):
    """The torch backend, keeping every network input."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs: list[torch.Tensor] = []

    def predict(self, x, t, y):
        self.inputs.append(x.clone())
        return super().predict(x, t, y)


def test_sampling_feeds_each_step_the_previous_steps_clipped_estimate(self_checkpoint):
    model, diffusion_config, _ = load_model(self_checkpoint)
    backend = Recording(model, diffusion_config, CPU)
    VideoGenerator(backend=backend).generate(2, num_steps=4, sampler="ddim", seed=0)
    assert len(backend.inputs) == 4 and not backend.inputs[0][:, 3:].any()
    abars = Schedule.from_config(diffusion_config).alphas_cumprod
    timesteps = sampler_for(backend, "ddim", 4).timesteps
    with torch.no_grad():
        for i in range(3):
            x = backend.inputs[i]
            out = model(x, torch.full((2,), timesteps[i]))
            x0 = split_prediction(out, x[:, :3], float(abars[timesteps[i]]), "v")[0]
            torch.testing.assert_close(backend.inputs[i + 1][:, 3:], x0, rtol=1e-5, atol=1e-5)
    assert backend.inputs[1][:, 3:].abs().max() <= 1.0


def test_ddim_inversion_reads_the_known_clean_video_as_its_estimate(self_checkpoint):
    model, diffusion_config, _ = load_model(self_checkpoint)
    backend = Recording(model, diffusion_config, CPU)
    video = torch.rand(1, 3, 4, 8, 8) * 2 - 1
    VideoGenerator(backend=backend).invert(video, num_steps=3)
    assert len(backend.inputs) == 3 and all(torch.equal(x[:, 3:], video) for x in backend.inputs)


@pytest.fixture(scope="module")
def self_bundle(tmp_path_factory, self_checkpoint):
    pytest.importorskip("onnxruntime", reason="vdm-export needs onnx and onnxruntime")
    from vdm.export.pipeline import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("self_bundle") / "b"
    export_bundle(self_checkpoint, out, ExportOptions(exporter="torchscript"), log=quiet)
    return out


def test_the_bundle_declares_2c_in_and_c_out_and_passes_parity(self_bundle):
    from vdm.bundle import read_bundle

    network = read_bundle(self_bundle).network("fp32")
    assert network["inputs"][0]["shape"][1] == 6 and network["outputs"][0]["shape"][1] == 3
    assert network["parity"]["passed"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bundle_backends_make_the_torch_backends_videos(self_bundle, self_checkpoint, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the openvino backend needs openvino")
    args = dict(num_samples=2, num_steps=5, sampler="unipc", seed=4)
    # fp32 on both: auto picks bf16 on CPUs with bf16 units (avx512_bf16, AMX), 34 dB here
    reference = VideoGenerator(self_checkpoint, backend="torch", device="cpu", precision="fp32").generate(**args)
    videos = VideoGenerator(self_bundle, backend=backend, device="cpu", precision="fp32").generate(**args)
    assert videos.shape == reference.shape and psnr(videos, reference) >= 40.0


def test_vdm_eval_scores_a_self_conditioning_checkpoint(self_checkpoint, tmp_path):
    import json

    from vdm.cli.eval import main as eval_main

    result = CliRunner().invoke(eval_main, [str(self_checkpoint), "--device", "cpu", "-n", "2", "--steps", "3",
                                            "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert np.isfinite(report["held_out_loss"])

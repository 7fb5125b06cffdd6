"""Specification of training (vdm.train): what a run directory holds, exact resume, gradient
accumulation, divergence handling, conditional training, and the `vdm-train` command line."""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import vdm.train
from vdm.checkpoint import load_model, load_torch
from vdm.config import DiffusionConfig, ModelConfig, Preset, TrainConfig
from vdm.errors import TrainingDiverged, VdmError
from vdm.distributed import Ranks
from vdm.train import StepStats, Trainer, update_ema
from vdm.video import read_video

CPU = torch.device("cpu")

# The tiny model of conftest.py (tiny_model_config), as a vdm-train config file.
TINY_TOML = """\
[model]
base_channels = 8
channel_multiples = [1, 2]
num_res_blocks = 1
attention_levels = [1]
num_heads = 2
num_groups = 4
frames = 4
size = 8

[train]
warmup_steps = 1
sample_steps = 2
num_samples = 1
"""


def tiny_model() -> ModelConfig:
    return ModelConfig(**tomllib.loads(TINY_TOML)["model"])


def test_the_tiny_toml_is_the_shared_tiny_model(tiny_model_config):
    assert tiny_model() == tiny_model_config


def tiny_preset(model_config: ModelConfig, **train) -> Preset:
    """A preset that trains the given tiny model: batch 2, every step logged and checkpointed."""
    options = dict(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=1,
                   sample_every=0, sample_steps=2, num_samples=1)
    return Preset(model=model_config, diffusion=DiffusionConfig(), train=TrainConfig(**{**options, **train}))


def run(preset: Preset, out: Path, resume_at: int | None = None) -> Trainer:
    """Train to preset.train.steps; with resume_at, first resume from `out` and check the step reached."""
    trainer = Trainer(preset, out, CPU)
    if resume_at is not None:
        trainer.resume()
        assert trainer.step == resume_at
    trainer.run()
    return trainer


# ---------------------------------------------------------------------------------------------
# A short run and what it leaves behind


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """The run directory of a finished 2-step run of the tiny model (shared: the tests only read it)."""
    out = tmp_path_factory.mktemp("short_run")
    run(tiny_preset(tiny_model()), out)
    return out


def test_a_run_leaves_an_inference_checkpoint_of_its_last_step(short_run):
    model, diffusion_config, metadata = load_model(short_run / "checkpoints" / "latest.safetensors")
    assert metadata["step"] == "2"
    assert diffusion_config == DiffusionConfig()
    assert model.cfg.base_channels == 8


def test_a_run_leaves_a_training_state_to_resume_from(short_run):
    state = load_torch(short_run / "checkpoints" / "train_state.pt")
    assert state["step"] == 2
    assert state["world_size"] == 1
    assert {"model", "ema", "optimizer", "config"} <= set(state)


def test_a_run_logs_finite_losses_for_every_step(short_run):
    lines = [json.loads(line) for line in (short_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert all(math.isfinite(line["loss"]) and math.isfinite(line["grad_norm"]) for line in lines)


def test_a_run_writes_its_configs(short_run):
    configs = json.loads((short_run / "config.json").read_text())
    assert set(configs) == {"model", "diffusion", "train"}
    assert configs["train"]["steps"] == 2


def test_a_run_writes_sample_videos_of_the_model_shape_at_the_end(short_run):
    folder = short_run / "samples" / "step_000002"
    assert read_video(folder / "sample_000.mp4").shape == (4, 8, 8, 3)  # (T, H, W, RGB)
    assert len(read_video(folder / "grid.gif")) >= 1  # Pillow may merge identical frames


# ---------------------------------------------------------------------------------------------
# Exact resume


def all_tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory) -> tuple[Trainer, Trainer]:
    """4 steps in one go, and 2 steps + a fresh Trainer resumed from disk at step 2 + 2 more steps."""
    cfg = dataclasses.replace(tiny_model(), dropout=0.1)  # dropout draws from the saved torch RNG
    straight = run(tiny_preset(cfg, steps=4), tmp_path_factory.mktemp("straight"))
    out = tmp_path_factory.mktemp("resumed")
    run(tiny_preset(cfg, steps=2), out)
    resumed = run(tiny_preset(cfg, steps=4), out, resume_at=2)
    return straight, resumed


def test_a_resumed_run_continues_its_metrics_from_the_saved_step(straight_and_resumed):
    _, resumed = straight_and_resumed
    lines = (resumed.out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_a_resumed_run_has_bit_identical_raw_weights(straight_and_resumed):
    straight, resumed = straight_and_resumed
    assert resumed.step == straight.step == 4
    assert all_tensors_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_a_resumed_run_has_bit_identical_ema_weights(straight_and_resumed):
    straight, resumed = straight_and_resumed
    assert all_tensors_equal(straight.ema.state_dict(), resumed.ema.state_dict())


def test_stopping_early_then_resuming_keeps_the_schedule_of_the_whole_run(tmp_path):
    preset = tiny_preset(tiny_model(), steps=4, lr_schedule="cosine")
    straight = run(preset, tmp_path / "straight")
    stopped = Trainer(preset, tmp_path / "stopped", CPU)
    stopped.run(stop_at=2)
    assert stopped.step == 2 and load_torch(tmp_path / "stopped" / "checkpoints" / "train_state.pt")["step"] == 2
    resumed = run(preset, tmp_path / "stopped", resume_at=2)
    assert all_tensors_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert all_tensors_equal(straight.ema.state_dict(), resumed.ema.state_dict())
    with pytest.raises(VdmError, match="--stop-at 3: this run is already at step 4"):
        resumed.run(stop_at=3)


def test_resuming_a_finished_run_trains_no_more(tmp_path):
    preset = tiny_preset(tiny_model(), steps=2)
    run(preset, tmp_path)
    assert run(preset, tmp_path, resume_at=2).step == 2  # nothing to do, and no --stop-at to complain about


def test_resume_with_a_different_model_config_is_refused(tmp_path, tiny_model_config):
    run(tiny_preset(tiny_model_config, steps=1), tmp_path)
    wider = Trainer(tiny_preset(dataclasses.replace(tiny_model_config, base_channels=16)), tmp_path, CPU)
    with pytest.raises(VdmError, match="different model/diffusion config"):
        wider.resume()


def test_resume_without_a_training_state_is_refused(tmp_path, tiny_model_config):
    with pytest.raises(VdmError, match="no training state"):
        Trainer(tiny_preset(tiny_model_config), tmp_path, CPU).resume()


def test_resume_accepts_a_training_state_saved_before_a_model_field_existed(tmp_path, tiny_model_config):
    run(tiny_preset(tiny_model_config, steps=1), tmp_path)
    path = tmp_path / "checkpoints" / "train_state.pt"
    state = load_torch(path)
    del state["config"]["model"]["joint_attention_levels"]  # as written by an older vdm
    torch.save(state, path)
    run(tiny_preset(tiny_model_config, steps=2), tmp_path, resume_at=1)


# ---------------------------------------------------------------------------------------------
# Fine-tuning: --init-from


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    """latest.safetensors of a 2-step run of the tiny model."""
    out = tmp_path_factory.mktemp("trained")
    run(tiny_preset(tiny_model()), out)
    return out / "checkpoints" / "latest.safetensors"


def test_init_from_loads_the_checkpoint_into_the_model_and_its_ema(tmp_path, trained_checkpoint):
    trainer = Trainer(tiny_preset(tiny_model()), tmp_path, CPU)
    assert trainer.init_from(trained_checkpoint) == []
    saved, _, _ = load_model(trained_checkpoint)
    assert all_tensors_equal(trainer.model.state_dict(), saved.state_dict())
    assert all_tensors_equal(trainer.ema.state_dict(), saved.state_dict())


def test_init_from_with_added_joint_attention_starts_computing_what_the_checkpoint_did(tmp_path, trained_checkpoint):
    grown = dataclasses.replace(tiny_model(), joint_attention_levels=(1,))
    trainer = Trainer(tiny_preset(grown), tmp_path, CPU)
    fresh = trainer.init_from(trained_checkpoint)
    assert fresh and all(".joints." in name or name.startswith("mid_joint.") for name in fresh)
    saved, _, _ = load_model(trained_checkpoint)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([5, 900])
    with torch.no_grad():
        torch.testing.assert_close(trainer.ema.eval()(x, t), saved(x, t), rtol=1e-5, atol=1e-5)
    trainer.run()  # and it trains: the joint attention's output projections leave zero
    assert trainer.model.mid_joint.out.weight.abs().sum() > 0


@pytest.mark.parametrize("label_embedding", ["table", "shared", "shared_count"])
def test_init_from_an_unconditional_checkpoint_starts_every_class_computing_what_it_did(tmp_path, trained_checkpoint,
                                                                                      label_embedding):
    conditional = dataclasses.replace(tiny_model(), num_classes=63, class_label="colors",
                                      label_embedding=label_embedding)
    trainer = Trainer(tiny_preset(conditional), tmp_path, CPU)
    assert trainer.init_from(trained_checkpoint) == []
    saved, _, _ = load_model(trained_checkpoint)
    x, t, y = torch.randn(2, 3, 4, 8, 8), torch.tensor([5, 900]), torch.tensor([62, 63])  # a class, the null class
    with torch.no_grad():
        torch.testing.assert_close(trainer.ema.eval()(x, t, y), saved(x, t), rtol=1e-5, atol=1e-5)
    trainer.run()  # and it trains: the class vectors leave zero
    class_vectors = [p for name, p in trainer.model.named_parameters() if name.startswith("embedding.class_embed.")]
    assert len(class_vectors) == 1 and class_vectors[0].abs().sum() > 0


def test_init_from_a_colors_checkpoint_starts_each_shapes_label_computing_what_its_colours_did(
        tmp_path, save_tiny_checkpoint):
    colors = save_tiny_checkpoint(tmp_path / "colors.safetensors",
                                  dataclasses.replace(tiny_model(), num_classes=63, class_label="colors"))
    trainer = Trainer(tiny_preset(dataclasses.replace(tiny_model(), num_classes=728, class_label="shapes")),
                      tmp_path / "run", CPU)
    assert trainer.init_from(colors) == []
    saved, _, _ = load_model(colors)
    # red square + blue disc = 1 * 3 ** 0 + 2 * 3 ** 2 - 1; its colours red + blue = 2 ** 0 + 2 ** 2 - 1;
    # then the null classes
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([5, 900])
    shapes, colors = torch.tensor([18, 728]), torch.tensor([4, 63])
    with torch.no_grad():
        torch.testing.assert_close(trainer.ema.eval()(x, t, shapes), saved(x, t, colors), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(saved(x, t, torch.tensor([5, 63])), saved(x, t, colors))  # the label matters


def test_init_from_refuses_a_checkpoint_with_weights_the_model_lacks(tmp_path, save_tiny_checkpoint):
    ckpt = save_tiny_checkpoint(tmp_path / "joint.safetensors", dataclasses.replace(tiny_model(), joint_attention_levels=(1,)))
    with pytest.raises(VdmError, match=r"do not match the model config \(0 missing, \d+ unexpected, e.g. .*joint"):
        Trainer(tiny_preset(tiny_model()), tmp_path / "run", CPU).init_from(ckpt)


def test_init_from_refuses_a_checkpoint_of_another_width(tmp_path, trained_checkpoint):
    wider = Trainer(tiny_preset(dataclasses.replace(tiny_model(), base_channels=16)), tmp_path, CPU)
    with pytest.raises(VdmError, match="has shape .* the model config needs"):
        wider.init_from(trained_checkpoint)


def test_init_from_refuses_a_checkpoint_of_another_diffusion_config(tmp_path, trained_checkpoint):
    preset = dataclasses.replace(tiny_preset(tiny_model()), diffusion=DiffusionConfig(prediction="epsilon"))
    with pytest.raises(VdmError, match="diffusion config"):
        Trainer(preset, tmp_path, CPU).init_from(trained_checkpoint)


# ---------------------------------------------------------------------------------------------
# One step's variants


def test_gradient_accumulation_takes_a_finite_step(tmp_path, tiny_model_config):
    trainer = Trainer(tiny_preset(tiny_model_config, batch_size=4, grad_accum=2), tmp_path, CPU)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss, grad_norm = trainer.train_step()
    assert math.isfinite(loss) and math.isfinite(grad_norm)
    assert not all_tensors_equal(before, trainer.model.state_dict())


def test_conditional_training_on_synthetic_data_runs_and_samples(tmp_path, tiny_model_config):
    cfg = dataclasses.replace(tiny_model_config, num_classes=3)
    run(tiny_preset(cfg, steps=1), tmp_path)
    model, _, _ = load_model(tmp_path / "checkpoints" / "latest.safetensors")
    assert model.cfg.num_classes == 3
    assert (tmp_path / "samples" / "step_000001" / "sample_000.mp4").is_file()


@pytest.fixture
def nan_after_first_step(monkeypatch):
    """training_loss is real for the first call, then NaN (still attached to the graph)."""
    real = vdm.train.training_loss
    calls = []

    def loss(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value if len(calls) == 1 else value * float("nan")

    monkeypatch.setattr(vdm.train, "training_loss", loss)


def test_a_nan_loss_stops_training_with_training_diverged(tmp_path, tiny_model_config, nan_after_first_step):
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1"):
        run(tiny_preset(tiny_model_config, steps=3), tmp_path)


def test_a_nan_loss_keeps_the_last_good_checkpoint_loadable(tmp_path, tiny_model_config, nan_after_first_step):
    with pytest.raises(TrainingDiverged):
        run(tiny_preset(tiny_model_config, steps=3), tmp_path)
    model, _, metadata = load_model(tmp_path / "checkpoints" / "latest.safetensors")
    assert metadata["step"] == "1"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_step_returns_its_loss_and_grad_norm_as_tensors_on_the_device(tmp_path, tiny_model_config):
    loss, grad_norm = Trainer(tiny_preset(tiny_model_config), tmp_path, CPU).train_step()
    assert isinstance(loss, torch.Tensor) and loss.shape == () and loss.device == CPU
    assert isinstance(grad_norm, torch.Tensor) and grad_norm.shape == ()


def test_a_steps_draws_depend_only_on_the_seed_and_the_step(tmp_path, tiny_model_config):
    trainer = Trainer(tiny_preset(tiny_model_config), tmp_path, CPU)
    shape = torch.Size((2, 3, 4, 8, 8))
    t1, noise1, _, _, _ = trainer.draws(5, shape)
    trainer.draws(6, shape)
    t2, noise2, _, _, _ = trainer.draws(5, shape)
    assert torch.equal(t1, t2) and torch.equal(noise1, noise2)
    assert not torch.equal(noise1, trainer.draws(6, shape)[1])


def test_input_perturbation_adds_scaled_noise_and_leaves_the_other_draws_as_they_were(tmp_path, tiny_model_config):
    plain = Trainer(tiny_preset(tiny_model_config), tmp_path / "plain", CPU)
    perturbed = Trainer(tiny_preset(tiny_model_config, input_perturbation=0.1), tmp_path / "ip", CPU)
    shape = torch.Size((2, 3, 4, 8, 8))
    t, noise, none, *_ = plain.draws(3, shape)
    t_ip, noise_ip, perturbation, *_ = perturbed.draws(3, shape)
    assert none is None
    assert torch.equal(t, t_ip) and torch.equal(noise, noise_ip)  # a paired run: only the input differs
    assert perturbation.shape == shape and abs(perturbation.std().item() - 0.1) < 0.02
    assert torch.equal(perturbation, perturbed.draws(3, shape)[2])  # seeded by step


def test_input_perturbation_changes_what_the_network_reads_not_its_target(tmp_path, tiny_model_config):
    trainer = Trainer(tiny_preset(tiny_model_config, input_perturbation=0.1), tmp_path, CPU)
    trainer.network.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # the output convolution starts at zero, which would read nothing
        for weight in trainer.network.parameters():
            weight.normal_(0, 0.1)
    x0 = torch.rand((2, 3, 4, 8, 8)) * 2 - 1
    t, noise, perturbation, _, _ = trainer.draws(0, x0.shape)
    with torch.no_grad():
        perturbed = trainer.loss_on(x0, t, noise, perturbation, None, None)
        plain = trainer.loss_on(x0, t, noise, None, None, None)
        # Noising the input with noise + perturbation while the target keeps `noise` is not the plain loss
        # with the perturbed noise as both input and target.
        moved = trainer.loss_on(x0, t, noise + perturbation, None, None, None)
    assert perturbed != plain and perturbed != moved
    assert trainer.train_step()[0].isfinite()


@pytest.mark.parametrize("gamma", [-0.1, math.nan, math.inf])
def test_a_bad_input_perturbation_is_refused_by_name(gamma):
    with pytest.raises(VdmError, match="input_perturbation must be >= 0"):
        TrainConfig(input_perturbation=gamma)


def test_an_snr_range_draws_only_the_timesteps_whose_snr_lies_in_it(tmp_path, tiny_model_config):
    trainer = Trainer(tiny_preset(tiny_model_config, snr_range=(1.0, math.inf)), tmp_path, CPU)
    abar = trainer.schedule.alphas_cumprod
    t = torch.cat([trainer.draws(step, torch.Size((2, 3, 4, 8, 8)))[0] for step in range(200)])
    snr = abar[t] / (1 - abar[t])
    first, count = trainer.timesteps
    assert first == 0 and snr.min() >= 1 and t.max() >= 0.9 * count  # the range, and most of it
    assert abar[count] / (1 - abar[count]) < 1  # the next timestep is out of it
    assert trainer.train_step()[0].isfinite()


@pytest.mark.parametrize("bounds", [1, [1], [3, 1], ["a", "b"], [-1, 1]])
def test_a_malformed_snr_range_is_refused_by_name(bounds):
    with pytest.raises(VdmError, match=r"snr_range must be \[low, high\] with 0 <= low < high"):
        TrainConfig(snr_range=bounds)


def test_log_snr_sampling_draws_timesteps_around_its_mean_within_the_snr_range(tmp_path, tiny_model_config):
    uniform = Trainer(tiny_preset(tiny_model_config), tmp_path / "u", CPU)
    trainer = Trainer(tiny_preset(tiny_model_config, log_snr_sampling=(2.0, 0.5), snr_range=(1.0, math.inf)),
                      tmp_path / "n", CPU)
    abar = torch.as_tensor(trainer.schedule.alphas_cumprod)
    shape = torch.Size((2, 3, 4, 8, 8))

    def log_snrs(t):
        return torch.log(abar[t] / (1 - abar[t]))

    t = torch.cat([trainer.draws(step, shape)[0] for step in range(300)])
    assert abs(log_snrs(t).mean() - 2.0) < 0.15 and abs(log_snrs(t).std() - 0.5) < 0.1
    assert log_snrs(t).min() >= 0  # SNR >= 1: the range still holds
    assert torch.equal(t, torch.cat([trainer.draws(step, shape)[0] for step in range(300)]))  # seeded by step
    wide = log_snrs(torch.cat([uniform.draws(step, shape)[0] for step in range(300)]))
    assert wide.std() > 2.5  # uniform timesteps spread ln SNR far wider
    assert trainer.train_step()[0].isfinite()


@pytest.mark.parametrize("spread", [1, [0.0], [0.0, 0.0], [0.0, -1.0], ["a", 1.0], [math.nan, 1.0]])
def test_a_malformed_log_snr_sampling_is_refused_by_name(spread):
    with pytest.raises(VdmError, match=r"log_snr_sampling must be \[mean, std\] with std > 0"):
        TrainConfig(log_snr_sampling=spread)


def test_log_snr_sampling_that_misses_the_snr_range_is_refused(tmp_path, tiny_model_config):
    with pytest.raises(VdmError, match="log_snr_sampling .* puts no weight on the trained timesteps"):
        Trainer(tiny_preset(tiny_model_config, log_snr_sampling=(-30.0, 0.1), snr_range=(1.0, math.inf)), tmp_path, CPU)


def test_without_an_snr_range_every_timestep_can_be_drawn(tmp_path, tiny_model_config):
    trainer = Trainer(tiny_preset(tiny_model_config), tmp_path, CPU)
    assert trainer.timesteps == (0, trainer.schedule.num_timesteps)


@pytest.mark.gpu
def test_a_cuda_step_never_waits_for_the_gpu(tmp_path, tiny_model_config):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    trainer = Trainer(tiny_preset(tiny_model_config, steps=5, workers=0), tmp_path, torch.device("cuda"))
    trainer.train_step()  # the first step initializes (cuDNN, allocator)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.check_finite()
    assert trainer.stats.means(Ranks())[0] > 0


@pytest.mark.parametrize("layout, expected", [("auto", torch.channels_last_3d), ("contiguous", torch.contiguous_format)])
def test_the_memory_format_setting_picks_the_activation_layout(tmp_path, tiny_model_config, layout, expected):
    trainer = Trainer(tiny_preset(tiny_model_config, memory_format=layout), tmp_path, CPU)
    assert trainer.memory_format == expected
    assert trainer.model.conv_in.weight.is_contiguous(memory_format=expected)


def test_an_unknown_memory_format_is_refused():
    with pytest.raises(VdmError, match="memory_format must be one of auto, contiguous, channels_last_3d"):
        TrainConfig(memory_format="nhwc")


@pytest.mark.parametrize("asked, device, flags, expected", [
    ("auto", "cpu", {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "bf16"),  # AMX: measured 1.5x the steps/s
    ("auto", "cpu", {"avx512f", "avx512_bf16"}, "fp32"),  # AVX-512 bf16 alone: bf16 measured slower
    ("auto", "cpu", {"avx2", "fma"}, "fp32"),
    ("auto", "cuda", set(), "bf16"),
    ("fp32", "cuda", set(), "fp32"),
    ("bf16", "cpu", {"avx2"}, "bf16"),  # asked for: taken even where it is slow
])
def test_the_precision_setting_picks_bf16_autocast_where_it_is_faster(asked, device, flags, expected):
    assert vdm.train.training_precision(asked, torch.device(device), flags) == expected


def output_conv_dtypes(trainer: Trainer) -> list[torch.dtype]:
    """The dtypes the network's last convolution computed in, in one training step of `trainer` (the
    network returns float32 either way)."""
    seen = []
    handle = trainer.model.conv_out.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        trainer.train_step()
    finally:
        handle.remove()
    return seen


def test_a_bf16_cpu_step_computes_in_bf16_and_keeps_fp32_weights_and_a_close_loss(tmp_path, tiny_model_config):
    fp32, bf16 = (Trainer(tiny_preset(tiny_model_config, precision=p), tmp_path / p, CPU) for p in ("fp32", "bf16"))
    assert output_conv_dtypes(fp32) == [torch.float32]
    assert output_conv_dtypes(bf16) == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(p.dtype == torch.float32 for p in bf16.ema.parameters())
    # The same seed draws the same clips, timesteps and noise: step 1's losses differ by bf16 rounding only.
    losses = [trainer.train_step()[0].item() for trainer in (fp32, bf16)]
    assert losses[1] == pytest.approx(losses[0], rel=0.02)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["channels_last_3d", "contiguous"])
def test_every_weights_gradient_comes_in_the_weights_own_strides(tmp_path, tiny_model_config, precision, layout):
    """What DDP's gradient buckets need to take gradients without a copy (and without a warning)."""
    trainer = Trainer(tiny_preset(tiny_model_config, precision=precision, memory_format=layout), tmp_path, CPU)
    trainer.train_step()
    for name, param in trainer.model.named_parameters():
        assert param.grad.stride() == param.stride(), name


def test_an_unknown_precision_is_refused():
    with pytest.raises(VdmError, match="precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")


def test_update_ema_moves_every_weight_by_one_minus_the_ramped_decay():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.99, step=0)  # early steps use d = (1 + step) / (10 + step) = 0.1
    for e, b, m in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * m)


def test_step_stats_average_the_steps_since_the_last_reset():
    stats = StepStats(CPU)
    stats.add(0, torch.tensor(9.0), torch.tensor(1.0))
    stats.reset()
    stats.add(1, torch.tensor(1.0), torch.tensor(2.0))
    stats.add(2, torch.tensor(3.0), torch.tensor(4.0))
    assert stats.means(Ranks()) == (2.0, 3.0)
    assert stats.divergence(Ranks()) is None


def test_step_stats_name_the_first_step_that_was_not_finite():
    stats = StepStats(CPU)
    stats.add(4, torch.tensor(1.0), torch.tensor(2.0))
    stats.add(5, torch.tensor(1.0), torch.tensor(float("inf")))
    stats.add(6, torch.tensor(float("nan")), torch.tensor(float("nan")))
    stats.reset()  # a metrics line in between does not forget it
    assert stats.divergence(Ranks()) == "gradient norm became inf at step 5"


def test_a_compiled_network_trains_the_same_weights_and_saves_plain_names(tmp_path, tiny_model_config, monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="eager"))  # no C++ build
    compiled = run(tiny_preset(tiny_model_config, compile=True), tmp_path / "compiled")
    plain = run(tiny_preset(tiny_model_config), tmp_path / "plain")
    assert compiled.network is not compiled.model
    saved = load_torch(tmp_path / "compiled" / "checkpoints" / "train_state.pt")["model"]
    assert saved.keys() == plain.model.state_dict().keys()
    for name, tensor in plain.ema.state_dict().items():
        torch.testing.assert_close(compiled.ema.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# vdm-train


@pytest.fixture
def tiny_toml(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def train_cli(*args: str):
    return CliRunner().invoke(vdm.train.main, [str(a) for a in args])


def assert_one_line_error(result, exit_code: int = 2) -> str:
    """The command exited with `exit_code` and said `error: ...` in one line, without a traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_vdm_train_trains_a_tiny_config_and_writes_the_run_directory(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 2, "--batch-size", 2, "--frames", 4, "--size", 8,
                       "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "latest.safetensors").is_file()
    assert (out / "checkpoints" / "train_state.pt").is_file()
    assert (out / "samples" / "step_000002" / "grid.gif").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # log_every 10: only the last step


def test_vdm_train_refuses_a_batch_that_does_not_split_into_micro_batches(tmp_path, tiny_toml):
    result = train_cli("--config", tiny_toml, "--batch-size", 3, "--grad-accum", 2, "--out", tmp_path / "run")
    assert "batch_size 3 must be a multiple of grad_accum 2" in assert_one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_vdm_train_refuses_a_missing_config_file(tmp_path):
    result = train_cli("--config", tmp_path / "nowhere.toml", "--out", tmp_path / "run")
    assert "does not exist" in assert_one_line_error(result)


def test_vdm_train_refuses_a_config_with_an_unknown_field(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text("[model]\nwings = 2\n")
    assert "wings" in assert_one_line_error(train_cli("--config", path, "--out", tmp_path / "run"))


def test_vdm_train_refuses_a_size_the_model_cannot_take(tmp_path, tiny_toml):
    result = train_cli("--config", tiny_toml, "--size", 7, "--out", tmp_path / "run")
    assert "height=7" in assert_one_line_error(result)


def test_vdm_train_refuses_zero_grad_accum(tmp_path, tiny_toml):
    assert_one_line_error(train_cli("--config", tiny_toml, "--grad-accum", 0, "--out", tmp_path / "run"))


def test_vdm_train_refuses_zero_batch_size(tmp_path, tiny_toml):
    assert_one_line_error(train_cli("--config", tiny_toml, "--batch-size", 0, "--out", tmp_path / "run"))


def test_vdm_train_records_the_ema_decay_flag_in_the_run_config(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 1, "--batch-size", 1, "--frames", 4, "--size", 8,
                       "--ema-decay", 0.999, "--sample-every", 0, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train"]["ema_decay"] == 0.999


@pytest.mark.parametrize("flag, value, message", [("--ema-decay", 1.0, "ema_decay must be in [0, 1)"),
                                                  ("--ema-decay", -0.5, "ema_decay must be in [0, 1)"),
                                                  ("--lr", 0, "lr must be positive")])
def test_vdm_train_refuses_an_out_of_range_ema_decay_or_lr(tmp_path, tiny_toml, flag, value, message):
    result = train_cli("--config", tiny_toml, flag, value, "--out", tmp_path / "run")
    assert message in assert_one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_vdm_train_init_from_fine_tunes_and_records_the_checkpoint(tmp_path, tiny_toml, trained_checkpoint):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--init-from", trained_checkpoint, "--steps", 1, "--batch-size", 1,
                       "--sample-every", 0, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert f"initialized from {trained_checkpoint}" in result.output
    assert json.loads((out / "config.json").read_text())["train"]["init_from"] == str(trained_checkpoint)
    _, _, metadata = load_model(out / "checkpoints" / "latest.safetensors")
    assert metadata["step"] == "1"  # a new run: its steps count from 0


def test_vdm_train_records_the_workers_and_compile_flags_in_the_run_config(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 1, "--batch-size", 2, "--workers", 1,
                       "--sample-every", 0, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["workers"], train["compile"]) == (1, False)


def test_vdm_train_says_and_records_the_precision_it_trains_in(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 1, "--batch-size", 2, "--precision", "bf16",
                       "--sample-every", 0, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "device: cpu (bf16)" in result.output
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "bf16"


def test_vdm_train_refuses_an_unknown_precision(tmp_path, tiny_toml):
    result = train_cli("--config", tiny_toml, "--precision", "fp16", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "'fp16' is not one of 'auto', 'fp32', 'bf16'" in result.output
    assert not (tmp_path / "run").exists()


def test_vdm_train_refuses_a_negative_worker_count(tmp_path, tiny_toml):
    result = train_cli("--config", tiny_toml, "--workers", -1, "--out", tmp_path / "run")
    assert "workers must be >= 0" in assert_one_line_error(result)


def test_vdm_train_under_torchrun_refuses_a_batch_the_processes_cannot_share(tmp_path, tiny_toml):
    torchrun_env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}
    result = CliRunner().invoke(vdm.train.main, ["--config", str(tiny_toml), "--batch-size", "3",
                                                 "--out", str(tmp_path / "run")], env=torchrun_env)
    assert "batch_size 3 does not split over 2 processes" in assert_one_line_error(result)


def test_vdm_train_refuses_a_partial_torchrun_environment(tmp_path, tiny_toml):
    result = CliRunner().invoke(vdm.train.main, ["--config", str(tiny_toml), "--out", str(tmp_path / "run")],
                                env={"RANK": "0", "LOCAL_RANK": None, "WORLD_SIZE": None})
    assert "sets RANK but not LOCAL_RANK, WORLD_SIZE" in assert_one_line_error(result)


def test_vdm_train_refuses_a_missing_init_from_checkpoint(tmp_path, tiny_toml):
    result = train_cli("--config", tiny_toml, "--init-from", tmp_path / "nowhere.safetensors", "--steps", 1,
                       "--out", tmp_path / "run", "--device", "cpu")
    assert "does not exist" in assert_one_line_error(result)


def test_vdm_train_on_a_folder_of_real_videos_skips_the_corrupt_one(tmp_path, tiny_toml):
    from vdm.data import SyntheticShapes
    from vdm.video import write_mp4

    videos = tmp_path / "videos" / "nested"
    videos.mkdir(parents=True)
    shapes = SyntheticShapes(frames=6, size=12)
    for i in range(2):
        write_mp4(videos / f"clip{i}.mp4", shapes.clip(i))
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="broken.mp4"):
        result = train_cli("--config", tiny_toml, "--data", tmp_path / "videos", "--steps", 1, "--batch-size", 2,
                           "--frames", 4, "--size", 8, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "checkpoints" / "latest.safetensors").is_file()


def test_the_cosine_learning_rate_warms_up_then_falls_to_zero_at_the_last_step():
    from vdm.train import lr_at

    assert lr_at(0, 1e-3, 10, "cosine", 110) == pytest.approx(1e-4)  # warm-up as the constant schedule
    assert lr_at(10, 1e-3, 10, "cosine", 110) == pytest.approx(1e-3)
    assert lr_at(60, 1e-3, 10, "cosine", 110) == pytest.approx(5e-4)
    assert lr_at(110, 1e-3, 10, "cosine", 110) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(60, 1e-3, 10, "constant", 110) == 1e-3


def test_vdm_train_takes_the_lr_schedule_and_min_snr_weighting(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 2, "--batch-size", 2, "--out", out, "--device", "cpu",
                       "--lr-schedule", "cosine", "--min-snr-gamma", 5)
    assert result.exit_code == 0, result.output
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["lr_schedule"] == "cosine" and train["min_snr_gamma"] == 5.0


def test_vdm_train_takes_an_snr_range_and_records_it(tmp_path, tiny_toml):
    out = tmp_path / "run"
    result = train_cli("--config", tiny_toml, "--steps", 2, "--batch-size", 2, "--out", out, "--device", "cpu",
                       "--snr-range", "1:inf")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["train"]["snr_range"] == [1.0, math.inf]


@pytest.mark.parametrize("flags, message", [(("--min-snr-gamma", 0), "min_snr_gamma must be positive, got 0.0"),
                                            (("--lr-schedule", "linear"), "Invalid value for '--lr-schedule'"),
                                            (("--snr-range", "1"), "expected LOW:HIGH such as 1:inf, got '1'"),
                                            (("--snr-range", "3:1"), "needs 0 <= LOW < HIGH, got '3:1'"),
                                            (("--snr-range", "1e9:1e10"), "holds no training timestep")])
def test_vdm_train_refuses_a_bad_schedule_or_gamma(tmp_path, tiny_toml, flags, message):
    result = train_cli("--config", tiny_toml, *flags, "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 2 and message in result.output


def test_vdm_train_stop_at_stops_there_and_says_how_to_continue(tmp_path, tiny_toml):
    args = ("--config", tiny_toml, "--steps", 3, "--out", tmp_path / "run", "--device", "cpu")
    result = train_cli(*args, "--stop-at", 2)
    assert result.exit_code == 0, result.output
    assert "stopped at step 2 of 3; continue with --resume" in result.output
    result = train_cli(*args, "--resume")
    assert result.exit_code == 0 and "resumed at step 2" in result.output and "stopped" not in result.output
    assert "--stop-at must be a step of at least 1" in assert_one_line_error(train_cli(*args, "--stop-at", 0))

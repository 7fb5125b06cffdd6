"""Specification of vdm.unet and the model config's checks: shapes in and out, conditioning, input
errors, reduced precision, and the configurations ModelConfig refuses."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import perturb_zero_init

from vdm.config import ModelConfig, presets
from vdm.errors import VdmError
from vdm.unet import (ConditionalNorm, JointAttention, KeepFloat32, MotionAlign, PlainNorm, RelativeFrameBias,
                      TemporalAttention, Unet3D)


def tiny_video(cfg: ModelConfig, batch: int = 1, frames: int | None = None, size: int | None = None,
               seed: int = 0) -> torch.Tensor:
    """(B, C, T, H, W) standard normal, at the config's training shape unless given."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_channels, frames or cfg.frames, size or cfg.size, size or cfg.size,
                       generator=generator)


def timesteps(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("name", sorted(presets()))
def test_every_preset_returns_its_input_shape(name):
    # The presets are 2 M to 180 M parameters; shapes do not depend on values, so build and run
    # them on the meta device (shape propagation through the real modules, no weights, no compute).
    cfg = presets()[name].model
    frames, size = 2 * cfg.temporal_factor, cfg.spatial_factor  # the smallest video the preset takes
    with torch.device("meta"):
        model = Unet3D(cfg).eval()
        x = torch.empty(1, cfg.in_channels, frames, size, size)
        out = model(x, timesteps(10))
    assert out.shape == x.shape
    assert out.dtype == torch.float32


def test_tiny_unet_returns_a_float32_prediction_of_the_input_shape(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    x = tiny_video(tiny_model_config, batch=2)
    with torch.no_grad():
        out = model(x, timesteps(0, 999))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_unet_takes_other_multiples_of_its_factors_than_the_training_shape(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    x = tiny_video(tiny_model_config, frames=3, size=6)  # T=3, H=W=6: not the trained 4x8x8
    with torch.no_grad():
        assert model(x, timesteps(5)).shape == x.shape


def test_a_fresh_unet_predicts_exactly_zero(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config, perturb=False)
    with torch.no_grad():
        out = model(tiny_video(tiny_model_config), timesteps(500))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("attention", ["factorized", "temporal"])
def test_channel_statistics_norms_compute_the_same_network(tiny_model_config, make_tiny_unet, attention):
    cfg = dataclasses.replace(tiny_model_config, temporal_attention_levels=(0, 1) if attention == "temporal" else ())
    model = make_tiny_unet(cfg).eval()
    with torch.no_grad():  # GroupNorm's affine parameters away from (1, 0), and activations off-centre
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm) and module.affine:
                module.weight.normal_(1.0, 0.3), module.bias.normal_(0.5, 0.3)
    x = 2.0 * tiny_video(cfg, batch=2) + 1.0
    with torch.no_grad():
        reference = model(x, timesteps(300, 2))
        statistics = model.use_channel_statistics()(x, timesteps(300, 2))
        again = model.use_channel_statistics(False)(x, timesteps(300, 2))
    assert torch.allclose(statistics, reference, rtol=1e-4, atol=1e-5 * reference.abs().max())
    assert not torch.equal(statistics, reference)  # another computation...
    assert torch.equal(again, reference)  # ...that switches back off


def test_channel_statistics_leave_batchnorm_alone(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, norm="batch")).eval()
    x = tiny_video(tiny_model_config, batch=2)
    with torch.no_grad():
        reference = model(x, timesteps(3, 2))
        statistics = model.use_channel_statistics()(x, timesteps(3, 2))
    conditional = [m for m in model.modules() if isinstance(m, ConditionalNorm)]
    assert conditional and all(m.averaging is None for m in conditional)  # BatchNorms keep their running statistics
    plain = [m for m in model.modules() if isinstance(m, PlainNorm)]  # attention and output norms: always GroupNorm
    assert plain and all(m.averaging is not None for m in plain)
    assert torch.allclose(statistics, reference, rtol=1e-4, atol=1e-5 * reference.abs().max())


def test_batchnorm_variant_trains_and_evaluates_at_the_input_shape(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, norm="batch"))
    x = tiny_video(tiny_model_config, batch=2)
    model.train()
    out_train = model(x, timesteps(1, 2))
    out_train.square().mean().backward()
    model.eval()
    with torch.no_grad():
        out_eval = model(x, timesteps(1, 2))
    assert out_train.shape == out_eval.shape == x.shape
    assert torch.isfinite(out_train).all() and torch.isfinite(out_eval).all()


def test_temporal_downsampling_unet_returns_its_input_shape(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, temporal_downsample=True))
    x = tiny_video(tiny_model_config)
    with torch.no_grad():
        assert model(x, timesteps(3)).shape == x.shape


def test_joint_attention_unet_returns_its_input_shape_at_other_frame_counts(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, joint_attention_levels=(1,)))
    assert isinstance(model.mid_joint, JointAttention)  # the deepest level is listed: the middle too
    for frames in (4, 6):
        x = tiny_video(tiny_model_config, frames=frames)
        with torch.no_grad():
            assert model(x, timesteps(3)).shape == x.shape


def test_joint_attention_is_one_softmax_over_all_frames_and_positions():
    # Reference: flatten (T, H, W) into one sequence of 64 tokens and attend with an explicit softmax.
    # Attention within each frame, or across frames at each position, would give something else.
    torch.manual_seed(0)
    joint = perturb_zero_init(JointAttention(8, 2, 4))
    x = torch.randn(1, 8, 4, 4, 4)  # (B, C, T, H, W)
    tokens = joint.norm(x).permute(0, 2, 3, 4, 1) + joint.frame_positions(4, x.device)[None, :, None, None, :]
    tokens = tokens.reshape(1, 64, 8)  # (B, T*H*W, C)
    q, k, v = (part.reshape(1, 64, 2, 4).transpose(1, 2) for part in joint.qkv(tokens).chunk(3, dim=-1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # (B, heads, 64, 64); sqrt(d) = 2
    h = joint.out((weights @ v).transpose(1, 2).reshape(1, 64, 8))
    expected = x + h.reshape(1, 4, 4, 4, 8).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(joint(x), expected.detach(), rtol=1e-5, atol=1e-5)


def test_joint_attention_starts_as_the_identity():
    x = torch.randn(2, 8, 4, 4, 4)
    assert torch.equal(JointAttention(8, 2, 4)(x), x)


def test_temporal_attention_starts_as_the_identity_and_grafts_onto_a_model(tiny_model_config, make_tiny_unet):
    x = torch.randn(2, 8, 4, 4, 4)
    assert torch.equal(TemporalAttention(8, 2, 4)(x), x)
    plain = make_tiny_unet(tiny_model_config)
    grafted = Unet3D(dataclasses.replace(tiny_model_config, temporal_attention_levels=(0, 1)))
    missing, unexpected = grafted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".temporals." in name for name in missing)
    video = tiny_video(tiny_model_config, frames=6)
    with torch.no_grad():
        torch.testing.assert_close(grafted(video, timesteps(2)), plain(video, timesteps(2)))


def test_motion_align_starts_as_the_identity_and_grafts_onto_a_decoder(tiny_model_config, make_tiny_unet):
    x = torch.randn(2, 8, 4, 4, 4)
    assert torch.equal(MotionAlign(8, 4, reach=2)(x), x)
    plain = make_tiny_unet(tiny_model_config)
    grafted = Unet3D(dataclasses.replace(tiny_model_config, motion_align_levels=(0, 1)))
    missing, unexpected = grafted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".aligns." in name and name.startswith("up.") for name in missing)
    video = tiny_video(tiny_model_config, frames=6)
    with torch.no_grad():
        torch.testing.assert_close(grafted(video, timesteps(2)), plain(video, timesteps(2)))


@pytest.mark.parametrize("velocity", [(1.0, 2.0), (-2.0, -1.0), (0.0, 3.0)])
def test_motion_align_gathers_each_neighbour_where_the_motion_puts_the_content(velocity):
    # A dot moving at `velocity` px per frame; with the motion estimate held at that velocity, the
    # channels gathered from frame t + d hold, at the dot's place in frame t, the dot of frame t + d:
    # aligned, so a fixed pixel sees the same content in every gathered frame. Frames past the clip's
    # ends gather zeros.
    frames, size, (vy, vx) = 5, 16, velocity
    video = torch.zeros(1, 4, frames, size, size)
    for t in range(frames):
        video[0, :, t, int(8 + vy * (t - 2)), int(8 + vx * (t - 2))] = 1.0  # the frame-2 dot sits at (8, 8)
    align = MotionAlign(4, 1, reach=2)
    align.norm = torch.nn.Identity()  # gather the video itself
    gathered = {}
    align.fuse.register_forward_hook(lambda module, inputs, output: gathered.update(x=inputs[0]))  # (B, C * 5, T, H, W)
    with torch.no_grad():
        align.motion.bias.copy_(torch.tensor([vy, vx]))
        align(video)
    stacked = gathered["x"].reshape(1, 5, 4, frames, size, size)[:, :, 0]  # (B, C * 5, ...) -> (1, slot, T, H, W)
    offsets = [0] + align.offsets  # slot 0 is the frame itself
    for slot, d in enumerate(offsets):
        for t in range(frames):
            if not 0 <= t + d < frames:
                assert stacked[0, slot, t].abs().max() == 0
                continue
            dot = int(8 + vy * (t - 2)), int(8 + vx * (t - 2))
            assert stacked[0, slot, t][dot] == pytest.approx(1.0, abs=1e-5), (slot, t)
            assert stacked[0, slot, t].sum() == pytest.approx(1.0, abs=1e-5)  # and nothing else


def test_temporal_attention_is_a_softmax_across_frames_with_a_bias_by_frame_offset():
    # Reference: at each of the H*W positions, attend over its 5 frames with an explicit softmax plus
    # table[offset]; attention within a frame, or without the bias, would give something else.
    torch.manual_seed(0)
    temporal = perturb_zero_init(TemporalAttention(8, 2, 4))
    with torch.no_grad():
        temporal.frame_bias.table.normal_()
    x = torch.randn(1, 8, 5, 3, 3)  # (B, C, T, H, W)
    tokens = temporal.norm(x).permute(0, 3, 4, 2, 1).reshape(9, 5, 8)  # (H*W, T, C)
    q, k, v = (part.reshape(9, 5, 2, 4).transpose(1, 2) for part in temporal.qkv(tokens).chunk(3, dim=-1))
    offsets = torch.arange(5)[None, :] - torch.arange(5)[:, None]  # key frame - query frame
    bias = temporal.frame_bias.table[:, offsets + RelativeFrameBias.MAX_OFFSET]  # (heads, T, T)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + bias, dim=-1)  # sqrt(d) = 2
    h = temporal.out((weights @ v).transpose(1, 2).reshape(9, 5, 8))
    expected = x + h.reshape(1, 3, 3, 5, 8).permute(0, 4, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(temporal(x), expected.detach(), rtol=1e-5, atol=1e-5)
    long_clip = temporal.frame_bias(20, x.device)  # offsets beyond MAX_OFFSET share the outermost entries
    table = temporal.frame_bias.table
    assert torch.equal(long_clip[:, 0, 19], table[:, -1]) and torch.equal(long_clip[:, 19, 0], table[:, 0])


# ---------------------------------------------------------------------------------------------
# Conditioning


@pytest.fixture
def conditional_unet(tiny_model_config, make_tiny_unet) -> Unet3D:
    return make_tiny_unet(dataclasses.replace(tiny_model_config, num_classes=3))


def test_conditional_unet_output_depends_on_the_class(conditional_unet):
    x = tiny_video(conditional_unet.cfg)
    with torch.no_grad():
        out_0 = conditional_unet(x, timesteps(100), timesteps(0))
        out_null = conditional_unet(x, timesteps(100), None)
    assert out_0.shape == out_null.shape == x.shape
    assert not torch.allclose(out_0, out_null)


def test_conditional_unet_without_labels_uses_the_null_class(conditional_unet):
    x = tiny_video(conditional_unet.cfg, batch=2)
    null = conditional_unet.cfg.num_classes
    with torch.no_grad():
        out_none = conditional_unet(x, timesteps(7, 8), None)
        out_null = conditional_unet(x, timesteps(7, 8), timesteps(null, null))
    assert torch.equal(out_none, out_null)


def test_a_shared_label_embedding_sums_the_vectors_of_the_clips_colours_and_shapes(tiny_model_config,
                                                                                   make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, num_classes=728, class_label="shapes",
                                               label_embedding="shared"))
    embed = model.embedding.class_embed  # vectors (13, emb_dim): per palette colour a square's, a disc's; the null's
    # red square + blue disc = 1 * 3 ** 0 + 2 * 3 ** 2 - 1; a blue disc alone = 2 * 3 ** 2 - 1; the null class
    with torch.no_grad():
        vectors = embed(timesteps(18, 17, 728))
        torch.testing.assert_close(vectors[0], embed.vectors[0] + embed.vectors[5])
        torch.testing.assert_close(vectors[1], embed.vectors[5])
        torch.testing.assert_close(vectors[2], embed.vectors[12])
        x = tiny_video(model.cfg, batch=2)
        assert not torch.allclose(model(x, timesteps(9, 9), timesteps(18, 17)), model(x, timesteps(9, 9), None))


def test_a_counted_shared_label_embedding_adds_the_vector_of_the_clips_number_of_shapes(tiny_model_config,
                                                                                       make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, num_classes=728, class_label="shapes",
                                               label_embedding="shared_count"))
    embed = model.embedding.class_embed  # vectors (19, emb_dim): 12 colour-and-shape ones, 6 counts, the null's
    with torch.no_grad():
        vectors = embed(timesteps(18, 17, 728))  # red square + blue disc; a blue disc alone; the null class
        torch.testing.assert_close(vectors[0], embed.vectors[0] + embed.vectors[5] + embed.vectors[13])
        torch.testing.assert_close(vectors[1], embed.vectors[5] + embed.vectors[12])
        torch.testing.assert_close(vectors[2], embed.vectors[18])


@pytest.mark.parametrize("label_embedding", ["table", "shared", "shared_count"])
def test_a_labelled_unet_builds_and_runs_on_the_meta_device(tiny_model_config, label_embedding):
    # benchmarks/train_step.py counts FLOPs on a meta-device model: every buffer must follow the device
    cfg = dataclasses.replace(tiny_model_config, num_classes=728, class_label="shapes", label_embedding=label_embedding)
    with torch.device("meta"):
        model = Unet3D(cfg)
        x = torch.zeros(2, cfg.network_channels, cfg.frames, cfg.size, cfg.size)  # (B, C, T, H, W)
        out = model(x, torch.ones(2, dtype=torch.long), torch.tensor([18, 728]))
    assert out.device.type == "meta" and out.shape == x.shape


def test_unet_output_depends_on_the_timestep(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    x = tiny_video(tiny_model_config)
    with torch.no_grad():
        assert not torch.allclose(model(x, timesteps(0)), model(x, timesteps(900)))


# ---------------------------------------------------------------------------------------------
# Input errors


def test_odd_height_is_a_value_error_naming_height(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    with pytest.raises(ValueError, match="height"):
        model(torch.zeros(1, 3, 4, 7, 8), timesteps(0))


def test_odd_width_is_a_value_error_naming_width(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    with pytest.raises(ValueError, match="width"):
        model(torch.zeros(1, 3, 4, 8, 7), timesteps(0))


def test_odd_frames_with_temporal_downsampling_is_a_value_error_naming_frames(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(dataclasses.replace(tiny_model_config, temporal_downsample=True))
    with pytest.raises(ValueError, match="frames"):
        model(torch.zeros(1, 3, 3, 8, 8), timesteps(0))


def test_shape_errors_are_also_vdm_errors(tiny_model_config, make_tiny_unet):
    model = make_tiny_unet(tiny_model_config)
    with pytest.raises(VdmError):
        model(torch.zeros(1, 3, 4, 7, 8), timesteps(0))


@pytest.mark.parametrize("shape", [(1, 1, 4, 8, 8), (1, 4, 4, 8, 8), (3, 4, 8, 8)])
def test_wrong_channels_or_rank_is_a_value_error_showing_the_expected_shape(tiny_model_config, make_tiny_unet,
                                                                           shape):
    model = make_tiny_unet(tiny_model_config)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.zeros(shape), timesteps(0))


# ---------------------------------------------------------------------------------------------
# Reduced precision


@pytest.fixture
def fp32_and_bf16_unets(tiny_model_config, make_tiny_unet) -> tuple[Unet3D, Unet3D]:
    model = make_tiny_unet(tiny_model_config)
    return model, copy.deepcopy(model).cast_for_inference(torch.bfloat16)


def test_cast_for_inference_keeps_norms_and_embeddings_float32(fp32_and_bf16_unets):
    _, model = fp32_and_bf16_unets
    kept = [m for m in model.modules() if isinstance(m, KeepFloat32)]
    assert kept, "the UNet has norms and embeddings"
    for module in kept:
        assert all(p.dtype == torch.float32 for p in module.parameters()), type(module).__name__
    assert model.conv_in.weight.dtype == torch.bfloat16
    assert model.mid_attention.spatial_qkv.weight.dtype == torch.bfloat16
    assert model.dtype == torch.bfloat16


def test_bf16_unet_takes_and_returns_float32_close_to_fp32(fp32_and_bf16_unets):
    fp32, bf16 = fp32_and_bf16_unets
    x = tiny_video(fp32.cfg, batch=2)
    with torch.no_grad():
        ref = fp32(x, timesteps(10, 600))
        out = bf16(x, timesteps(10, 600))
    assert out.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: a few percent of the output's scale after a dozen layers.
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


# ---------------------------------------------------------------------------------------------
# Configurations ModelConfig refuses


@pytest.mark.parametrize("overrides, message", [
    (dict(norm="layer"), "norm must be"),
    (dict(attention_levels=(2,)), "attention level 2 does not exist"),
    (dict(attention_levels=(-1,)), "attention level -1 does not exist"),
    (dict(joint_attention_levels=(2,)), "attention level 2 does not exist"),
    (dict(motion_align_levels=(2,)), "motion_align_levels: level 2 does not exist"),
    (dict(motion_align_reach=0), "motion_align_reach must be >= 1"),
    (dict(class_label="sizes"), "class_label must be one of"),
    (dict(label_embedding="bag"), "label_embedding must be one of"),
    (dict(label_embedding="shared", num_classes=3), 'needs class_label "colors" or "shapes"'),
    (dict(label_embedding="shared", num_classes=100, class_label="colors"), "needs num_classes = 63, got 100"),
    (dict(label_embedding="shared_count", num_classes=3), 'label_embedding = "shared_count" needs class_label'),
    (dict(num_heads=3), "num_heads=3"),
    (dict(num_groups=3), "num_groups=3"),
    (dict(channel_multiples=()), "at least one level"),
    (dict(num_classes=-1), "num_classes"),
    (dict(size=6, channel_multiples=(1, 2, 4)), "height=6"),
])
def test_model_config_refuses_impossible_settings(overrides, message):
    base = dict(base_channels=8, channel_multiples=(1, 2), num_res_blocks=1, attention_levels=(1,),
                num_heads=2, num_groups=4, frames=4, size=8)
    with pytest.raises(VdmError, match=message):
        ModelConfig(**{**base, **overrides})


def test_batchnorm_config_refuses_widths_the_output_groupnorm_cannot_take():
    # base width 12 does not divide into 8 groups; Unet3D's norm_out = GroupNorm(8, 12) fails.
    with pytest.raises(VdmError, match="num_groups"):
        ModelConfig(base_channels=12, channel_multiples=(1, 2), attention_levels=(1,), num_heads=4,
                    num_groups=8, norm="batch", frames=4, size=8)

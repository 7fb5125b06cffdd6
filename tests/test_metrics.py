"""Specification of vdm.metrics (sample quality on the bouncing shapes) and vdm.evaluate (`vdm-eval`).

The metric is calibrated here: real SyntheticShapes clips pass, and each corruption of them fails
the property it breaks. Measured with the tolerances in vdm/metrics.py: real clips 100 % (640 clips
over T/size 8/32, 4/16, 16/32, 16/64, 40/24), uniform noise 0 %, shuffled frames 0 %.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vdm import metrics
from vdm.checkpoint import save_checkpoint
from vdm.config import DiffusionConfig, ModelConfig
from vdm.data import PALETTE, RADIUS_RANGE, ShapeTrack, SyntheticShapes, bounce, data_labels, render_tracks
from vdm.errors import VdmError
from vdm.cli.eval import main
from vdm.diffusion import Schedule
from vdm.evaluate import (HELD_OUT_SEED, LOSS_BATCH_SIZE, finished_videos, held_out_loss, held_out_shape_counts,
                          loss_timesteps, one_step_videos, passes_by_shape_count, timestep_at_snr)
from vdm.metrics import (
    PROPERTIES,
    area_range,
    dilate,
    fit_bounce,
    label_pixels,
    measure_mask,
    score_videos,
    triangle_wave,
    wilson_interval,
)
from vdm.runtime.torch_backend import TorchBackend
from vdm.unet import Unet3D
from vdm.video import from_uint8_frames

FRAMES, SIZE = 8, 32
RED, GREEN, BLUE = PALETTE[0], PALETTE[1], PALETTE[2]


def real_clips(seeds=range(4), count: int = 32, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """(len(seeds) * count, 3, T, H, W) SyntheticShapes clips."""
    return torch.cat([SyntheticShapes(frames, size, seed=s).batch(0, count) for s in seeds])


def one_shape(kind: str = "square", color=RED, radius: float = 5.0, start=(10.0, 12.0),
              velocity=(1.0, 1.5)) -> ShapeTrack:
    """A track that obeys the generator's rules (a bounce off the bottom border included)."""
    ys = bounce(start[0], velocity[0], radius, SIZE - radius, FRAMES)
    xs = bounce(start[1], velocity[1], radius, SIZE - radius, FRAMES)
    return ShapeTrack(kind, color, radius, np.stack([ys, xs], axis=1), velocity)  # (T, 2)


def render(*tracks: ShapeTrack) -> np.ndarray:
    return render_tracks(list(tracks), FRAMES, SIZE, SIZE)  # (T, H, W, 3) uint8


def score_one(frames: np.ndarray) -> metrics.VideoReport:
    """Score one (T, H, W, 3) uint8 video through the public (N, C, T, H, W) entry point."""
    return score_videos(from_uint8_frames(frames)[None]).videos[0]


# ---------------------------------------------------------------------------------------------
# Helpers


def test_label_pixels_maps_palette_colours_to_their_index_and_black_to_minus_one():
    frames = np.array([[list(PALETTE) + [(0, 0, 0)]]], np.uint8)  # (1, 1, 7, 3)
    assert label_pixels(frames).tolist() == [[list(range(len(PALETTE))) + [-1]]]


def test_label_pixels_accepts_colours_near_the_palette_and_rejects_far_ones():
    frames = np.array([[[(230, 30, 20), (128, 128, 128), (90, 0, 0)]]], np.uint8)  # off-red, grey, dark red
    assert label_pixels(frames).tolist() == [[[0, -1, -1]]]


def test_measure_mask_gives_area_centroid_and_box():
    mask = np.zeros((2, 8, 8), bool)
    mask[0, 1:4, 2:6] = True  # rows 1-3, columns 2-5
    areas, centroids, boxes = measure_mask(mask)
    assert areas.tolist() == [12, 0]
    assert centroids[0].tolist() == [2.5, 4.0] and np.isnan(centroids[1]).all()
    assert boxes[0].tolist() == [1, 2, 4, 6] and np.isnan(boxes[1]).all()


def test_dilate_grows_a_mask_by_one_pixel_in_four_directions():
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    assert dilate(mask).sum() == 5 and dilate(mask)[1:4, 2].all() and dilate(mask)[2, 1:4].all()


def test_triangle_wave_folds_like_the_data_generator():
    low, high, start, velocity = 3.0, 20.0, 7.0, -2.3
    expected = bounce(start, velocity, low, high, 40)
    assert np.allclose(triangle_wave(start - low + velocity * np.arange(40), low, high), expected)


def test_fit_bounce_recovers_the_speed_of_a_noisy_bouncing_point():
    rng = np.random.default_rng(0)
    times = np.arange(12.0)
    pos = bounce(5.0, 1.7, 3.0, 20.0, 12) + rng.uniform(-0.4, 0.4, 12)  # reflects off 20
    path = fit_bounce(pos, times, np.full(12, metrics.MOTION_TOL), 3.0, 20.0, max_speed=4.0)
    assert abs(path.speed - 1.7) < 0.1
    assert np.abs(path.at(times) - pos).max() <= metrics.MOTION_TOL


@pytest.mark.parametrize("kind", ["square", "disc"])
def test_area_range_holds_the_smallest_and_largest_generated_shapes(kind):
    for radius in (RADIUS_RANGE[0] * SIZE, RADIUS_RANGE[1] * SIZE):
        area = (render(one_shape(kind, radius=radius))[0] == RED).all(-1).sum()
        low, high = area_range(kind, SIZE)
        assert low <= area <= high


def test_numpy_and_torch_inputs_score_the_same():
    clips = real_clips(seeds=[0], count=4)
    assert score_videos(clips).to_dict() == score_videos(clips.numpy()).to_dict()


def test_score_videos_rejects_a_single_video_without_batch_axis():
    with pytest.raises(VdmError, match=r"\(N, C, T, H, W\)"):
        score_videos(torch.zeros(3, FRAMES, SIZE, SIZE))


def test_report_aggregates_per_property_and_serializes_to_json():
    report = score_videos(torch.cat([real_clips(seeds=[0], count=3), -torch.ones(1, 3, FRAMES, SIZE, SIZE)]))
    assert report.pass_rate == 0.75
    assert set(report.property_scores) == set(report.property_pass_rates) == set(PROPERTIES)
    assert all(name in report.summary() for name in PROPERTIES) and "3/4 videos" in report.summary()
    assert json.loads(json.dumps(report.to_dict()))["videos"][3]["passed"] is False
    real_colors = [len(v.colors) for v in report.videos[:3]]  # the black video has none
    assert report.colors_per_video == sum(real_colors) / 4 and all(1 <= n <= 3 for n in real_colors)
    assert f"colours found per video {sum(real_colors) / 4:.2f}" in report.summary()


# ---------------------------------------------------------------------------------------------
# Calibration: real clips pass, corrupted ones fail


@pytest.mark.parametrize("frames,size,seeds", [(8, 32, range(4)), (4, 16, range(1))])
def test_real_clips_pass(frames, size, seeds):
    report = score_videos(real_clips(seeds, frames=frames, size=size))
    assert report.pass_rate >= 0.95  # measured: 1.0


def test_uniform_noise_fails():
    noise = torch.rand((32, 3, FRAMES, SIZE, SIZE), generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = score_videos(noise)
    assert report.pass_rate <= 0.05  # measured: 0.0
    assert report.property_pass_rates["count"] == 0.0  # every colour shows up somewhere


def test_shuffled_frames_fail_motion():
    clips = real_clips()
    rng = np.random.default_rng(0)
    identity = np.arange(FRAMES)
    shuffled = clips.clone()
    for i in range(len(clips)):
        order = identity
        while np.array_equal(order, identity) or np.array_equal(order, identity[::-1]):  # both are valid motion
            order = rng.permutation(FRAMES)
        shuffled[i] = clips[i][:, order]
    report = score_videos(shuffled)
    assert report.pass_rate <= 0.1  # measured: 0.0
    assert report.property_pass_rates["motion"] <= 0.1


def test_a_rule_abiding_shape_passes():
    for kind in ("square", "disc"):
        assert score_one(render(one_shape(kind))).passed


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_a_shape_that_changes_colour_fails_count(cut):
    red = one_shape()
    blue = dataclasses.replace(red, color=BLUE)
    frames = np.concatenate([render(red)[:cut], render(blue)[cut:]])
    result = score_one(frames).properties["count"]
    assert not result.passed and "drawing order" in result.detail


def test_a_shape_that_teleports_fails_motion():
    track = one_shape()
    track.positions[FRAMES // 2:] -= (0.0, 8.0)  # 8 px to the left, still inside the frame
    result = score_one(render(track))
    assert not result.properties["motion"].passed
    assert result.properties["size"].passed and result.properties["shape"].passed


def test_a_frozen_video_fails_motion():
    clips = real_clips(seeds=[0], count=8)
    frozen = clips[:, :, :1].expand_as(clips)
    assert score_videos(frozen).property_pass_rates["motion"] == 0.0


def test_a_shape_faster_than_the_data_fails_motion():
    result = score_one(render(one_shape(velocity=(4.0, 3.0)))).properties["motion"]
    assert not result.passed and "px/frame" in result.detail


def test_a_growing_shape_fails_size():
    track = one_shape()
    frames = np.concatenate([render(track)[:4], render(dataclasses.replace(track, radius=7.5))[4:]])
    assert not score_one(frames).properties["size"].passed


def test_a_shape_larger_than_the_data_fails_shape():
    result = score_one(render(one_shape(radius=9.0, start=(12.0, 12.0), velocity=(1.0, 0.5))))
    assert not result.properties["shape"].passed and result.properties["size"].passed


def test_a_black_video_fails_every_property():
    result = score_one(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8))
    assert not any(p.passed for p in result.properties.values())
    assert result.properties["count"].detail == "0 shapes, expected 1..3"


def test_a_shape_hidden_behind_another_is_excused():
    behind = one_shape("disc", RED, radius=3.0, start=(12.0, 12.0), velocity=(0.8, 0.8))
    on_top = one_shape("square", GREEN, radius=6.0, start=(14.0, 8.0), velocity=(0.6, 1.1))
    frames = render(behind, on_top)
    assert ((frames == RED).all(-1).sum((1, 2)) == 0).any()  # precondition: red vanishes at some frame
    assert score_one(frames).passed


# ---------------------------------------------------------------------------------------------
# vdm-eval


TINY = ModelConfig(base_channels=8, channel_multiples=(1, 2), attention_levels=(1,), num_heads=2, num_groups=4,
                   frames=4, size=16)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("eval") / "random.safetensors"
    save_checkpoint(path, Unet3D(TINY).state_dict(), TINY, DiffusionConfig())
    return path


def test_loss_timesteps_spread_over_the_schedule_in_every_batch():
    t = loss_timesteps(1000, batches=4, batch_size=8)
    assert t.shape == (4, 8) and t.dtype == torch.int64
    assert len(set(t.flatten().tolist())) == 32 and t.min() >= 0 and t.max() < 1000
    assert (t[:, 0] < 125).all() and (t[:, -1] >= 875).all()  # each batch spans low to high noise


def test_held_out_loss_of_a_zero_predictor_is_the_mean_squared_noise():
    backend = TorchBackend(Unet3D(TINY), DiffusionConfig(prediction="epsilon"), torch.device("cpu"))  # predicts 0
    shape = (LOSS_BATCH_SIZE, 3, TINY.frames, TINY.size, TINY.size)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(HELD_OUT_SEED + i)) for i in range(2)]
    expected = sum(float((n**2).mean()) for n in noise) / 2
    assert held_out_loss(backend, batches=2) == pytest.approx(expected, rel=1e-6)


def test_one_step_videos_denoise_held_out_clips_at_the_nearest_snr():
    # An epsilon model that predicts 0 returns x_t / sqrt(abar): the clip plus noise scaled by 1/sqrt(SNR).
    backend = TorchBackend(Unet3D(TINY), DiffusionConfig(prediction="epsilon"), torch.device("cpu"))
    abar = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    clips = SyntheticShapes(TINY.frames, TINY.size, seed=HELD_OUT_SEED).batch(0, LOSS_BATCH_SIZE)
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(HELD_OUT_SEED))
    for snr in (1e4, 0.1):
        videos, t = one_step_videos(backend, snr, batches=1)
        snrs = abar / (1 - abar)
        assert abs(np.log(snrs[t] / snr)) <= np.abs(np.log(snrs / snr)).min() + 1e-12
        expected = (clips + noise * float(np.sqrt(1 / snrs[t]))).clamp(-1, 1)
        torch.testing.assert_close(videos, expected, rtol=1e-5, atol=1e-5)
    assert score_videos(one_step_videos(backend, 1e4, batches=1)[0]).pass_rate == 1.0
    assert score_videos(one_step_videos(backend, 0.1, batches=1)[0]).pass_rate == 0.0


def test_finished_videos_sample_from_held_out_clips_at_the_nearest_snr():
    # An epsilon model that predicts 0 keeps x_t / sqrt(abar) as its clean video at every step, so from
    # a nearly clean clip it finishes with the clip (and passes), from SNR 0.1 with loud noise (and fails).
    backend = TorchBackend(Unet3D(TINY), DiffusionConfig(prediction="epsilon"), torch.device("cpu"))
    abar = Schedule.from_config(backend.diffusion_config).alphas_cumprod
    clips = SyntheticShapes(TINY.frames, TINY.size, seed=HELD_OUT_SEED).batch(0, LOSS_BATCH_SIZE)
    clean, plan = finished_videos(backend, 1e4, "ddim", 6, None, batches=1)
    assert plan == list(range(timestep_at_snr(abar, 1e4), -1, -1))  # fewer timesteps than steps below it
    assert (clean - clips).abs().max() < 0.1 and score_videos(clean).pass_rate == 1.0
    noisy, plan = finished_videos(backend, 0.1, "unipc", 6, None, batches=1)
    assert plan[0] == timestep_at_snr(abar, 0.1) == one_step_videos(backend, 0.1, batches=1)[1] and len(plan) == 6
    assert noisy.shape == clips.shape and score_videos(noisy).pass_rate == 0.0


def test_held_out_shape_counts_are_the_shapes_of_each_held_out_clip():
    backend = TorchBackend(Unet3D(TINY), DiffusionConfig(), torch.device("cpu"))
    counts = held_out_shape_counts(backend, batches=2)
    data = SyntheticShapes(TINY.frames, TINY.size, seed=HELD_OUT_SEED)
    clips = torch.cat([data.batch(i, LOSS_BATCH_SIZE) for i in range(2)])  # as held_out_batches draws them
    colours = [len({tuple(c) for c in clip.permute(1, 2, 3, 0).reshape(-1, 3).tolist()}) - 1 for clip in clips]
    assert len(counts) == 2 * LOSS_BATCH_SIZE and set(counts) <= {1, 2, 3}
    assert counts == colours  # each shape is its own colour on the background (no shape hides another whole)


class LabelRecorder(TorchBackend):
    """A TorchBackend that keeps the labels of every call."""

    def predict(self, x, t, y):
        self.labels.append(None if y is None else y.tolist())
        return super().predict(x, t, y)


def test_the_held_out_checks_give_a_conditional_model_each_clips_own_label():
    cfg = dataclasses.replace(TINY, num_classes=3)  # "count" labels: shapes - 1
    backend = LabelRecorder(Unet3D(cfg), DiffusionConfig(), torch.device("cpu"))
    counts = held_out_shape_counts(backend, batches=2)
    expected = [[c - 1 for c in counts[:LOSS_BATCH_SIZE]], [c - 1 for c in counts[LOSS_BATCH_SIZE:]]]
    assert expected[0] != expected[1]  # the batches' own labels, not one class
    for check in (lambda: held_out_loss(backend, batches=2), lambda: one_step_videos(backend, 0.1, batches=2),
                  lambda: finished_videos(backend, 0.1, "ddim", 1, None, batches=2)):
        backend.labels = []
        check()
        assert backend.labels == expected
    backend = LabelRecorder(Unet3D(TINY), DiffusionConfig(), torch.device("cpu"))
    backend.labels = []
    held_out_loss(backend, batches=1)
    assert backend.labels == [None]  # an unconditional model gets none


def test_wilson_interval_bounds_the_rates_a_count_is_consistent_with():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # the textbook 0-of-10 case
    for passed, total in [(34, 128), (1, 3), (75, 256), (127, 128)]:
        rate = passed / total
        low, high = wilson_interval(passed, total)
        assert 0 <= low < rate < high <= 1
        for bound in (low, high):  # Wilson's bounds: |rate - p| = 1.96 * sqrt(p (1 - p) / n)
            assert abs(rate - bound) == pytest.approx(1.96 * math.sqrt(bound * (1 - bound) / total))
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no videos: nothing is ruled out


def test_passes_by_shape_count_tallies_passing_and_total_videos_per_count():
    table = passes_by_shape_count([True, False, True, True, False], [1, 3, 1, 2, 3])
    assert table == {1: (2, 2), 2: (1, 1), 3: (0, 2)} and list(table) == [1, 2, 3]
    with pytest.raises(ValueError):
        passes_by_shape_count([True], [1, 2])


def test_vdm_eval_prints_the_report_and_writes_json(random_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, [str(random_checkpoint), "--device", "cpu", "--num-samples", "2",
                                       "--steps", "2", "--loss-batches", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for line in ("pass rate 0.000 (0/2 videos; 95 % interval 0.000-0.658)", "held-out loss", *PROPERTIES):
        assert line in result.output
    report = json.loads(out.read_text())
    assert report["pass_rate"] == 0.0 and len(report["videos"]) == 2
    assert report["pass_rate_interval"] == pytest.approx([0.0, 0.6576], abs=1e-4)
    assert report["video_shape"] == [3, 4, 16, 16] and report["steps"] == 2
    assert set(report["property_scores"]) == set(PROPERTIES)
    assert report["held_out_loss"] > 0 and set(report["seconds"]) == {"load", "sample", "score", "loss", "one_step"}
    assert "one step from held-out clips at SNR 0.1" in result.output
    assert report["one_step"]["snr"] == 0.1 and len(report["one_step"]["videos"]) == LOSS_BATCH_SIZE
    by_shapes = report["one_step"]["by_shapes"]
    assert sum(total for _, total in by_shapes.values()) == LOSS_BATCH_SIZE and set(by_shapes) <= {"1", "2", "3"}
    assert report["from_snr"] == []


def test_vdm_eval_finishes_sampling_from_each_snr_asked(random_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, [str(random_checkpoint), "--device", "cpu", "-n", "1", "--steps", "3",
                                       "--loss-batches", "1", "--from-snr", "0.1, 10", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [run["snr"] for run in report["from_snr"]] == [0.1, 10.0]
    for run in report["from_snr"]:
        assert len(run["timesteps"]) == 3 and len(run["videos"]) == LOSS_BATCH_SIZE
        assert f"from held-out clips at SNR {run['snr']:g} (t={run['timesteps'][0]}, 3 steps): count passes" in result.output
        tally = ", ".join(f"{shapes} shape{'s' if shapes != '1' else ''} {passing}/{total}"
                          for shapes, (passing, total) in run["by_shapes"].items())
        assert f"(clips of {tally})" in result.output
    assert {"from_snr_0.1", "from_snr_10"} <= set(report["seconds"])


def test_vdm_eval_asks_a_conditional_model_for_the_datas_labels_with_guidance(tiny_conditional_checkpoint, tmp_path):
    out = tmp_path / "eval.json"
    args = [str(tiny_conditional_checkpoint), "--device", "cpu", "-n", "5", "--steps", "2", "--loss-batches", "0",
            "--seed", "3", "--guidance", "2", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["class_labels"] == data_labels("count", 5, seed=3) and report["guidance"] == 2.0
    assert len(set(report["class_labels"])) > 1  # the data's mix of shape counts, not one class
    result = CliRunner().invoke(main, args[:-2] + ["--class", "1", "--json", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text())["class_labels"] == 1


def test_vdm_eval_checks_flags_before_loading_the_model(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / "missing.safetensors"), "--num-samples", "0"])
    assert result.exit_code == 2 and "--num-samples must be at least 1" in result.output
    result = CliRunner().invoke(main, [str(tmp_path / "missing.safetensors"), "--one-step-snr", "-1"])
    assert result.exit_code == 2 and "--one-step-snr must be 0" in result.output
    for bad in ("0.1,x", "0", "-1", "inf"):
        result = CliRunner().invoke(main, [str(tmp_path / "missing.safetensors"), "--from-snr", bad])
        assert result.exit_code == 2 and "--from-snr:" in result.output and "is not a positive SNR" in result.output
    result = CliRunner().invoke(main, [str(tmp_path / "missing.safetensors"), "--from-snr", "1", "--loss-batches", "0"])
    assert result.exit_code == 2 and "give --loss-batches 1 or more" in result.output


def test_vdm_eval_without_a_model_or_demo_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr("vdm.demo.DEMO_CHECKPOINT", tmp_path / "demo.safetensors")
    result = CliRunner().invoke(main, ["--loss-batches", "0"])
    assert result.exit_code == 2 and "pass a MODEL path" in result.output

"""Specification of vdm.data: synthetic bouncing shapes and folders of real video files."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vdm.data import (
    PALETTE,
    RADIUS_RANGE,
    MIN_RADIUS,
    SPEED_RANGE,
    ShapeTrack,
    SyntheticShapes,
    VideoFolder,
    bounce,
    make_dataset,
    render_scenes,
    render_tracks,
    scene_arrays,
    square_frame,
    stack_scenes,
)
from vdm.errors import VdmError
from vdm.video import from_uint8_frames, write_gif_grid, write_mp4


# ---------------------------------------------------------------------------------------------
# Synthetic shapes


def long_clips(count: int = 20, frames: int = 40, size: int = 24):
    """Clips long enough that most shapes bounce at least once, with their metadata."""
    data = SyntheticShapes(frames, size, seed=3)
    return data, [data.clip_with_meta(i) for i in range(count)]


def test_bounce_reflects_off_both_walls():
    assert bounce(1.0, 1.0, 0.0, 3.0, 8).tolist() == [1, 2, 3, 2, 1, 0, 1, 2]


def test_same_seed_and_index_give_the_same_clip():
    assert torch.equal(SyntheticShapes(8, 16, seed=1).clip(5), SyntheticShapes(8, 16, seed=1).clip(5))


def test_different_indices_give_different_clips():
    data = SyntheticShapes(8, 16)
    assert not torch.equal(data.clip(0), data.clip(1))


def test_different_seeds_give_different_clips():
    assert not torch.equal(SyntheticShapes(8, 16, seed=0).clip(0), SyntheticShapes(8, 16, seed=1).clip(0))


@pytest.mark.parametrize("frames,height,width", [(1, 4, 4), (5, 32, 32), (8, 64, 64), (3, 17, 33)])
def test_any_clip_shape_works_and_is_float_in_range(frames, height, width):
    clip = SyntheticShapes(frames, height, height=height, width=width).clip(0)
    assert clip.shape == (3, frames, height, width) and clip.dtype == torch.float32
    assert clip.min() >= -1 and clip.max() <= 1


def test_pixels_are_black_or_a_palette_colour():
    clip = SyntheticShapes(6, 24).clip(2)
    allowed = from_uint8_frames(np.array([(0, 0, 0), *PALETTE], np.uint8).reshape(1, -1, 1, 3))
    pixels = clip.permute(1, 2, 3, 0).reshape(-1, 3)  # (T*H*W, 3)
    colours = torch.from_numpy(allowed.reshape(3, -1).T)  # (K, 3)
    assert (pixels[:, None, :] == colours[None]).all(-1).any(-1).all()


def test_shape_count_respects_the_bounds():
    data = SyntheticShapes(2, 16, min_shapes=2, max_shapes=3)
    counts = {len(data.clip_with_meta(i)[1]) for i in range(30)}
    assert counts == {2, 3}


def test_shapes_of_a_clip_have_distinct_palette_colours():
    _, clips = long_clips()
    for _, tracks in clips:
        colours = [t.color for t in tracks]
        assert len(set(colours)) == len(colours) and set(colours) <= set(PALETTE)


def test_shape_sizes_and_speeds_are_in_the_exported_ranges():
    data, clips = long_clips()
    for _, tracks in clips:
        for t in tracks:
            assert max(MIN_RADIUS, RADIUS_RANGE[0] * data.size) <= t.radius <= RADIUS_RANGE[1] * data.size
            speed = float(np.hypot(*t.velocity))
            assert SPEED_RANGE[0] * data.size <= speed <= SPEED_RANGE[1] * data.size


def test_shapes_stay_fully_inside_the_frame():
    data, clips = long_clips()
    for _, tracks in clips:
        for t in tracks:
            assert (t.positions >= t.radius - 1e-9).all()
            assert (t.positions <= data.size - t.radius + 1e-9).all()


def test_velocity_is_constant_except_at_bounces():
    data, clips = long_clips()
    bounced = 0
    for _, tracks in clips:
        for t in tracks:
            steps = np.diff(t.positions, axis=0)  # (T-1, 2)
            speed = np.abs(t.velocity)  # (2,)
            low, high = t.radius, data.size - t.radius
            # A step that starts within one move of a wall may reflect; every other step is exact.
            near_wall = (t.positions[:-1] - low < speed) | (high - t.positions[:-1] < speed)
            assert np.allclose(np.abs(steps)[~near_wall], np.broadcast_to(speed, steps.shape)[~near_wall])
            bounced += int((np.abs(steps) < speed - 1e-9).sum())
    assert bounced > 0  # the clips are long enough that the bounce rule was exercised


def test_rendered_shape_keeps_its_colour_and_size_where_the_meta_says():
    data = SyntheticShapes(30, 32, seed=7, min_shapes=1, max_shapes=1)
    for index in range(6):
        clip, (track,) = data.clip_with_meta(index)
        colour = torch.tensor(from_uint8_frames(np.array(track.color, np.uint8).reshape(1, 1, 1, 3)))
        mask = (clip == colour.reshape(3, 1, 1, 1)).all(0)  # (T, H, W)
        ideal = (2 * track.radius) ** 2 if track.kind == "square" else np.pi * track.radius**2
        for t in range(data.frames):
            ys, xs = np.nonzero(mask[t].numpy())
            assert abs(len(ys) - ideal) <= 2 * np.pi * track.radius + 2  # area, up to the pixel edge
            centroid = np.array([ys.mean(), xs.mean()]) + 0.5  # pixel centres
            assert np.abs(centroid - track.positions[t]).max() <= 0.5


def test_batch_stacks_the_clips_of_consecutive_indices():
    data = SyntheticShapes(4, 16)
    batch = data.batch(step=2, batch_size=3)
    assert batch.shape == (3, 3, 4, 16, 16)
    for i in range(3):
        assert torch.equal(batch[i], data.clip(6 + i))


# ---------------------------------------------------------------------------------------------
# The batched torch renderer (what training on a GPU draws with)


def torch_rendered(data: SyntheticShapes, indices, device: str = "cpu") -> torch.Tensor:
    """The clips at `indices`, drawn by render_scenes from their shapes: (B, 3, T, H, W)."""
    scenes = stack_scenes([scene_arrays(data.tracks(i), data.max_shapes, data.frames) for i in indices])
    return render_scenes(scenes.to(torch.device(device)), data.height, data.width).cpu()


@pytest.mark.parametrize("frames,height,width,seed", [(8, 32, 32, 0), (3, 17, 33, 1), (1, 4, 4, 2), (40, 24, 24, 3)])
def test_the_torch_renderer_draws_the_reference_clips_bit_for_bit(frames, height, width, seed):
    data = SyntheticShapes(frames, height, seed=seed, height=height, width=width)
    indices = range(5, 29)  # 24 clips: both kinds, 1-3 shapes, overlaps and bounces
    assert torch.equal(torch_rendered(data, indices), torch.stack([data.clip(i) for i in indices]))


def edge_tracks(count: int = 64, size: int = 16) -> list[ShapeTrack]:
    """Shapes whose edge passes within 1e-12 px of a pixel centre: a renderer whose arithmetic
    differs from the reference's (float32 distances, say) draws some of those pixels differently."""
    rng = np.random.default_rng(0)
    tracks = []
    for k in range(count):
        radius = rng.uniform(2, 5)
        centre = 8.5 + radius + (1e-12 if k % 4 < 2 else -1e-12)  # pixel 8's centre lies on the edge
        kind = "square" if k % 2 else "disc"
        tracks.append(ShapeTrack(kind, PALETTE[k % len(PALETTE)], radius, np.array([[centre, 8.5]]), (0.0, 0.0)))
    return tracks


def test_the_torch_renderer_agrees_with_the_reference_on_pixels_at_shape_edges():
    tracks = edge_tracks()
    reference = torch.stack([torch.from_numpy(from_uint8_frames(render_tracks([t], 1, 16, 16))) for t in tracks])
    scenes = stack_scenes([scene_arrays([t], 1, 1) for t in tracks])
    assert torch.equal(render_scenes(scenes, 16, 16), reference)


def test_the_torch_renderer_pads_clips_with_fewer_shapes_than_the_most():
    data = SyntheticShapes(4, 16, min_shapes=1, max_shapes=6)
    counts = [len(data.tracks(i)) for i in range(12)]
    assert min(counts) < 6  # empty slots were drawn (as nothing)
    assert torch.equal(torch_rendered(data, range(12)), data.batch(0, 12))


def test_scenes_count_the_shapes_of_each_clip():
    data = SyntheticShapes(4, 16)
    scenes = stack_scenes([scene_arrays(data.tracks(i), data.max_shapes, data.frames) for i in range(10)])
    assert scenes.count.tolist() == [len(data.clip_with_meta(i)[1]) for i in range(10)]


@pytest.mark.gpu
def test_the_torch_renderer_on_cuda_draws_the_reference_clips_bit_for_bit():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    data = SyntheticShapes(16, 64, seed=5)
    assert torch.equal(torch_rendered(data, range(32), "cuda"), data.batch(0, 32))


@pytest.mark.parametrize("kwargs", [dict(size=3), dict(max_shapes=len(PALETTE) + 1),
                                    dict(min_shapes=2, max_shapes=1), dict(frames=0)])
def test_impossible_settings_raise_a_user_error(kwargs):
    args = dict(frames=4, size=16) | kwargs
    with pytest.raises(VdmError):
        SyntheticShapes(**args)


# ---------------------------------------------------------------------------------------------
# Folders of real video files
#
# frames=4 with frame_stride=2 needs 7 source frames.

FRAMES, SIZE, STRIDE = 4, 16, 2


def counter_video(frames: int, height: int, width: int) -> torch.Tensor:
    """(3, T, H, W) flat grey whose level encodes the frame number: level(k) = 16 * k."""
    levels = torch.arange(frames, dtype=torch.float32) * 16 / 127.5 - 1
    return levels.reshape(1, frames, 1, 1).expand(3, frames, height, width).contiguous()


def quiet_folder(root: Path, **kwargs) -> VideoFolder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return VideoFolder(root, FRAMES, SIZE, frame_stride=STRIDE, **kwargs)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """good.mp4, nested/deeper/upper.MP4, anim.gif (all usable), short.mp4, corrupt.mp4, notes.txt."""
    root = tmp_path_factory.mktemp("videos")
    (root / "nested" / "deeper").mkdir(parents=True)
    shapes = SyntheticShapes(12, 24)
    write_mp4(root / "good.mp4", counter_video(12, 24, 40))  # wider than tall: gets centre-cropped
    write_mp4(root / "nested" / "deeper" / "upper.MP4", shapes.clip(0))
    write_gif_grid(root / "anim.gif", shapes.clip(1)[None])
    write_mp4(root / "short.mp4", shapes.clip(2)[:, :3])  # 3 frames < 7 needed
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "notes.txt").write_text("not a video")
    return root


def test_folder_finds_nested_files_and_any_case_suffix(folder):
    names = {p.name for p in quiet_folder(folder).videos}
    assert names == {"good.mp4", "upper.MP4", "anim.gif"}


def test_corrupt_and_short_files_are_skipped_with_one_warning_each(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = VideoFolder(folder, FRAMES, SIZE, frame_stride=STRIDE)
    messages = [str(w.message) for w in caught]
    assert sorted(p.name for p, _ in data.skipped) == ["corrupt.mp4", "short.mp4"]
    assert sum("corrupt.mp4" in m for m in messages) == 1
    assert sum("short.mp4" in m and "3 frames" in m for m in messages) == 1


def test_folder_clips_have_the_requested_shape_and_range(folder):
    data = quiet_folder(folder)
    for index in range(6):
        clip = data.clip(index)
        assert clip.shape == (3, FRAMES, SIZE, SIZE) and clip.dtype == torch.float32
        assert clip.min() >= -1 and clip.max() <= 1


def test_folder_clips_and_batches_are_deterministic(folder):
    a, b = quiet_folder(folder, seed=4), quiet_folder(folder, seed=4)
    assert torch.equal(a.clip(3), b.clip(3))
    assert torch.equal(a.batch(1, 2), b.batch(1, 2))
    assert torch.equal(a.batch(1, 2)[1], a.clip(3))


def test_folder_clip_takes_frames_stride_apart(tmp_path):
    write_mp4(tmp_path / "counter.mp4", counter_video(12, 16, 16))
    data = quiet_folder(tmp_path)
    levels = (data.clip(0).mean(dim=(0, 2, 3)) + 1) * 127.5 / 16  # (T,) source frame numbers
    assert np.allclose(np.diff(levels.numpy()), STRIDE, atol=0.25)


def test_square_frame_crops_the_centre_then_resizes():
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, :10] = (255, 0, 0)  # left quarter: cropped away
    frame[:, 10:30] = (0, 255, 0)  # centre square
    frame[:, 30:] = (0, 0, 255)  # right quarter: cropped away
    out = square_frame(frame, 8)
    assert out.shape == (8, 8, 3)
    # Like resizing the whole frame, the filter blends the crop's edge columns with their neighbours.
    assert (out[:, 1:-1] == (0, 255, 0)).all()
    assert (out[:, [0, -1], 1] > 200).all()


def test_a_missing_folder_raises_a_user_error(tmp_path):
    with pytest.raises(VdmError, match="does not exist"):
        VideoFolder(tmp_path / "nope", FRAMES, SIZE)


def test_an_empty_folder_raises_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(VdmError, match="found 0 video"):
        VideoFolder(tmp_path, FRAMES, SIZE)


def test_a_folder_of_only_bad_videos_says_how_many_were_skipped(tmp_path):
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(VdmError, match="found 1 video.*skipped 1"):
        quiet_folder(tmp_path)


def test_a_video_that_breaks_after_probing_is_dropped_with_a_warning(tmp_path):
    write_mp4(tmp_path / "a.mp4", counter_video(8, 16, 16))
    write_mp4(tmp_path / "b.mp4", counter_video(8, 16, 16))
    data = quiet_folder(tmp_path)
    (tmp_path / "a.mp4").write_bytes(b"\x00" * 100)  # the file goes bad mid-training
    with pytest.warns(UserWarning, match="a.mp4"):
        clips = [data.clip(i) for i in range(8)]
    assert all(c.shape == (3, FRAMES, SIZE, SIZE) for c in clips)
    assert [p.name for p in data.videos] == ["b.mp4"]
    assert [p.name for p, _ in data.skipped] == ["a.mp4"]


def test_make_dataset_picks_synthetic_or_folder(folder):
    assert isinstance(make_dataset("synthetic", 4, 16), SyntheticShapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(make_dataset(str(folder), FRAMES, SIZE, frame_stride=STRIDE), VideoFolder)

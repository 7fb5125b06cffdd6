"""Specification of vdm.video and vdm.atomic: tensor/frame conversion, mp4/gif files, atomic writes."""
from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from vdm import video as video_mod
from vdm.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from vdm.errors import VdmError
from vdm.video import (
    GRID_GAP,
    from_uint8_frames,
    make_grid,
    probe_frame_count,
    read_video,
    to_uint8_frames,
    write_gif_grid,
    write_mp4,
)


def blocky_video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1]: 8x8 blocks of random colour that shift one block right per frame."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(-1, 1, (3, height // 8 + 1, width // 8 + frames + 1))
    cells = np.kron(blocks, np.ones((1, 8, 8)))  # (3, H', W') one colour per 8x8 cell
    clip = np.stack([cells[:, :height, 8 * t:8 * t + width] for t in range(frames)], axis=1)
    return torch.from_numpy(clip.astype(np.float32))  # (3, T, H, W)


def mean_abs_error(frames: np.ndarray, video: torch.Tensor) -> float:
    return float(np.abs(frames.astype(np.int16) - to_uint8_frames(video).astype(np.int16)).mean())


# ---------------------------------------------------------------------------------------------
# Tensors <-> uint8 frames


def test_uint8_frames_survive_a_float_round_trip_exactly():
    frames = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8_frames(from_uint8_frames(frames)), frames)


def test_from_uint8_frames_is_channels_first_float_in_range():
    frames = np.array([0, 255], dtype=np.uint8).repeat(3).reshape(2, 1, 1, 3)
    x = from_uint8_frames(frames)
    assert x.shape == (3, 2, 1, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0


def test_to_uint8_frames_repeats_a_grey_channel():
    grey = torch.linspace(-1, 1, 6).reshape(1, 2, 1, 3)
    frames = to_uint8_frames(grey)
    assert frames.shape == (2, 1, 3, 3)
    assert (frames == frames[..., :1]).all()


def test_to_uint8_frames_clips_values_outside_the_range():
    frames = to_uint8_frames(torch.tensor([-5.0, 5.0, float("nan")]).reshape(1, 1, 1, 3))
    assert frames[0, 0].tolist() == [[0, 0, 0], [255, 255, 255], [128, 128, 128]]


def test_to_uint8_frames_rejects_a_wrong_channel_count():
    with pytest.raises(VdmError, match="C = 1 or 3"):
        to_uint8_frames(torch.zeros(2, 1, 4, 4))


def test_make_grid_places_tiles_row_major_with_a_gap():
    videos = torch.stack([torch.full((3, 2, 4, 5), v) for v in (-1.0, 0.0, 1.0)])  # (N, C, T, H, W)
    grid = make_grid(videos, ncols=2)
    assert grid.shape == (2, 2 * 4 + GRID_GAP, 2 * 5 + GRID_GAP, 3)
    assert (grid[:, :4, :5] == 0).all()  # tile 0, top left
    assert (grid[:, :4, 5 + GRID_GAP:] == 128).all()  # tile 1, top right
    assert (grid[:, 4 + GRID_GAP:, :5] == 255).all()  # tile 2, bottom left


# ---------------------------------------------------------------------------------------------
# mp4


@pytest.mark.parametrize("size", [32, 64])
def test_mp4_round_trip_keeps_shape_and_pixels(tmp_path, size):
    clip = blocky_video(6, size, size)
    write_mp4(tmp_path / "clip.mp4", clip)
    frames = read_video(tmp_path / "clip.mp4")
    assert frames.shape == (6, size, size, 3) and frames.dtype == np.uint8
    assert mean_abs_error(frames, clip) < 6  # near-lossless, up to chroma subsampling at block edges


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    clip = blocky_video(3, 17, 33)
    write_mp4(tmp_path / "odd.mp4", clip)
    frames = read_video(tmp_path / "odd.mp4")
    assert frames.shape == (3, 18, 34, 3)
    assert mean_abs_error(frames[:, :17, :33], clip) < 6


def test_mp4_accepts_a_single_channel_numpy_video(tmp_path):
    grey = np.zeros((1, 2, 16, 16), np.float32)
    write_mp4(tmp_path / "grey.mp4", grey)
    assert read_video(tmp_path / "grey.mp4").shape == (2, 16, 16, 3)


def test_probe_frame_count_matches_frames_written(tmp_path):
    write_mp4(tmp_path / "clip.mp4", blocky_video(7, 16, 16))
    assert probe_frame_count(tmp_path / "clip.mp4") == 7


def test_mp4_write_leaves_no_temporary_file(tmp_path):
    write_mp4(tmp_path / "clip.mp4", blocky_video(2, 16, 16))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_failed_mp4_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    write_mp4(path, blocky_video(4, 16, 16))
    before = path.read_bytes()
    real_write_frames = imageio_ffmpeg.write_frames

    def dies_after_two_frames(*args, **kwargs):
        writer = real_write_frames(*args, **kwargs)
        frame = yield writer.send(None)
        for _ in range(2):
            writer.send(frame)
            frame = yield
        writer.close()  # ffmpeg has already written part of the new file
        raise OSError("disk full")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", dies_after_two_frames)
    with pytest.raises(VdmError, match="clip.mp4: disk full"):
        write_mp4(path, blocky_video(8, 16, 16, seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_mp4_into_a_missing_directory_says_which(tmp_path):
    with pytest.raises(VdmError, match="does not exist"):
        write_mp4(tmp_path / "nope" / "clip.mp4", blocky_video(1, 16, 16))


# ---------------------------------------------------------------------------------------------
# gif


def test_gif_grid_is_readable_with_every_frame_and_the_grid_size(tmp_path):
    videos = torch.stack([blocky_video(5, 16, 16, seed=s) for s in range(3)])  # (N, C, T, H, W)
    write_gif_grid(tmp_path / "grid.gif", videos, ncols=2)
    frames = read_video(tmp_path / "grid.gif")
    assert frames.shape == (5, 2 * 16 + GRID_GAP, 2 * 16 + GRID_GAP, 3)
    assert probe_frame_count(tmp_path / "grid.gif") == 5


def test_failed_gif_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "grid.gif"
    write_gif_grid(path, blocky_video(3, 8, 8)[None])
    before = path.read_bytes()
    monkeypatch.setattr(video_mod, "make_grid", lambda *a, **k: np.zeros((3, 8, 8, 7), np.uint8))
    with pytest.raises(Exception):  # Pillow cannot build an image with 7 channels
        write_gif_grid(path, blocky_video(3, 8, 8, seed=1)[None])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["grid.gif"]


# ---------------------------------------------------------------------------------------------
# Reading errors


def test_reading_a_missing_file_names_it(tmp_path):
    with pytest.raises(VdmError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_reading_a_corrupt_file_names_it(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(VdmError, match="corrupt.mp4"):
        read_video(path)
    with pytest.raises(VdmError, match="corrupt.mp4"):
        probe_frame_count(path)


def test_reading_an_unsupported_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_text("hello")
    with pytest.raises(VdmError, match=".mp4"):
        read_video(path)


# ---------------------------------------------------------------------------------------------
# vdm.atomic


def test_atomic_write_text_and_bytes_replace_the_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_keeps_the_old_file_and_removes_the_temporary_on_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_temporary_sits_next_to_the_target_with_its_suffix(tmp_path):
    with atomic_path(tmp_path / "clip.mp4") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".mp4" and tmp.name != "clip.mp4"
        tmp.write_bytes(b"x")

"""Video file IO: tensors in [-1, 1] to mp4/gif files and back.

The model side of the project speaks `(C, T, H, W)` float tensors in [-1, 1]; files speak
`(T, H, W, 3)` uint8 frames. `to_uint8_frames` / `from_uint8_frames` convert between the two, and
every writer here is atomic (see `vdm.atomic`), so an interrupted run never leaves half a video.

mp4 is H.264 in yuv420p, the format every browser and player can show. Chroma in yuv420p is stored
at half resolution, so odd heights/widths are padded by one replicated edge pixel to the next even
size; reading such a file back gives the padded size.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image, ImageSequence

from vdm.atomic import atomic_path
from vdm.errors import VdmError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".gif")  # what read_video and VideoFolder accept
MP4_QUALITY = 8  # imageio-ffmpeg's 0..10 scale; 8 is x264 crf 10: near-lossless for small clips
GRID_GAP = 2  # pixels between the tiles of a grid
GRID_GAP_COLOR = (255, 255, 255)  # white, so tiles stand apart even on black backgrounds

VideoLike = torch.Tensor | np.ndarray


def _reason(err: BaseException, line: int = -1) -> str:
    """One line of an error for a message. ffmpeg errors carry whole logs: when reading, the log's
    last line says what broke; when writing, the first line (the log that follows is empty)."""
    lines = [text.strip() for text in str(err).splitlines() if text.strip()]
    return (lines[line] if lines else type(err).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Tensors <-> uint8 frames


def _as_numpy(video: VideoLike) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        return video.detach().to("cpu", torch.float32).numpy()
    return np.asarray(video, dtype=np.float32)


def to_uint8_frames(video: VideoLike) -> np.ndarray:
    """(C, T, H, W) float in [-1, 1], C = 1 or 3 -> (T, H, W, 3) uint8. Values outside are clipped."""
    x = _as_numpy(video)
    if x.ndim != 4 or x.shape[0] not in (1, 3):
        raise VdmError(f"expected a video shaped (C, T, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)  # (3, T, H, W): grey as RGB
    x = np.nan_to_num(x, nan=0.0)  # a NaN would cast to an arbitrary byte
    x = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))  # (T, H, W, 3)


def from_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float32 in [-1, 1]; the exact inverse of `to_uint8_frames`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VdmError(f"expected uint8 frames shaped (T, H, W, 3), got {frames.dtype} {frames.shape}")
    x = frames.transpose(3, 0, 1, 2).astype(np.float32)  # (3, T, H, W)
    return x / 127.5 - 1.0


def make_grid(videos: VideoLike, ncols: int | None = None, gap: int = GRID_GAP) -> np.ndarray:
    """Tile (N, C, T, H, W) videos in [-1, 1] into one (T, H', W', 3) uint8 video, row by row.

    `ncols` defaults to ceil(sqrt(N)); tiles are `gap` pixels apart, empty cells stay gap-coloured.
    """
    x = _as_numpy(videos)
    if x.ndim != 5:
        raise VdmError(f"expected videos shaped (N, C, T, H, W), got {tuple(x.shape)}")
    n, _, t, h, w = x.shape
    if n == 0:
        raise VdmError("cannot make a grid of zero videos")
    ncols = min(ncols or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncols)
    grid = np.empty((t, nrows * (h + gap) - gap, ncols * (w + gap) - gap, 3), np.uint8)
    grid[:] = GRID_GAP_COLOR
    for i in range(n):
        top, left = (i // ncols) * (h + gap), (i % ncols) * (w + gap)
        grid[:, top:top + h, left:left + w] = to_uint8_frames(x[i])  # (T, H, W, 3)
    return grid


# ---------------------------------------------------------------------------------------------
# Writing


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) -> (T, H + H%2, W + W%2, 3), repeating the last row/column (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _encode_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """Encode (T, H, W, 3) uint8 frames with even H, W as H.264 into `path` (container from its suffix)."""
    _, h, w, _ = frames.shape
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, quality=MP4_QUALITY, pix_fmt_out="yuv420p",
        macro_block_size=1,  # sizes are already even; don't let imageio rescale to multiples of 16
        ffmpeg_log_level="error",
    )
    writer.send(None)  # start ffmpeg
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()  # flushes and waits for ffmpeg
    # imageio-ffmpeg does not check ffmpeg's exit status; an empty file is how a failure shows.
    if path.stat().st_size == 0:
        raise VdmError(f"ffmpeg wrote nothing for {path}; see its messages above")


def write_mp4(path: str | os.PathLike, video: VideoLike, fps: float = 8) -> None:
    """Write one (C, T, H, W) video in [-1, 1] (C = 1 or 3) as an H.264 mp4, atomically.

    Odd H or W are padded by one pixel (see the module docstring). On failure a previous file at
    `path` is left as it was.
    """
    frames = to_uint8_frames(video)  # (T, H, W, 3)
    if len(frames) == 0:
        raise VdmError(f"cannot write {path}: the video has no frames")
    frames = _pad_to_even(frames)  # (T, H', W', 3)
    try:
        with atomic_path(path) as tmp:
            _encode_mp4(tmp, frames, fps)
    except OSError as e:  # ffmpeg died, disk full, no permission: the user can act on these
        raise VdmError(f"could not write {path}: {_reason(e, line=0)} "
                       f"(ffmpeg's messages above say why)") from e


def write_gif_grid(path: str | os.PathLike, videos: VideoLike, fps: float = 8,
                   ncols: int | None = None) -> None:
    """Write (N, C, T, H, W) videos in [-1, 1] as one looping GIF grid (see `make_grid`), atomically.

    GIF stores delays in 1/100 s, so the frame rate is rounded to that. Pillow merges identical
    consecutive frames into one longer frame; the animation plays the same.
    """
    grid = make_grid(videos, ncols)  # (T, H', W', 3)
    images = [Image.fromarray(frame) for frame in grid]
    try:
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=round(1000 / fps), loop=0)
    except OSError as e:
        raise VdmError(f"could not write {path}: {_reason(e, line=0)}") from e


# ---------------------------------------------------------------------------------------------
# Reading


SAMPLE_FILES = re.compile(r"sample_\d{3,}\.mp4|grid\.gif")  # what write_videos writes, and nothing else


def write_videos(folder: str | os.PathLike, videos: VideoLike, fps: float = 8) -> tuple[list[Path], list[Path]]:
    """sample_000.mp4, sample_001.mp4, ... one per video (N, C, T, H, W), and grid.gif of all of them.

    A folder holds one set: files of this kind from an earlier call that the new set does not replace
    are removed once the new ones are written (other files are never touched). Returns (written,
    the earlier files replaced or removed).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = sorted(p for p in folder.iterdir() if SAMPLE_FILES.fullmatch(p.name) and p.is_file())
    paths = []
    for i, video in enumerate(videos):
        paths.append(folder / f"sample_{i:03d}.mp4")
        write_mp4(paths[-1], video, fps=fps)
    paths.append(folder / "grid.gif")
    write_gif_grid(paths[-1], videos, fps=fps)
    for stale in set(earlier) - set(paths):
        stale.unlink(missing_ok=True)
    return paths, earlier


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise VdmError(f"video file {path} does not exist")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VdmError(f"{path}: unsupported video type; use one of {' '.join(VIDEO_SUFFIXES)}")


def _iter_gif(path: Path) -> Iterator[np.ndarray]:
    try:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(frame.convert("RGB"))  # (H, W, 3)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's ways of saying "not a valid GIF"
        raise VdmError(f"cannot read video {path}: {_reason(e)}") from e


def _iter_ffmpeg(path: Path) -> Iterator[np.ndarray]:
    # passthrough: one output frame per decoded frame, no duplicates/drops to force a constant rate.
    reader = imageio_ffmpeg.read_frames(str(path), output_params=["-fps_mode", "passthrough"])
    try:
        width, height = next(reader)["size"]
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)  # (H, W, 3)
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        raise VdmError(f"cannot read video {path}: {_reason(e)}") from e
    finally:
        reader.close()  # stops ffmpeg if the caller stopped early


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the frames of a video file one at a time, each (H, W, 3) uint8.

    Decoding a frame at a time lets callers shrink frames before keeping them (see `vdm.data`).
    """
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() == ".gif":
        return _iter_gif(path)
    return _iter_ffmpeg(path)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read a whole video file (mp4, avi, mov, webm, gif) -> (T, H, W, 3) uint8."""
    frames = list(iter_frames(path))
    if not frames:
        raise VdmError(f"cannot read video {path}: it has no frames")
    return np.stack(frames)  # (T, H, W, 3)


def probe_frame_count(path: str | os.PathLike) -> int:
    """Count a video's frames without keeping them. Raises VdmError naming the file if it is unreadable."""
    path = Path(path)
    _check_readable(path)
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (OSError, RuntimeError, ValueError, SyntaxError) as e:
        raise VdmError(f"cannot read video {path}: {_reason(e)}") from e

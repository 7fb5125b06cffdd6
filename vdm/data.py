"""Datasets of video clips: synthetic bouncing shapes (built in) and a folder of video files.

Every dataset gives clips as float32 tensors `(C=3, T, H, W)` in [-1, 1], addressed by an integer
index, and a clip depends only on `(seed, index)`. `batch(step, batch_size)` takes the clips
`step * batch_size ...`, so a training batch is a pure function of the step and a resumed run sees
exactly the data it would have seen.

The synthetic clips have two renderers that give the same pixels: `render_tracks` (numpy, one clip)
and `render_scenes` (torch, a batch at once, on any device), both from the same per-clip shapes.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from vdm.errors import VdmError
from vdm.video import VIDEO_SUFFIXES, from_uint8_frames, iter_frames, probe_frame_count

# The synthetic data's ground truth, exported so a quality metric can check generated videos
# against the same rules. Lengths are fractions of min(H, W).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),  # red
    (0, 255, 0),  # green
    (0, 0, 255),  # blue
    (255, 255, 0),  # yellow
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
)
SHAPE_KINDS: tuple[str, ...] = ("square", "disc")
RADIUS_RANGE = (0.08, 0.18)  # disc radius / square half-side, × min(H, W)
MIN_RADIUS = 2.0  # px; smaller shapes vanish into a pixel or two
SPEED_RANGE = (0.03, 0.08)  # px per frame, × min(H, W); the direction is uniform
BACKGROUND = (0, 0, 0)  # black


class ClipDataset:
    """Clips addressed by an integer index. Subclasses implement `clip`."""

    frames: int  # T of every clip
    size: int  # H (and W) of every clip

    def clip(self, index: int) -> torch.Tensor:
        """One clip, (3, T, H, W) float32 in [-1, 1]; depends only on (seed, index)."""
        raise NotImplementedError(f"{type(self).__name__} must implement clip()")

    def __getitem__(self, index: int) -> torch.Tensor:
        """The clip at `index`, so a dataset can feed a `torch.utils.data.DataLoader`."""
        return self.clip(index)

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Clips step*batch_size ... step*batch_size + batch_size - 1, stacked: (B, 3, T, H, W)."""
        first = step * batch_size
        return torch.stack([self.clip(first + i) for i in range(batch_size)])


# ---------------------------------------------------------------------------------------------
# Synthetic bouncing shapes
#
# Geometry is continuous: the frame spans [0, H] x [0, W] and pixel (i, j) has its centre at
# (i + 0.5, j + 0.5). A shape with centre (y, x) and radius r is fully inside while r <= y <= H - r
# and r <= x <= W - r; a pixel belongs to it when its centre is inside the disc / square.


@dataclass
class ShapeTrack:
    """One shape of a synthetic clip, with its whole trajectory."""

    kind: Literal["square", "disc"]
    color: tuple[int, int, int]  # RGB in 0..255, one of PALETTE
    radius: float  # disc radius or square half-side, px
    positions: np.ndarray  # (T, 2) centre (y, x) per frame, px
    velocity: tuple[float, float]  # (vy, vx) px per frame at frame 0; an axis flips sign at each bounce


def bounce(start: float, velocity: float, low: float, high: float, frames: int) -> np.ndarray:
    """(T,) positions of a point moving at `velocity` per frame that reflects off `low` and `high`.

    Unfolding the reflections gives a straight line; folding it back into [low, high] is a
    triangle wave of period 2 * (high - low).
    """
    span = high - low
    if span <= 0:
        return np.full(frames, low, dtype=np.float64)
    unfolded = np.mod(start - low + velocity * np.arange(frames), 2 * span)
    return low + np.where(unfolded <= span, unfolded, 2 * span - unfolded)


def _sample_track(rng: np.random.Generator, color: tuple[int, int, int], frames: int,
                  height: int, width: int) -> ShapeTrack:
    """Draw one shape's kind, size, start and velocity; integrate its bouncing path."""
    scale = min(height, width)
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    radius = float(np.clip(rng.uniform(*RADIUS_RANGE) * scale, MIN_RADIUS, scale / 2))
    start = rng.uniform((radius, radius), (height - radius, width - radius))  # (y, x)
    speed = rng.uniform(*SPEED_RANGE) * scale
    angle = rng.uniform(0, 2 * np.pi)
    vy, vx = speed * np.sin(angle), speed * np.cos(angle)
    ys = bounce(start[0], vy, radius, height - radius, frames)
    xs = bounce(start[1], vx, radius, width - radius, frames)
    return ShapeTrack(kind, color, radius, np.stack([ys, xs], axis=1), (float(vy), float(vx)))  # (T, 2)


def _shape_masks(track: ShapeTrack, height: int, width: int) -> np.ndarray:
    """(T, H, W) bool: which pixel centres the shape covers in each frame."""
    ys = np.arange(height)[None, :, None] + 0.5  # (1, H, 1)
    xs = np.arange(width)[None, None, :] + 0.5  # (1, 1, W)
    dy = ys - track.positions[:, 0, None, None]  # (T, H, 1)
    dx = xs - track.positions[:, 1, None, None]  # (T, 1, W)
    if track.kind == "square":
        return (np.abs(dy) <= track.radius) & (np.abs(dx) <= track.radius)
    elif track.kind == "disc":
        return dy**2 + dx**2 <= track.radius**2
    else:
        raise ValueError(f"unknown shape kind {track.kind!r}")


def render_tracks(tracks: list[ShapeTrack], frames: int, height: int, width: int) -> np.ndarray:
    """Draw shapes in list order (later ones on top) on the background -> (T, H, W, 3) uint8."""
    video = np.empty((frames, height, width, 3), np.uint8)
    video[:] = BACKGROUND
    for track in tracks:
        video[_shape_masks(track, height, width)] = track.color
    return video


class SyntheticShapes(ClipDataset):
    """Bouncing squares and discs on black: 1-3 shapes per clip, each its own palette colour.

    Shapes keep their colour and size, move at constant velocity and reflect off the borders, so
    they are always fully inside the frame. A clip depends only on (seed, index).
    """

    def __init__(self, frames: int, size: int, seed: int = 0, min_shapes: int = 1,
                 max_shapes: int = 3, *, height: int | None = None, width: int | None = None):
        self.frames, self.size, self.seed = frames, size, seed
        self.height, self.width = height or size, width or size
        self.min_shapes, self.max_shapes = min_shapes, max_shapes
        self._validate()

    def _validate(self) -> None:
        if self.frames < 1:
            raise VdmError(f"frames must be >= 1, got {self.frames}")
        if min(self.height, self.width) < 2 * MIN_RADIUS:
            raise VdmError(f"synthetic clips need H and W >= {2 * MIN_RADIUS:g} to fit a shape, "
                           f"got H={self.height} W={self.width}")
        if not 1 <= self.min_shapes <= self.max_shapes <= len(PALETTE):
            raise VdmError(f"need 1 <= min_shapes <= max_shapes <= {len(PALETTE)} (one colour each), "
                           f"got min_shapes={self.min_shapes} max_shapes={self.max_shapes}")

    def tracks(self, index: int) -> list[ShapeTrack]:
        """The shapes of clip `index`, in drawing order: everything the clip's pixels follow from."""
        rng = np.random.default_rng([self.seed, index])
        count = rng.integers(self.min_shapes, self.max_shapes + 1)
        colors = rng.choice(len(PALETTE), size=count, replace=False)  # distinct within the clip
        return [_sample_track(rng, PALETTE[c], self.frames, self.height, self.width) for c in colors]

    def clip_with_meta(self, index: int) -> tuple[torch.Tensor, list[ShapeTrack]]:
        """One clip (3, T, H, W) in [-1, 1] and its shapes, in drawing order."""
        tracks = self.tracks(index)
        video = render_tracks(tracks, self.frames, self.height, self.width)  # (T, H, W, 3)
        return torch.from_numpy(from_uint8_frames(video)), tracks

    def clip(self, index: int) -> torch.Tensor:
        return self.clip_with_meta(index)[0]


# ---------------------------------------------------------------------------------------------
# Class labels of synthetic clips, for class-conditional models (ModelConfig.class_label):
#   count   the number of shapes - 1
#   colors  the set of palette colours in the clip, as a bitmask over PALETTE, - 1 (never 0 shapes)
#   shapes  each palette colour's shape in the clip as a base-3 digit (0 absent, 1 square, 2 disc), - 1


def label_classes(kind: str, max_shapes: int) -> int:
    """How many classes labels of `kind` need for clips of up to `max_shapes` shapes."""
    return {"count": max_shapes, "colors": 2 ** len(PALETTE) - 1, "shapes": 3 ** len(PALETTE) - 1}[kind]


def colors_label(palette_indices) -> int:
    """The "colors" label of a clip whose shapes have these PALETTE indices."""
    return sum(1 << int(i) for i in palette_indices) - 1


def shape_digit(kind: str) -> int:
    """A shape kind's base-3 digit in a "shapes" label (0 stands for a colour the clip lacks)."""
    return 1 + SHAPE_KINDS.index(kind)


def shapes_label(palette_indices, kinds) -> int:
    """The "shapes" label of a clip whose shapes have these PALETTE indices and SHAPE_KINDS."""
    return sum(shape_digit(kind) * 3 ** int(i) for i, kind in zip(palette_indices, kinds)) - 1


def label_digits(label: int, base: int) -> list[int]:
    """Each PALETTE colour's digit in a "colors" (base 2) or "shapes" (base 3) label; 0 = absent."""
    return [(label + 1) // base**i % base for i in range(len(PALETTE))]


def colors_of_shapes_label(label: int) -> int:
    """The "colors" label of the clips of "shapes" label `label`: its colours without their shapes."""
    return colors_label(i for i, digit in enumerate(label_digits(label, 3)) if digit)


def label_features(kind: str, counts: bool = False) -> np.ndarray:
    """(classes + 1, F) 0/1: which of F features each "colors" or "shapes" label holds, the null class last.

    "colors": one feature per palette colour; "shapes": one per palette colour and shape kind; with
    `counts`, then one per number of shapes (1 .. len(PALETTE)). The null class holds only the last
    feature, its own. A shared label embedding sums the features' vectors.
    """
    base = {"colors": 2, "shapes": 1 + len(SHAPE_KINDS)}[kind]  # a colour's digit: absent, or present (as a kind)
    classes = label_classes(kind, 0)
    shape_features = len(PALETTE) * (base - 1)
    features = np.zeros((classes + 1, shape_features + counts * len(PALETTE) + 1), dtype=np.float32)
    for label in range(classes):
        digits = label_digits(label, base)
        for colour, digit in enumerate(digits):
            if digit:
                features[label, colour * (base - 1) + digit - 1] = 1.0
        if counts:
            features[label, shape_features + sum(map(bool, digits)) - 1] = 1.0
    features[classes, -1] = 1.0
    return features


def clip_label(tracks: list[ShapeTrack], kind: str) -> int:
    """The class label of a clip with these shapes."""
    if kind == "count":
        return len(tracks) - 1
    indices = [PALETTE.index(track.color) for track in tracks]
    return colors_label(indices) if kind == "colors" else shapes_label(indices, [t.kind for t in tracks])


def data_labels(kind: str, count: int, seed: int) -> list[int]:
    """The labels of synthetic clips 0 .. count - 1 of data seed `seed`: what a class-conditional model
    is asked for when no class is given, so that its videos follow the data's mix of labels."""
    shapes = SyntheticShapes(frames=1, size=32, seed=seed)  # a clip's label does not depend on T or H, W
    return [clip_label(shapes.tracks(i), kind) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# The same shapes rendered by torch: a batch of clips at once, on any device
#
# Geometry is computed in float64 with the reference's operations in the reference's order (one
# subtraction per distance, squares added once), so every pixel comes out bit-identical to
# `render_tracks`; each shape is a (B, T, H, W) mask painted over the shapes before it.


@dataclass
class Scenes:
    """The shapes of B clips as padded arrays, S = the most shapes a clip can have.

    Slots past a clip's shape count have radius -1, so they cover no pixel.
    """

    positions: torch.Tensor  # (B, S, T, 2) float64 centre (y, x) per frame, px
    radius: torch.Tensor  # (B, S) float64 disc radius / square half-side, px; -1 for an empty slot
    radius_sq: torch.Tensor  # (B, S) float64 radius ** 2 as Python computes it; -1 for an empty slot
    square: torch.Tensor  # (B, S) bool: square (True) or disc
    color: torch.Tensor  # (B, S) int64 index into SCENE_COLORS (0 = background)
    count: torch.Tensor  # (B,) int64 shapes per clip

    def to(self, device: torch.device, non_blocking: bool = False) -> "Scenes":
        return Scenes(*(getattr(self, f.name).to(device, non_blocking=non_blocking)
                        for f in dataclasses.fields(self)))

    def pin_memory(self) -> "Scenes":
        """Page-locked copies, for asynchronous host-to-GPU copies (DataLoader's pin_memory calls this)."""
        return Scenes(*(getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)))


def scene_arrays(tracks: list[ShapeTrack], max_shapes: int, frames: int) -> dict[str, np.ndarray]:
    """One clip's shapes as the padded arrays of one row of `Scenes` (without the B axis)."""
    arrays = dict(positions=np.zeros((max_shapes, frames, 2)), radius=np.full(max_shapes, -1.0),
                  radius_sq=np.full(max_shapes, -1.0), square=np.zeros(max_shapes, bool),
                  color=np.zeros(max_shapes, np.int64), count=np.int64(len(tracks)))
    for s, track in enumerate(tracks):
        arrays["positions"][s] = track.positions  # (T, 2)
        arrays["radius"][s], arrays["radius_sq"][s] = track.radius, track.radius**2
        arrays["square"][s] = track.kind == "square"
        arrays["color"][s] = PALETTE.index(track.color) + 1
    return arrays


def scene_labels(scenes: Scenes, kind: str) -> torch.Tensor:
    """(B,) int64: `clip_label` of each clip in `scenes`, on their device."""
    if kind == "count":
        return scenes.count - 1
    place = (scenes.color - 1).clamp(min=0)  # (B, S) palette index; empty slots have colour 0
    if kind == "colors":
        digits = torch.where(scenes.color > 0, 2**place, 0)
    else:
        shape = torch.where(scenes.square, shape_digit("square"), shape_digit("disc"))  # (B, S)
        digits = torch.where(scenes.color > 0, shape * 3**place, 0)
    return digits.sum(dim=1) - 1


def stack_scenes(rows: list[dict[str, np.ndarray]]) -> Scenes:
    """Stack the `scene_arrays` of B clips into one `Scenes` (CPU tensors)."""
    return Scenes(*(torch.from_numpy(np.stack([row[f.name] for row in rows]))
                    for f in dataclasses.fields(Scenes)))


@functools.lru_cache(maxsize=None)
def scene_colors(device: torch.device) -> torch.Tensor:
    """(1 + len(PALETTE), 3) float32 on `device`: the background, then the palette, in [-1, 1] as the
    clips hold them. Cached: copying it to a GPU on every call would wait for the GPU each time."""
    rgb = np.array([BACKGROUND, *PALETTE], np.uint8).reshape(1, -1, 1, 3)  # (T=1, H=K, W=1, 3)
    return torch.from_numpy(from_uint8_frames(rgb).reshape(3, -1).T.copy()).to(device)  # (K, 3)


def render_scenes(scenes: Scenes, height: int, width: int) -> torch.Tensor:
    """Draw B clips on scenes' device -> (B, 3, T, H, W) float32 in [-1, 1], channels-last in memory.

    Shapes are drawn in slot order (later ones on top), as `render_tracks` draws them.
    """
    device = scenes.positions.device
    b, s, t, _ = scenes.positions.shape
    ys = torch.arange(height, dtype=torch.float64, device=device) + 0.5  # (H,) pixel centres
    xs = torch.arange(width, dtype=torch.float64, device=device) + 0.5  # (W,)
    canvas = torch.zeros(b, t, height, width, dtype=torch.uint8, device=device)  # colour index per pixel
    for slot in range(s):
        dy = ys - scenes.positions[:, slot, :, 0, None]  # (B, T, H)
        dx = xs - scenes.positions[:, slot, :, 1, None]  # (B, T, W)
        radius = scenes.radius[:, slot, None, None]  # (B, 1, 1)
        square = (dy.abs() <= radius)[..., :, None] & (dx.abs() <= radius)[..., None, :]  # (B, T, H, W)
        disc = dy.square()[..., :, None] + dx.square()[..., None, :] <= scenes.radius_sq[:, slot, None, None, None]
        covered = torch.where(scenes.square[:, slot, None, None, None], square, disc)  # (B, T, H, W)
        canvas = torch.where(covered, scenes.color[:, slot, None, None, None].to(torch.uint8), canvas)
    return scene_colors(device)[canvas.long()].permute(0, 4, 1, 2, 3)  # (B, T, H, W, 3) -> (B, 3, T, H, W)


# ---------------------------------------------------------------------------------------------
# A folder of video files


def find_videos(root: Path) -> list[Path]:
    """Video files under `root`, recursively, by suffix (any case), sorted for a stable order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def square_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): centre-crop to a square, resize (antialiased bilinear).

    Resizing only the centred square (Pillow's `box`) is the same as scaling the short side to
    `size` and then centre-cropping, including the filter's reach past the crop edge, but resizes
    fewer pixels.
    """
    h, w, _ = frame.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    if side == size:
        return frame[top:top + side, left:left + side]
    box = (left, top, left + side, top + side)
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR, box=box))


class VideoFolder(ClipDataset):
    """Clips cut from the video files under a folder (.mp4 .avi .mov .webm .gif, recursively).

    Each file is probed once at construction; unreadable or too-short files are skipped with one
    warning each and listed in `self.skipped` as (path, reason). A clip takes `frames` frames,
    `frame_stride` apart, from a random start in a random video, and squares them to `size`.
    """

    def __init__(self, root: str | Path, frames: int, size: int, frame_stride: int = 1,
                 seed: int = 0, cache_size: int = 16):
        if frames < 1 or size < 1 or frame_stride < 1:
            raise VdmError(f"frames, size and frame_stride must be >= 1, "
                           f"got {frames}, {size}, {frame_stride}")
        self.root, self.frames, self.size = Path(root), frames, size
        self.frame_stride, self.seed, self.cache_size = frame_stride, seed, cache_size
        self.span = (frames - 1) * frame_stride + 1  # source frames one clip covers
        self.skipped: list[tuple[Path, str]] = []
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()  # path -> (N, size, size, 3) uint8
        self.videos = self._usable_videos()

    def _skip(self, path: Path, reason: str) -> None:
        warnings.warn(f"skipping video {path}: {reason}", stacklevel=3)
        self.skipped.append((path, reason))

    def _usable_videos(self) -> list[Path]:
        if not self.root.is_dir():
            raise VdmError(f"data folder {self.root} does not exist (or is not a folder); "
                           f"pass a folder of videos, or 'synthetic' for the built-in data")
        found = find_videos(self.root)
        usable = [path for path in found if self._probe(path)]
        if not usable:
            raise VdmError(f"no usable video under {self.root}: found {len(found)} video file(s) "
                           f"({' '.join(VIDEO_SUFFIXES)}), skipped {len(self.skipped)}"
                           + (f"; first reason: {self.skipped[0][1]}" if self.skipped else ""))
        return usable

    def _probe(self, path: Path) -> bool:
        try:
            count = probe_frame_count(path)
        except VdmError as e:
            self._skip(path, str(e))
            return False
        if count < self.span:
            self._skip(path, f"{count} frames, fewer than the {self.span} a clip needs "
                             f"(frames={self.frames}, frame_stride={self.frame_stride})")
            return False
        return True

    def _decode(self, path: Path) -> np.ndarray:
        """(N, size, size, 3) uint8, squared frame by frame so a long video never sits in memory whole."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        frames = [square_frame(f, self.size) for f in iter_frames(path)]
        if not frames:
            raise VdmError(f"video {path} decoded to no frames")
        video = np.stack(frames)
        self._cache[path] = video
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)  # least recently used
        return video

    def _drop(self, path: Path, reason: str) -> None:
        """A file that passed the probe but fails now: warn once and never pick it again."""
        self.videos.remove(path)
        self._skip(path, reason)

    def clip(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        while self.videos:
            path = self.videos[rng.integers(len(self.videos))]
            try:
                video = self._decode(path)  # (N, size, size, 3)
            except VdmError as e:
                self._drop(path, str(e))
                continue
            if len(video) < self.span:
                self._drop(path, f"decoded only {len(video)} frames, a clip needs {self.span}")
                continue
            start = rng.integers(len(video) - self.span + 1)
            frames = video[start:start + self.span:self.frame_stride]  # (T, size, size, 3)
            return torch.from_numpy(from_uint8_frames(frames))
        raise VdmError(f"every video under {self.root} failed to decode; see the warnings above")


def make_dataset(data: str, frames: int, size: int, frame_stride: int = 1, seed: int = 0) -> ClipDataset:
    """'synthetic' -> SyntheticShapes (frame_stride does not apply); anything else is a folder path."""
    if data == "synthetic":
        return SyntheticShapes(frames, size, seed=seed)
    return VideoFolder(data, frames, size, frame_stride=frame_stride, seed=seed)

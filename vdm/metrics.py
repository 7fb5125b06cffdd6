"""Sample quality for the synthetic bouncing shapes: does a video obey the rules its generator guarantees?

`vdm.data.SyntheticShapes` promises: 1-3 shapes on black, each a distinct palette colour, drawn in a
fixed order; each keeps its colour and size; each is a square or a disc of radius RADIUS_RANGE x
min(H, W); each moves at a constant velocity of SPEED_RANGE x min(H, W) px per frame and reflects
off the borders. A generated video is scored against exactly these rules, one property each:

    count   the same 1-3 shapes in every frame; a shape may vanish only behind another one, and
            never both A behind B and B behind A (the drawing order is fixed)
    size    each shape's area stays near its median over the frames
    shape   each shape's area, fill (area / bounding box) and aspect fit a square or a disc
    motion  each shape's centre follows one bounce path (constant speed, reflected where the shape
            touches a border), at a speed in range

Segmentation uses colour as identity, since the generator never repeats a colour within a clip: a
pixel belongs to palette colour k when k is its nearest reference colour (palette or black) and is
within COLOR_DISTANCE of it. Where a shape touches another one, part of it may be hidden, so in that
frame its area only has to be no bigger than usual, only its bounding box is judged, and its centre
is used only along an axis where its extent is whole (else its visible part must lie where the path
puts the shape). A check with nothing to judge holds: a shape never seen clear has no reference
size, and an axis with fewer than MIN_FIT_FRAMES whole views has no path.

Each property's score is the fraction of its checks that hold, in [0, 1]; it passes when all hold,
and a video passes when all its properties pass; with no shapes, every property fails.
tests/test_metrics.py pins the calibration: real clips pass; noise, shuffled frames, colour
changes, teleports, wrong sizes and speeds, and empty videos fail. Real clips with per-pixel
Gaussian noise of std 0.2 (in [-1, 1] units) still pass; a 3x3 blur does not (edges turn into
other colours).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vdm.data import BACKGROUND, MIN_RADIUS, PALETTE, RADIUS_RANGE, SPEED_RANGE
from vdm.errors import VdmError
from vdm.video import to_uint8_frames

PROPERTIES = ("count", "size", "shape", "motion")

# --- Tolerances, in pixels of the video being scored unless said otherwise. Calibrated so that every
# --- real clip in tests/test_metrics.py passes and the corrupted ones fail.
SHAPE_COUNT_RANGE = (1, 3)  # SyntheticShapes' default min_shapes..max_shapes
COLOR_DISTANCE = 100.0  # max RGB distance (0..255 per channel) from a palette colour: ~0.4 of full scale
MIN_SHAPE_PIXELS = 4  # a colour is present in a frame when it covers at least this many pixels
OCCLUSION_COVER = 0.8  # an absent shape is hidden when other shapes cover this share of its usual area
                       # within the distance it can have moved since it was last seen
SIZE_REL_TOL = 0.1  # size: allowed deviation from the median area, as a fraction of it ...
SIZE_EDGE_TOL = 2.0  # ... plus this many px per sqrt(area): a moving edge gains or loses a row of pixels
AREA_TOL = 0.25  # shape: relative slack on the areas a square or disc of allowed radius can cover
SQUARE_FILL_MIN = 0.9  # shape: fill (area / bounding-box area) of a square; a pixel square fills it exactly
DISC_FILL_MIN = 0.5  # shape: lowest fill of a disc; pi/4 = 0.785 for large ones, 0.52 for radius 2 px
ASPECT_TOL = 1.0  # shape: max |box height - box width|; a pixelated disc can be one row off
MOTION_TOL = 0.75  # motion: max distance (per axis) of a centre from the fitted bounce path; pixelation
                   # alone moves a square's centre by up to 0.5 px
CONTACT_TOL = 0.5  # motion: extra distance allowed where the shape touches another: one hidden row of
                   # pixels at its end moves the box centre by half a pixel
MIN_FIT_FRAMES = 3  # motion: known centres needed to judge an axis
SPEED_TOL = 0.15  # motion: relative slack on SPEED_RANGE (plus the fit's own uncertainty, see speed_range)

# Reference colours: background first, then the palette. Labels are palette indices, or -1.
_REFERENCES = np.array((BACKGROUND, *PALETTE), dtype=np.float32)  # (1 + K, 3)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class PropertyResult:
    """One property of one video."""

    score: float  # fraction of the property's checks that hold, in [0, 1]
    passed: bool  # all of them hold
    detail: str = ""  # why it failed ("" when it passed)

    def __post_init__(self):
        self.score, self.passed = float(self.score), bool(self.passed)  # plain types, for JSON


@dataclass
class VideoReport:
    """The properties of one video."""

    index: int  # position in the scored batch
    colors: list[tuple[int, int, int]]  # the shapes found, by colour
    properties: dict[str, PropertyResult]  # name (one of PROPERTIES) -> result

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.properties.values())

    def to_dict(self) -> dict:
        return {"index": self.index, "passed": self.passed, "colors": [list(c) for c in self.colors],
                "properties": {name: vars(p) for name, p in self.properties.items()}}


def wilson_interval(passed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for z = 1.96) of a rate of `passed` in `total`: the rates the count
    is consistent with. For a pass rate of 128 videos it spans 15-17 points: two models whose pass
    counts there differ by a few videos are not ranked by them."""
    if total == 0:
        return 0.0, 1.0
    rate = passed / total
    centre = rate + z * z / (2 * total)
    spread = z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


@dataclass
class QualityReport:
    """Scores of a batch of videos: pass rate, per-property means, per-video details."""

    videos: list[VideoReport]
    pass_rate: float = field(init=False)  # fraction of videos that pass every property
    pass_rate_interval: tuple[float, float] = field(init=False)  # its 95 % Wilson interval
    property_scores: dict[str, float] = field(init=False)  # property -> mean score over videos
    property_pass_rates: dict[str, float] = field(init=False)  # property -> fraction of videos passing it
    # Mean palette colours found per video. The data has 1-3 and a shape keeps its colour, so more
    # means shapes that change colour (or are two colours at once): what `count` fails on most.
    colors_per_video: float = field(init=False)

    def __post_init__(self):
        n = max(len(self.videos), 1)
        passed = sum(v.passed for v in self.videos)
        self.pass_rate = passed / n
        self.pass_rate_interval = wilson_interval(passed, len(self.videos))
        self.property_scores = {p: sum(v.properties[p].score for v in self.videos) / n for p in PROPERTIES}
        self.property_pass_rates = {p: sum(v.properties[p].passed for v in self.videos) / n for p in PROPERTIES}
        self.colors_per_video = sum(len(v.colors) for v in self.videos) / n

    def summary(self) -> str:
        passed = sum(v.passed for v in self.videos)
        low, high = SHAPE_COUNT_RANGE
        interval_low, interval_high = self.pass_rate_interval
        lines = [f"pass rate {self.pass_rate:.3f} ({passed}/{len(self.videos)} videos; 95 % interval "
                 f"{interval_low:.3f}-{interval_high:.3f})"]
        for p in PROPERTIES:
            lines.append(f"  {p:<7} score {self.property_scores[p]:.3f}  pass {self.property_pass_rates[p]:.3f}")
        lines.append(f"colours found per video {self.colors_per_video:.2f} (the data has {low}-{high})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"pass_rate": self.pass_rate, "pass_rate_interval": list(self.pass_rate_interval),
                "property_scores": self.property_scores, "property_pass_rates": self.property_pass_rates,
                "colors_per_video": self.colors_per_video,
                "videos": [v.to_dict() for v in self.videos]}


# ---------------------------------------------------------------------------------------------
# Segmentation: colour as identity


def label_pixels(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, H, W) int: the palette index of each pixel, or -1 (background/other)."""
    distances = np.linalg.norm(frames[..., None, :].astype(np.float32) - _REFERENCES, axis=-1)  # (T, H, W, 1+K)
    nearest = distances.argmin(-1)
    close = np.take_along_axis(distances, nearest[..., None], -1)[..., 0] <= COLOR_DISTANCE
    return np.where(close, nearest - 1, -1)  # the background (reference 0) becomes -1 as well


def present_colors(labels: np.ndarray) -> np.ndarray:
    """(T, H, W) labels -> (T, K) bool: palette colour k covers at least MIN_SHAPE_PIXELS in frame t."""
    counts = np.stack([(labels == k).sum((1, 2)) for k in range(len(PALETTE))], axis=1)  # (T, K)
    return counts >= MIN_SHAPE_PIXELS


def dilate(mask: np.ndarray) -> np.ndarray:
    """(..., H, W) bool grown by one pixel in the four axis directions."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    out[..., :, 1:] |= mask[..., :, :-1]
    out[..., :, :-1] |= mask[..., :, 1:]
    return out


def measure_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, H, W) bool -> areas (T,), centroids (T, 2) (y, x), boxes (T, 4) (y0, x0, y1, x1); NaN if empty.

    Pixel (i, j) has its centre at (i + 0.5, j + 0.5); box edges are pixel edges (y1, x1 exclusive).
    """
    t, h, w = mask.shape
    areas = mask.sum((1, 2))
    rows, cols = mask.sum(2), mask.sum(1)  # (T, H), (T, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (rows * (np.arange(h) + 0.5)).sum(1) / areas
        cx = (cols * (np.arange(w) + 0.5)).sum(1) / areas
    boxes = np.full((t, 4), np.nan)
    for i in np.flatnonzero(areas):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        boxes[i] = ys[0], xs[0], ys[-1] + 1, xs[-1] + 1
    return areas, np.stack([cy, cx], axis=1), boxes


# ---------------------------------------------------------------------------------------------
# Measurements of one shape


@dataclass
class ShapeTrace:
    """What one shape (one colour) looks like in every frame."""

    color: int  # palette index
    present: np.ndarray  # (T,) bool: at least MIN_SHAPE_PIXELS of its colour
    areas: np.ndarray  # (T,) pixels of its colour
    centroids: np.ndarray  # (T, 2) (y, x); NaN where absent
    boxes: np.ndarray  # (T, 4) (y0, x0, y1, x1) bounding box; NaN where absent
    contact: np.ndarray  # (T,) bool: present and touching another shape, so part of it may be hidden
    occluder: np.ndarray  # (T,) int: where absent, the palette index of the shape hiding it, else -1

    @property
    def clear(self) -> np.ndarray:
        """(T,) bool: present and touching nothing, so the whole shape is visible."""
        return self.present & ~self.contact

    @property
    def hidden(self) -> np.ndarray:
        return self.occluder >= 0

    @property
    def sides(self) -> np.ndarray:
        """(T, 2) height and width of the bounding box; NaN where absent."""
        return self.boxes[:, 2:] - self.boxes[:, :2]

    def whole(self) -> np.ndarray:
        """(T, 2) bool per axis: in contact, but the box is at most a pixel shorter along that axis than
        the shape's longest side (pixelation alone changes a side by one), so no side is hidden."""
        sides, clear = self.sides, self.clear
        full = np.max(sides[clear]) if clear.any() else np.nanmax(sides[self.present], initial=0.0)
        return (self.present & self.contact)[:, None] & (sides >= full - 1)


def occluder_of(labels: np.ndarray, color: int, box: np.ndarray, reach: float, area: float) -> int:
    """The shape hiding an absent shape of `area` px last seen in `box` (y0, x0, y1, x1), or -1.

    labels: (H, W) of this frame. Within `reach` px of the box (how far it can have moved), other
    shapes must cover OCCLUSION_COVER of its area; the one covering most of that region hides it.
    """
    h, w = labels.shape
    y0, x0 = int(max(box[0] - reach, 0)), int(max(box[1] - reach, 0))
    y1, x1 = int(min(math.ceil(box[2] + reach), h)), int(min(math.ceil(box[3] + reach), w))
    region = labels[y0:y1, x0:x1]
    counts = np.bincount(region[(region >= 0) & (region != color)], minlength=len(PALETTE))
    if not counts.any() or counts.sum() + (region == color).sum() < OCCLUSION_COVER * area:
        return -1
    return int(counts.argmax())


def trace_shape(labels: np.ndarray, color: int, max_speed: float) -> ShapeTrace:
    """Measure palette colour `color` in (T, H, W) labels; `max_speed` px/frame bounds where it can hide."""
    mask = labels == color  # (T, H, W)
    others = (labels >= 0) & ~mask
    areas, centroids, boxes = measure_mask(mask)
    present = areas >= MIN_SHAPE_PIXELS
    contact = present & (dilate(mask) & others).any((1, 2))
    usual_area = float(np.median(areas[present])) if present.any() else 0.0
    occluder = np.full(len(areas), -1)
    seen = np.flatnonzero(present)
    for t in np.flatnonzero(~present) if len(seen) else []:
        last = seen[np.abs(seen - t).argmin()]  # the nearest frame that shows it
        occluder[t] = occluder_of(labels[t], color, boxes[last], max_speed * abs(t - last) + 1, usual_area)
    return ShapeTrace(color, present, areas, centroids, boxes, contact, occluder)


def trace_shapes(labels: np.ndarray, max_speed: float) -> list[ShapeTrace]:
    """One trace per palette colour present in any frame of (T, H, W) labels."""
    present = present_colors(labels)  # (T, K)
    return [trace_shape(labels, k, max_speed) for k in np.flatnonzero(present.any(0))]


# ---------------------------------------------------------------------------------------------
# Count: the same shapes throughout, hidden only behind each other in one drawing order


def order_conflicts(traces: list[ShapeTrace]) -> np.ndarray:
    """(T,) bool: frames where a shape hides behind one that, in another frame, hides behind it."""
    behind = {(tr.color, int(j)) for tr in traces for j in tr.occluder[tr.hidden]}  # (hidden, on top)
    conflict = np.zeros(len(traces[0].present), bool) if traces else np.zeros(0, bool)
    for tr in traces:
        for t in np.flatnonzero(tr.hidden):
            conflict[t] |= (int(tr.occluder[t]), tr.color) in behind
    return conflict


def check_count(traces: list[ShapeTrace]) -> PropertyResult:
    """Every frame shows each shape or hides it behind another (in one order); there are 1..3 shapes."""
    low, high = SHAPE_COUNT_RANGE
    if not low <= len(traces) <= high:
        return PropertyResult(0.0, False, f"{len(traces)} shapes, expected {low}..{high}")
    accounted = np.all([tr.present | tr.hidden for tr in traces], axis=0)  # (T,)
    ok = accounted & ~order_conflicts(traces)
    bad = np.flatnonzero(~ok)
    return PropertyResult(fraction(ok), not len(bad),
                          f"a shape vanishes or swaps drawing order in frames {bad.tolist()}" if len(bad) else "")


# ---------------------------------------------------------------------------------------------
# Size and outline


def size_checks(tr: ShapeTrace) -> np.ndarray:
    """(T,) bool: clear frames within tolerance of the median clear area, others no bigger than it.

    A shape never seen clear has no reference size; it is only asked to be there or hidden.
    """
    clear = tr.clear
    if not clear.any():
        return tr.present | tr.hidden
    median = float(np.median(tr.areas[clear]))
    tol = SIZE_REL_TOL * median + SIZE_EDGE_TOL * math.sqrt(median)
    return np.where(clear, np.abs(tr.areas - median) <= tol, (tr.areas <= median + tol) & (tr.present | tr.hidden))


def area_range(kind: str, scale: float) -> tuple[float, float]:
    """Pixel areas a square or disc of allowed radius can cover, widened by AREA_TOL; scale = min(H, W)."""
    r_low = min(max(RADIUS_RANGE[0] * scale, MIN_RADIUS), scale / 2)
    r_high = min(max(RADIUS_RANGE[1] * scale, MIN_RADIUS), scale / 2)
    if kind == "square":  # a side of length 2r covers ceil(2r) - 1 .. floor(2r) + 1 pixel centres
        low, high = (math.ceil(2 * r_low) - 1) ** 2, (math.floor(2 * r_high) + 1) ** 2
    elif kind == "disc":
        low, high = math.pi * (r_low - 0.5) ** 2, math.pi * (r_high + 0.5) ** 2
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return low * (1 - AREA_TOL), high * (1 + AREA_TOL)


def outline_checks(tr: ShapeTrace, scale: float) -> np.ndarray:
    """(F,) bool over the frames where the shape shows whole or nearly so.

    Clear frames: a solid square or disc of plausible area, about as tall as wide. Frames in contact
    whose box is as large as the shape ever is (a neighbour may hide any pixels, even its middle, but
    not a whole side): a box no bigger than the largest allowed shape's.
    """
    heights, widths = tr.sides.T
    fill = tr.areas / (heights * widths)
    square_low, square_high = area_range("square", scale)
    disc_low, disc_high = area_range("disc", scale)
    solid = np.where(fill >= SQUARE_FILL_MIN, (tr.areas >= square_low) & (tr.areas <= square_high),
                     (tr.areas >= disc_low) & (tr.areas <= disc_high) & (fill >= DISC_FILL_MIN))
    square_box = np.abs(heights - widths) <= ASPECT_TOL
    boxed = heights * widths <= square_high
    return np.where(tr.clear, solid & square_box, boxed)[tr.clear | tr.whole().all(1)]


# ---------------------------------------------------------------------------------------------
# Motion: one bounce path per axis


@dataclass(frozen=True)
class BouncePath:
    """p(t) = fold(start + speed * t) into [low, high]: constant speed, reflected at both ends."""

    start: float  # unfolded position at t = 0, relative to low
    speed: float  # px per frame, >= 0 (a path moving the other way starts at -start)
    low: float  # lowest centre position: the shape touches the low border there
    high: float  # highest centre position

    def at(self, times: np.ndarray) -> np.ndarray:
        return triangle_wave(self.start + self.speed * times, self.low, self.high)


def triangle_wave(unfolded: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions relative to `low` on an unbounded line into [low, high] by reflection (as vdm.data.bounce)."""
    span = max(high - low, 1e-6)
    u = np.mod(unfolded, 2 * span)
    return low + np.where(u <= span, u, 2 * span - u)


def _unfoldings(pos: np.ndarray, low: float, high: float) -> np.ndarray:
    """(F,) positions -> (F, 2): the two unfolded positions in [0, 2 span) that fold onto each."""
    span = max(high - low, 1e-6)
    u = np.clip(pos - low, 0.0, span)
    return np.stack([u, 2 * span - u], axis=1)


def _candidate_paths(pos: np.ndarray, times: np.ndarray, low: float, high: float,
                     max_speed: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, speeds) of every path through two observations, over both unfoldings and wrap counts."""
    period = 2 * max(high - low, 1e-6)
    unfolded = _unfoldings(pos, low, high)  # (F, 2)
    i, j = np.triu_indices(len(pos), 1)
    dt = times[j] - times[i]
    wraps = np.arange(-1, math.ceil(max_speed * (times.max() - times.min()) / period) + 2)
    # (pairs, unfolding of i, unfolding of j, wraps)
    ui = unfolded[i][:, :, None, None]
    uj = unfolded[j][:, None, :, None]
    speeds = (uj - ui + wraps * period) / dt[:, None, None, None]
    starts = ui - speeds * times[i][:, None, None, None]
    keep = (speeds >= 0) & (speeds <= max_speed)
    return starts[keep], speeds[keep]


def _rank(residuals: np.ndarray, tol: np.ndarray, speeds: np.ndarray, max_speed: float) -> np.ndarray:
    """Higher is better: most inliers (residual <= tol), then the smallest squared residuals, then the
    slowest path (two observations alone fit a path with any number of extra reflections)."""
    scaled = np.minimum(residuals / tol, 3.0)  # outliers all cost the same
    penalty = (scaled**2).sum(-1) / (9.0 * residuals.shape[-1])  # in [0, 1]
    return (scaled <= 1).sum(-1) - 0.9 * penalty - 0.05 * speeds / max(max_speed, 1e-6)


def _refit(path: BouncePath, pos: np.ndarray, times: np.ndarray, tol: np.ndarray) -> BouncePath:
    """Least squares on the unfolded positions of the inliers, each unfolded next to the path."""
    period = 2 * max(path.high - path.low, 1e-6)
    predicted = path.start + path.speed * times
    unfolded = _unfoldings(pos, path.low, path.high)  # (F, 2)
    shifted = unfolded + np.round((predicted[:, None] - unfolded) / period) * period  # nearest copies
    best = shifted[np.arange(len(pos)), np.abs(shifted - predicted[:, None]).argmin(1)]
    inliers = np.abs(path.at(times) - pos) <= tol
    if inliers.sum() < 2 or np.ptp(times[inliers]) == 0:
        return path
    speed, start = np.polyfit(times[inliers], best[inliers], 1)
    if speed < 0:
        start, speed = -start, -speed  # the same folded path, described moving the other way
    return BouncePath(float(start), float(speed), path.low, path.high)


def fit_bounce(pos: np.ndarray, times: np.ndarray, tol: np.ndarray, low: float, high: float,
               max_speed: float) -> BouncePath:
    """Fit the generator's law on one axis to centre positions `pos` at `times`, each known to within
    `tol` (all (F,), F >= 1); the path stays in [low, high] at a speed of at most `max_speed`.

    Tries every path through two observations (over both ways each can unfold, and the number of
    reflections between them), keeps the one with most inliers, then refines it by least squares.
    """
    if high - low < 1.0:  # the shape fills the frame along this axis: it cannot move
        return BouncePath(0.0, 0.0, low, max(high, low))
    if len(pos) < 2:
        return BouncePath(float(_unfoldings(pos, low, high)[0, 0]), 0.0, low, high)
    starts, speeds = _candidate_paths(pos, times, low, high, max_speed)
    if not len(speeds):
        return BouncePath(float(_unfoldings(pos, low, high)[0, 0]), 0.0, low, high)
    folded = triangle_wave(starts[:, None] + speeds[:, None] * times, low, high)  # (M, F)
    best = int(_rank(np.abs(folded - pos), tol, speeds, max_speed).argmax())
    path = BouncePath(float(starts[best]), float(speeds[best]), low, high)
    for _ in range(2):
        refined = _refit(path, pos, times, tol)
        old, new = (_rank(np.abs(p.at(times) - pos), tol, np.array(p.speed), max_speed) for p in (path, refined))
        if new >= old:
            path = refined
    return path


def axis_track(tr: ShapeTrace, axis: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre positions (T,) along `axis` (0 = y, 1 = x), how far each may be off (T,), and the radius.

    Clear frames give the pixel centroid, within MOTION_TOL. A frame in contact gives the box centre,
    within MOTION_TOL + CONTACT_TOL, where the box is whole along this axis (ShapeTrace.whole); other
    frames get an infinite tolerance: no position.
    """
    clear, whole = tr.clear, tr.whole()[:, axis]
    pos = np.where(clear, tr.centroids[:, axis], (tr.boxes[:, axis] + tr.boxes[:, axis + 2]) / 2)
    tol = np.where(clear, MOTION_TOL, np.where(whole, MOTION_TOL + CONTACT_TOL, np.inf))
    known = clear | whole
    radius = float(np.mean(tr.sides[known, axis])) / 2 if known.any() else 0.0  # mean side: unbiased 2r
    return pos, tol, radius


def axis_checks(tr: ShapeTrace, axis: int, extent: int, max_speed: float) -> tuple[np.ndarray, float, float]:
    """(T,) bool per frame on one axis, the fitted speed along it, and the time span of the fit.

    Known centres must lie within their tolerance of the path; other visible frames must have their
    visible part inside the shape's box on the path; absent frames are not judged here. Fewer than
    MIN_FIT_FRAMES known centres judge nothing: two points fit some path, at a poorly known speed.
    """
    pos, tol, radius = axis_track(tr, axis)
    frames = np.flatnonzero(np.isfinite(tol))
    ok = np.ones(len(pos), bool)
    if len(frames) < MIN_FIT_FRAMES:
        return ok, math.nan, 0.0
    radius = min(radius, extent / 2)
    path = fit_bounce(pos[frames], frames.astype(float), tol[frames], radius, extent - radius, max_speed)
    centre = path.at(np.arange(len(pos), dtype=float))
    ok[frames] = np.abs(centre[frames] - pos[frames]) <= tol[frames]
    partial = tr.present & ~np.isfinite(tol)
    # The path is known to within the tolerance where it was fitted; beyond, the speed's uncertainty grows.
    times = np.arange(len(pos))
    beyond = np.maximum(np.maximum(frames[0] - times, times - frames[-1]), 0)
    uncertainty = MOTION_TOL + CONTACT_TOL + beyond * 2 * (MOTION_TOL + CONTACT_TOL) / np.ptp(frames)
    slack = radius + 1.0 + uncertainty  # + half a pixel each for box edges and the radius
    inside = (tr.boxes[:, axis] >= centre - slack) & (tr.boxes[:, axis + 2] <= centre + slack)
    ok[partial] = inside[partial]
    return ok, path.speed, float(np.ptp(frames))


def speed_range(scale: float, time_span: float) -> tuple[float, float]:
    """Allowed speeds (px/frame): SPEED_RANGE x scale widened by SPEED_TOL and by the fit's uncertainty,
    2 MOTION_TOL over the frames it spans (the path may be off by MOTION_TOL at both ends)."""
    slack = 2 * MOTION_TOL / time_span if time_span > 0 else math.inf
    return SPEED_RANGE[0] * scale * (1 - SPEED_TOL) - slack, SPEED_RANGE[1] * scale * (1 + SPEED_TOL) + slack


def max_speed_of(height: int, width: int) -> float:
    """The fastest a shape may move along one axis, px per frame (without the fit's slack)."""
    return SPEED_RANGE[1] * min(height, width) * (1 + SPEED_TOL)


def motion_checks(tr: ShapeTrace, height: int, width: int) -> tuple[np.ndarray, bool, str]:
    """(F,) bool over the frames where the shape shows, whether its speed is in range, and why not."""
    ok = np.ones(len(tr.present), bool)
    velocity, spans = [], []
    for axis, extent in enumerate((height, width)):
        axis_ok, speed, span = axis_checks(tr, axis, extent, max_speed_of(height, width) + 2 * MOTION_TOL)
        ok &= axis_ok
        velocity.append(speed)
        spans.append(span)
    if any(math.isnan(v) for v in velocity):
        return ok[tr.present], True, ""  # too few whole views to follow it
    speed = math.hypot(*velocity)
    low, high = speed_range(min(height, width), min(spans))
    speed_ok = low <= speed <= high
    return ok[tr.present], speed_ok, "" if speed_ok else f"moves {speed:.2f} px/frame, expected {low:.2f}..{high:.2f}"


# ---------------------------------------------------------------------------------------------
# Properties over all shapes


def fraction(checks: np.ndarray) -> float:
    """Share of True in a bool array; 1.0 for an empty one (nothing contradicts the rule)."""
    return float(np.mean(checks)) if checks.size else 1.0


def _per_shape(traces: list[ShapeTrace], checks, problem: str) -> PropertyResult:
    """Mean over shapes of the share of checks `checks(trace) -> (F,) bool` that hold; all must hold."""
    if not traces:
        return PropertyResult(0.0, False, "no shapes")
    scores, problems = [], []
    for tr in traces:
        ok = checks(tr)
        scores.append(fraction(ok))
        if not ok.all():
            problems.append(f"{_name(tr)}: {problem} in {int((~ok).sum())} frames")
    return PropertyResult(float(np.mean(scores)), not problems, "; ".join(problems))


def check_size(traces: list[ShapeTrace]) -> PropertyResult:
    return _per_shape(traces, size_checks, "size changes")


def check_shape(traces: list[ShapeTrace], scale: float) -> PropertyResult:
    return _per_shape(traces, lambda tr: outline_checks(tr, scale), "not a plausible square or disc")


def check_motion(traces: list[ShapeTrace], height: int, width: int) -> PropertyResult:
    """Each shape follows one bounce path per axis, at a speed in range (a wrong speed scores 0)."""
    if not traces:
        return PropertyResult(0.0, False, "no shapes")
    scores, problems = [], []
    for tr in traces:
        ok, speed_ok, why = motion_checks(tr, height, width)
        scores.append(fraction(ok) * speed_ok)
        if not ok.all():
            problems.append(f"{_name(tr)}: leaves its bounce path in {int((~ok).sum())} frames")
        if not speed_ok:
            problems.append(f"{_name(tr)}: {why}")
    return PropertyResult(float(np.mean(scores)), not problems, "; ".join(problems))


def _name(tr: ShapeTrace) -> str:
    return f"shape {PALETTE[tr.color]}"


# ---------------------------------------------------------------------------------------------
# Scoring videos


def score_frames(frames: np.ndarray, index: int = 0) -> VideoReport:
    """Score one video given as (T, H, W, 3) uint8 frames."""
    _, height, width, _ = frames.shape
    labels = label_pixels(frames)  # (T, H, W)
    traces = trace_shapes(labels, max_speed_of(height, width))
    properties = {
        "count": check_count(traces),
        "size": check_size(traces),
        "shape": check_shape(traces, min(height, width)),
        "motion": check_motion(traces, height, width),
    }
    return VideoReport(index, [PALETTE[tr.color] for tr in traces], properties)


def score_videos(videos: torch.Tensor | np.ndarray) -> QualityReport:
    """Score (N, C, T, H, W) videos in [-1, 1] (torch or numpy) against the synthetic shapes' rules."""
    if isinstance(videos, torch.Tensor):
        videos = videos.detach().to("cpu", torch.float32).numpy()
    videos = np.asarray(videos, dtype=np.float32)
    if videos.ndim != 5:
        raise VdmError(f"expected videos shaped (N, C, T, H, W), got {tuple(videos.shape)}")
    return QualityReport([score_frames(to_uint8_frames(v), i) for i, v in enumerate(videos)])

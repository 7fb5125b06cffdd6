"""Configuration dataclasses: the model, the diffusion process, and training.

The model and diffusion configs are stored (as JSON) in every checkpoint and bundle manifest, so a
model can always be rebuilt exactly from one file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from vdm.errors import VdmError

NormKind = Literal["group", "batch"]
ScheduleKind = Literal["linear", "cosine"]
PredictionKind = Literal["epsilon", "v", "x0"]
LrScheduleKind = Literal["constant", "cosine"]
ClassLabelKind = Literal["count", "colors", "shapes"]
LabelEmbeddingKind = Literal["table", "shared", "shared_count"]
MemoryFormatKind = Literal["auto", "contiguous", "channels_last_3d"]
PrecisionKind = Literal["auto", "fp32", "bf16"]


@dataclass
class ModelConfig:
    in_channels: int = 3  # video channels (RGB)
    base_channels: int = 16  # channels of the first UNet level
    channel_multiples: tuple[int, ...] = (1, 2, 4)  # per level; H and W halve between levels
    num_res_blocks: int = 1  # residual blocks per level (the decoder has one more)
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with factorized attention
    # Levels that also get joint space-time attention (all T*H*W positions at once; the middle block
    # too when the deepest level is listed). Costs (T*H*W)^2: for the low resolutions only.
    joint_attention_levels: tuple[int, ...] = ()
    # Levels that also get temporal-only attention with a relative frame-position bias (cheap at any
    # resolution: each position attends over its T frames), as in Ho et al.'s Video Diffusion Models.
    temporal_attention_levels: tuple[int, ...] = ()
    # Decoder levels whose blocks also gather each frame's neighbours along an estimated per-pixel
    # motion (vdm.unet.MotionAlign), up to motion_align_reach frames either way: what lets a
    # full-resolution level pool the evidence of frames where the content has moved.
    motion_align_levels: tuple[int, ...] = ()
    motion_align_reach: int = 2
    num_heads: int = 4  # attention heads; channels at each attention level must divide by it
    dropout: float = 0.0  # inside residual blocks
    norm: NormKind = "group"  # conditional GroupNorm, or the seed's conditional BatchNorm
    num_groups: int = 8  # GroupNorm groups; channels must divide by it
    num_classes: int = 0  # 0 = unconditional; else class labels 0..num_classes-1 (+ a null class)
    # What a synthetic clip's label says (vdm.data.clip_label): "count", its number of shapes - 1;
    # "colors", the set of palette colours it holds (a bitmask - 1: 2 ** len(PALETTE) - 1 classes);
    # "shapes", each palette colour's shape (absent, square or disc: base-3 digits - 1, 3 ** 6 - 1 classes).
    class_label: ClassLabelKind = "count"
    # How a label becomes a vector: "table", one learned vector per class; "shared" ("colors" and
    # "shapes" labels), one per palette colour (or colour and shape) summed over the clip's shapes,
    # so every clip trains the vectors of the shapes it holds (the null class keeps its own vector);
    # "shared_count", the same plus one vector per number of shapes, so a sum says outright how many.
    label_embedding: LabelEmbeddingKind = "table"
    temporal_downsample: bool = False  # halve T between levels too (then T must divide)
    # The network also reads its own previous estimate of the clean video, concatenated to x as
    # in_channels more input channels (zeros at the first step): self-conditioning, Chen et al.'s
    # Analog Bits, which lets each step keep the discrete choices (here colours) the last one made.
    self_condition: bool = False
    # The colours (RGB, 0..255) every pixel of the data takes, when it takes only a few, as the demo's
    # shapes on black do. The network then predicts, per pixel, logits over these colours and outputs
    # their expected colour as its clean-video estimate (prediction "x0"); training uses the
    # cross-entropy of the logits (Dieleman et al. 2022's CDCD). So a pixel between two colours is a
    # mix of the two, never a third colour made of their shared channel. Empty: predict RGB directly.
    palette: tuple[tuple[int, int, int], ...] = ()
    frames: int = 8  # the clip length the model is trained at (default for generation)
    size: int = 32  # the frame size (H = W) the model is trained at

    def __post_init__(self):
        self.channel_multiples = tuple(self.channel_multiples)
        self.attention_levels = tuple(self.attention_levels)
        self.joint_attention_levels = tuple(self.joint_attention_levels)
        self.temporal_attention_levels = tuple(self.temporal_attention_levels)
        self.motion_align_levels = tuple(self.motion_align_levels)
        self.palette = tuple(tuple(colour) for colour in self.palette)
        self.validate()

    @property
    def num_levels(self) -> int:
        return len(self.channel_multiples)

    @property
    def spatial_factor(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    @property
    def temporal_factor(self) -> int:
        """T must be a multiple of this."""
        return self.spatial_factor if self.temporal_downsample else 1

    @property
    def network_channels(self) -> int:
        """Channels of the network's input: the video's, and as many again for the self-conditioning estimate."""
        return self.in_channels * (2 if self.self_condition else 1)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def null_class(self) -> int:
        """The label that asks a class-conditional model for its unconditional prediction (guidance)."""
        return self.num_classes

    def validate(self) -> None:
        if self.norm not in ("group", "batch"):
            raise VdmError(f"norm must be 'group' or 'batch', got {self.norm!r}")
        if not self.channel_multiples:
            raise VdmError("channel_multiples must have at least one level")
        for level in self.attention_levels + self.joint_attention_levels + self.temporal_attention_levels:
            if not 0 <= level < self.num_levels:
                raise VdmError(f"attention level {level} does not exist (levels 0..{self.num_levels - 1})")
        for level in self.motion_align_levels:
            if not 0 <= level < self.num_levels:
                raise VdmError(f"motion_align_levels: level {level} does not exist (levels 0..{self.num_levels - 1})")
        if self.motion_align_reach < 1:
            raise VdmError(f"motion_align_reach must be >= 1 frame, got {self.motion_align_reach}")
        for mult in self.channel_multiples:
            ch = self.base_channels * mult
            if ch % self.num_groups:  # attention and output norms are GroupNorms whatever `norm` is
                raise VdmError(f"{ch} channels do not divide into num_groups={self.num_groups}")
            if ch % self.num_heads:
                raise VdmError(f"{ch} channels do not divide into num_heads={self.num_heads}")
        if self.num_classes < 0:
            raise VdmError("num_classes must be >= 0")
        if self.class_label not in get_args(ClassLabelKind):
            raise VdmError(f"class_label must be one of {get_args(ClassLabelKind)}, got {self.class_label!r}")
        if self.label_embedding not in get_args(LabelEmbeddingKind):
            raise VdmError(f"label_embedding must be one of {get_args(LabelEmbeddingKind)}, "
                           f"got {self.label_embedding!r}")
        if self.label_embedding != "table" and self.conditional:
            check_shared_labels(self.label_embedding, self.class_label, self.num_classes)
        if self.palette:
            if self.in_channels != 3:
                raise VdmError(f"a palette needs RGB video (in_channels = 3), got in_channels={self.in_channels}")
            if len(self.palette) < 2 or any(len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                                            for c in self.palette):
                raise VdmError(f"palette must list at least 2 colours as [R, G, B] integers in 0..255, "
                               f"got {[list(c) for c in self.palette]}")
        check_video_shape(self, self.frames, self.size, self.size)


def check_shared_labels(label_embedding: str, class_label: str, num_classes: int) -> None:
    """A shared label embedding reads each label's colours (and shapes), so it needs exactly their classes."""
    from vdm.data import label_classes  # vdm.data does not import the config; this keeps it so

    if class_label == "count":
        raise VdmError(f'label_embedding = "{label_embedding}" needs class_label "colors" or "shapes" (a "count" '
                       'label names no colour); use label_embedding = "table"')
    needed = label_classes(class_label, 0)
    if num_classes != needed:
        raise VdmError(f'label_embedding = "{label_embedding}" with {class_label!r} labels needs '
                       f"num_classes = {needed}, got {num_classes}")


class ShapeError(VdmError, ValueError):
    """A video shape the UNet cannot take."""


def check_video_shape(cfg: ModelConfig, frames: int, height: int, width: int) -> None:
    """Raise a ValueError (a VdmError) naming the dimension the UNet cannot take."""
    if frames < 1 or height < 1 or width < 1:
        raise ShapeError(f"video shape must be positive, got T={frames} H={height} W={width}")
    for name, value, factor in (("frames", frames, cfg.temporal_factor),
                                ("height", height, cfg.spatial_factor),
                                ("width", width, cfg.spatial_factor)):
        if value % factor:
            raise ShapeError(f"{name}={value} is not a multiple of {factor}, which this UNet's "
                           f"{cfg.num_levels} levels need")


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000  # training timesteps of the forward process
    schedule: ScheduleKind = "cosine"  # beta schedule
    # What the network predicts: v (Salimans & Ho 2022) keeps x_0 well-conditioned at high noise, where
    # an epsilon model's x_0 estimate divides by sqrt(alpha_bar) ~ 0.03 and few-step DDIM goes astray.
    prediction: PredictionKind = "v"
    # Every timestep's signal-to-noise ratio divided by noise_shift**2 (Hoogeboom et al. 2023's shifted
    # schedule): redundant data (many pixels, many similar frames) stays recognisable at a per-pixel
    # SNR where small images do not, so a shift > 1 spends more of training and sampling where the
    # content is decided. 1 = the schedule as named.
    noise_shift: float = 1.0
    # Correlation between any two frames' noise, in training and in every sampler's draws (Ge et al.
    # 2023's mixed noise prior, "Preserve Your Own Correlation"): a shared part makes the frames start
    # from agreeing noise, meant to let what the noise decides be decided once per video rather than
    # once per frame (on the demo it did not help: vdm/demo/TRAINING.md). 0 = independent noise per frame.
    frame_noise_correlation: float = 0.0

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine"):
            raise VdmError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.prediction not in get_args(PredictionKind):
            raise VdmError(f"prediction must be one of {', '.join(get_args(PredictionKind))}, got {self.prediction!r}")
        if self.num_timesteps < 2:
            raise VdmError("num_timesteps must be at least 2")
        if not (math.isfinite(self.noise_shift) and self.noise_shift > 0):
            raise VdmError(f"noise_shift must be a positive number, got {self.noise_shift}")
        if not (math.isfinite(self.frame_noise_correlation) and 0 <= self.frame_noise_correlation < 1):
            raise VdmError(f"frame_noise_correlation must be in [0, 1), got {self.frame_noise_correlation}")


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps
    batch_size: int = 8  # clips per optimizer step (split over grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per step
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up
    lr_schedule: LrScheduleKind = "constant"  # after warm-up: constant, or cosine decay to 0 at `steps`
    min_snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (5 is the paper's); None: the plain loss
    # Train only on the timesteps whose SNR lies in [low, high]: a denoiser for part of the noise range
    # (an "expert", as in Balaji et al.'s eDiff-I), usually fine-tuned --init-from a full-range model.
    # None: every timestep.
    snr_range: tuple[float, float] | None = None
    # [mean, std]: draw training timesteps so that their ln SNR is about normal(mean, std), as EDM draws
    # its noise levels, concentrating training where the loss changes fastest with the noise (CDCD's
    # time warping, in a fixed form). None: uniform over timesteps, whose ln SNR spreads far wider
    # (std about 3 on the cosine schedule).
    log_snr_sampling: tuple[float, float] | None = None
    # A palette model's loss adds this times the squared error of the v its clean video implies (the
    # loss a v model trains on) to the cross-entropy of its logits. 0: the cross-entropy alone.
    palette_v_loss: float = 0.0
    # Input perturbation (Ning et al. 2023, DDPM-IP): the network reads x_t noised with eps + gamma * xi
    # (xi fresh Gaussian noise) while its target keeps eps, so it learns to take inputs a little off the
    # training distribution, as its own sampling steps are (exposure bias). 0.1 is the paper's; 0: off.
    input_perturbation: float = 0.0
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.995  # EMA of the weights (what checkpoints and samples use)
    data: str = "synthetic"  # 'synthetic' or a folder of videos
    frame_stride: int = 1  # for folder data: take every k-th frame
    seed: int = 0  # seeds the data, the noise and the weights
    # Start from this checkpoint's weights (fine-tuning: step 0, a fresh optimizer). Weights the
    # checkpoint lacks, such as attention added since, keep their initialization.
    init_from: str | None = None
    log_every: int = 10  # steps between metrics.jsonl lines
    sample_every: int = 500  # steps between sample videos (0 = only at the end)
    checkpoint_every: int = 250  # steps between checkpoints
    sample_steps: int | None = None  # steps of the sample videos (vdm-run's default sampler); None: its default
    num_samples: int = 4  # videos in each sample grid
    workers: int | None = None  # DataLoader processes per training process; None: per device (vdm.train.AUTO_WORKERS)
    compile: bool = False  # torch.compile the network (the first steps compile: minutes)
    memory_format: MemoryFormatKind = "auto"  # activation layout; auto: per device (vdm.train.AUTO_MEMORY_FORMAT)
    precision: PrecisionKind = "auto"  # bf16 autocast or fp32; auto: per device and CPU (vdm.train.training_precision)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every", "sample_steps",
                     "num_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise VdmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sample_every < 0 or self.warmup_steps < 0:
            raise VdmError("sample_every and warmup_steps must be >= 0")
        if self.seed < 0:
            raise VdmError(f"seed must be >= 0, got {self.seed}")
        if self.workers is not None and self.workers < 0:
            raise VdmError(f"workers must be >= 0, got {self.workers}")
        if self.memory_format not in get_args(MemoryFormatKind):
            raise VdmError(f"memory_format must be one of {', '.join(get_args(MemoryFormatKind))}, "
                           f"got {self.memory_format!r}")
        if self.precision not in get_args(PrecisionKind):
            raise VdmError(f"precision must be one of {', '.join(get_args(PrecisionKind))}, got {self.precision!r}")
        if self.lr_schedule not in get_args(LrScheduleKind):
            raise VdmError(f"lr_schedule must be one of {', '.join(get_args(LrScheduleKind))}, got {self.lr_schedule!r}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise VdmError(f"min_snr_gamma must be positive, got {self.min_snr_gamma}")
        if self.snr_range is not None:
            bounds = self.snr_range
            if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2
                    and all(isinstance(b, (int, float)) for b in bounds) and 0 <= bounds[0] < bounds[1]):
                raise VdmError(f"snr_range must be [low, high] with 0 <= low < high, got {bounds!r}")
            self.snr_range = (float(bounds[0]), float(bounds[1]))
        if self.log_snr_sampling is not None:
            spread = self.log_snr_sampling
            if not (isinstance(spread, (list, tuple)) and len(spread) == 2
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in spread) and spread[1] > 0):
                raise VdmError(f"log_snr_sampling must be [mean, std] with std > 0, got {spread!r}")
            self.log_snr_sampling = (float(spread[0]), float(spread[1]))
        if not self.lr > 0:
            raise VdmError(f"lr must be positive, got {self.lr}")
        if not (math.isfinite(self.input_perturbation) and self.input_perturbation >= 0):
            raise VdmError(f"input_perturbation must be >= 0, got {self.input_perturbation}")
        if not (math.isfinite(self.palette_v_loss) and self.palette_v_loss >= 0):
            raise VdmError(f"palette_v_loss must be >= 0, got {self.palette_v_loss}")
        if not 0 <= self.ema_decay < 1:
            raise VdmError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.batch_size % self.grad_accum:
            raise VdmError(f"batch_size {self.batch_size} must be a multiple of grad_accum {self.grad_accum}")


@dataclass
class Preset:
    model: ModelConfig
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.model.palette and self.diffusion.prediction != "x0":  # its output is a clean video
            raise VdmError(f'a palette model predicts the clean video: it needs [diffusion] prediction = "x0", '
                           f"got {self.diffusion.prediction!r}")
        if self.model.palette and self.train.min_snr_gamma is not None:
            raise VdmError("min_snr_gamma weights a squared error; a palette model trains on cross-entropy")
        if self.train.palette_v_loss and not self.model.palette:
            raise VdmError("palette_v_loss weights part of a palette model's loss; this model has no palette")


def presets() -> dict[str, Preset]:
    """tiny: trains on 2 CPU cores in minutes; small: a real run on one GPU; base: the seed's quality setting."""
    return {
        "tiny": Preset(
            ModelConfig(base_channels=16, channel_multiples=(1, 2, 4), num_res_blocks=1,
                        attention_levels=(2,), num_heads=4, frames=8, size=32),
            train=TrainConfig(steps=400, batch_size=4, lr=1e-3, warmup_steps=50, ema_decay=0.99,
                              sample_every=200, checkpoint_every=100),
        ),
        "small": Preset(
            ModelConfig(base_channels=64, channel_multiples=(1, 2, 4), num_res_blocks=1,
                        attention_levels=(1, 2), num_heads=4, frames=16, size=64),
            train=TrainConfig(steps=50_000, batch_size=16, lr=2e-4, warmup_steps=1000,
                              sample_every=2000, checkpoint_every=1000, ema_decay=0.9995),
        ),
        "base": Preset(
            ModelConfig(base_channels=64, channel_multiples=(1, 2, 4, 8), num_res_blocks=2,
                        attention_levels=(2, 3), num_heads=8, num_groups=16, frames=16, size=64),
            train=TrainConfig(steps=200_000, batch_size=32, lr=1e-4, warmup_steps=2000,
                              sample_every=5000, checkpoint_every=2000, ema_decay=0.9999),
        ),
    }


def get_preset(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise VdmError(f"unknown preset {name!r}; choose one of {', '.join(table)}")
    return table[name]


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict, source: str = "config"):
    """Build a config dataclass, naming unknown keys instead of ignoring them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VdmError(f"{source}: unknown {cls.__name__} field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise VdmError(f"{source}: {e}") from None


def load_config_file(path: str | Path, base: Preset) -> Preset:
    """Overlay a TOML/JSON file with [model], [diffusion], [train] tables onto a preset."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise VdmError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise VdmError(f"config file {path} is not valid {path.suffix[1:] or 'TOML'}: {e}") from None
    unknown = sorted(set(data) - {"model", "diffusion", "train", "preset"})
    if unknown:
        raise VdmError(f"{path}: unknown section(s) {', '.join(unknown)}; use model, diffusion, train")
    if "preset" in data:
        base = get_preset(data["preset"])
    merged = {}
    for section, cls in (("model", ModelConfig), ("diffusion", DiffusionConfig), ("train", TrainConfig)):
        current = to_dict(getattr(base, section))
        current.update(data.get(section, {}))
        merged[section] = from_dict(cls, current, str(path))
    return Preset(**merged)

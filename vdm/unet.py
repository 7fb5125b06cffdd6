"""The 3D UNet that predicts noise (or v, or x0) for a video: forward(x (B,C,T,H,W), t (B,), y (B,)) -> (B,C,T,H,W).

Encoder of residual 3D conv blocks with downsampling, a middle block with attention, and a decoder
with skip connections and upsampling. Every residual block's normalization is conditional: its
scale and shift come from the timestep (and class) embedding. Attention is factorized: spatial
attention within each frame, then temporal attention across frames with a frame position encoding.
Optionally (`temporal_attention_levels`), any level adds temporal-only attention with a relative
frame-position bias; optionally (`joint_attention_levels`), low-resolution levels add joint
attention over all frames and positions at once, so a moving object's features can reach it in
every frame.

Written to export: no data-dependent Python branches in forward, no einops. Reduced precision is a
cast of the network (`cast_for_inference`), with normalization statistics, softmax, and the
embeddings kept in float32, and float32 inputs and outputs so a sampling loop stays in float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vdm.config import ModelConfig, check_video_shape
from vdm.data import label_features
from vdm.diffusion import palette_colours


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(N,) float positions -> (N, dim) float32 [cos | sin] features, as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    args = positions.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class KeepFloat32(nn.Module):
    """Marker base: modules that `cast_for_inference` leaves in float32 (they are cheap and fragile)."""


def group_averaging(channels: int, num_groups: int) -> torch.Tensor:
    """(C, C, 1, 1, 1) float32: a 1x1x1 convolution kernel whose output channel c is the mean of the
    channels in c's group."""
    per_group = channels // num_groups
    group = torch.arange(channels) // per_group  # (C,) each channel's group
    return ((group[:, None] == group[None, :]).float() / per_group).reshape(channels, channels, 1, 1, 1)


def group_statistics(x: torch.Tensor, averaging: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm's mean and 1/std of x (B, C, T, H, W), per channel: (B, C, 1, 1, 1) each.

    The same numbers as nn.GroupNorm, computed without reshaping x to (B, groups, -1): per-channel
    means of x and of x^2 (reductions that work in any memory layout; the second as an L2 norm, so no
    x^2 tensor is written), averaged within each group by the 1x1x1 convolution `averaging`
    (`group_averaging`). Graph compilers then keep x channels-last from convolution to convolution;
    with the reshape, OpenVINO reorders every normalized tensor to planar and back (two copies per
    norm: 31 % of the demo's fp32 call, benchmarks/results/openvino-profile-demo-cpu-2026-11-29-epyc).
    The variance is E[x^2] - E[x]^2 in float32, which loses about (mean/std)^2 x 6e-8 of relative
    precision: fine at these activations' scale (on the demo, a group's |mean|/std stayed under 4
    while sampling 8 videos), and the parity check against nn.GroupNorm at every export would catch
    a model where it is not. PyTorch has a fused GroupNorm kernel, so only exports use this form.
    """
    positions = x.shape[2] * x.shape[3] * x.shape[4]
    mean = F.conv3d(x.mean(dim=(2, 3, 4), keepdim=True), averaging)  # (B, C, 1, 1, 1)
    root_sum_square = torch.linalg.vector_norm(x, 2, dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    mean_square = F.conv3d(root_sum_square * root_sum_square / positions, averaging)
    return mean, torch.rsqrt((mean_square - mean * mean).clamp(min=0) + eps)


def group_norm_by_statistics(x: torch.Tensor, averaging: torch.Tensor, eps: float, weight: torch.Tensor,
                             bias: torch.Tensor) -> torch.Tensor:
    """GroupNorm(x) * weight + bias as one multiply-add on x (B, C, T, H, W) float32, from
    `group_statistics`; weight and bias broadcast as (B or 1, C, 1, 1, 1)."""
    mean, rstd = group_statistics(x, averaging, eps)
    gain = rstd * weight
    return x * gain + (bias - mean * gain)


class ConditionalNorm(KeepFloat32):
    """GroupNorm/BatchNorm without affine, then scale and shift predicted from the embedding.

    Statistics are taken in float32 whatever the network's dtype; the result returns in x's dtype.
    With `averaging` (set by `Unet3D.use_channel_statistics`) a GroupNorm is computed as
    `group_norm_by_statistics`, for exports.
    """

    averaging: torch.Tensor | None = None  # a constant, not a buffer: not in checkpoints, not synced by DDP

    def __init__(self, channels: int, emb_dim: int, kind: str, num_groups: int):
        super().__init__()
        if kind == "group":
            self.norm = nn.GroupNorm(num_groups, channels, affine=False)
        elif kind == "batch":
            self.norm = nn.BatchNorm3d(channels, affine=False)
        else:
            raise ValueError(f"unknown norm {kind!r}")
        self.to_scale_shift = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(emb)[:, :, None, None, None].chunk(2, dim=1)  # (B, C, 1, 1, 1) each
        if self.averaging is not None:
            return group_norm_by_statistics(x.float(), self.averaging, self.norm.eps, 1 + scale, shift).to(x.dtype)
        h = self.norm(x.float())
        return (h * (1 + scale) + shift).to(x.dtype)


class PlainNorm(KeepFloat32):
    """GroupNorm with affine parameters, statistics in float32 (the output head's and attention's norm)."""

    averaging: torch.Tensor | None = None  # as in ConditionalNorm

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(num_groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.averaging is not None:
            weight, bias = (p.reshape(1, -1, 1, 1, 1) for p in (self.norm.weight, self.norm.bias))
            return group_norm_by_statistics(x.float(), self.averaging, self.norm.eps, weight, bias).to(x.dtype)
        return self.norm(x.float()).to(x.dtype)


class ResBlock(nn.Module):
    """Two 3x3x3 convolutions, each after a conditional norm and SiLU, plus a (1x1x1 when needed) skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, cfg: ModelConfig):
        super().__init__()
        self.norm1 = ConditionalNorm(in_ch, emb_dim, cfg.norm, cfg.num_groups)
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, padding=1)
        self.norm2 = ConditionalNorm(out_ch, emb_dim, cfg.norm, cfg.num_groups)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, emb)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, emb))))
        return self.skip(x) + h


class FramePositions(KeepFloat32):
    """Sinusoidal frame-index encoding, projected to the channels: (T,) -> (T, C)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(channels, channels)

    def forward(self, num_frames: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(num_frames, device=device)
        return self.proj(sinusoidal_embedding(positions, self.channels))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention (N, heads, L, d) with the softmax in float32 whatever the input dtype.

    bias: (heads, L, L) float32 added to the attention logits, or None.
    """
    dtype = q.dtype
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias).to(dtype)


def self_attention(tokens: torch.Tensor, qkv: nn.Linear, out: nn.Linear, num_heads: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, L, C) tokens -> (N, L, C): multi-head self-attention over the L tokens of each of the N rows."""
    n, length, c = tokens.shape
    q, k, v = qkv(tokens).reshape(n, length, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    # q, k, v: (N, heads, L, C/heads)
    h = attend(q, k, v, bias).transpose(1, 2).reshape(n, length, c)  # (N, L, C)
    return out(h)


class FactorizedAttention(nn.Module):
    """Spatial self-attention within each frame, then temporal self-attention across frames.

    Each is pre-norm and residual; the output projections start at zero so the block starts as
    the identity.
    """

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.spatial_norm = PlainNorm(channels, num_groups)
        self.spatial_qkv = nn.Linear(channels, 3 * channels)
        self.spatial_out = nn.Linear(channels, channels)
        self.temporal_norm = PlainNorm(channels, num_groups)
        self.frame_positions = FramePositions(channels)
        self.temporal_qkv = nn.Linear(channels, 3 * channels)
        self.temporal_out = nn.Linear(channels, channels)
        for layer in (self.spatial_out, self.temporal_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hgt, wid = x.shape
        tokens = self.spatial_norm(x).permute(0, 2, 3, 4, 1).reshape(b * t, hgt * wid, c)  # (B*T, H*W, C)
        h = self_attention(tokens, self.spatial_qkv, self.spatial_out, self.num_heads)
        x = x + h.reshape(b, t, hgt, wid, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)

        tokens = self.temporal_norm(x).permute(0, 3, 4, 2, 1).reshape(b * hgt * wid, t, c)  # (B*H*W, T, C)
        tokens = tokens + self.frame_positions(t, x.device).to(tokens.dtype)
        h = self_attention(tokens, self.temporal_qkv, self.temporal_out, self.num_heads)
        return x + h.reshape(b, hgt, wid, t, c).permute(0, 4, 3, 1, 2)  # (B, C, T, H, W)


class RelativeFrameBias(KeepFloat32):
    """A learned logit bias per head and frame offset: (T,) frames -> (heads, T, T) float32.

    Offsets beyond +-MAX_OFFSET share the outermost entries, so any clip length works (and exports
    with dynamic frames). Starts at zero: attention starts out blind to the frame order.
    """

    MAX_OFFSET = 15

    def __init__(self, num_heads: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * self.MAX_OFFSET + 1))

    def forward(self, num_frames: int, device: torch.device) -> torch.Tensor:
        frames = torch.arange(num_frames, device=device)
        offsets = (frames[None, :] - frames[:, None]).clamp(-self.MAX_OFFSET, self.MAX_OFFSET)  # (T, T) key - query
        return self.table[:, offsets + self.MAX_OFFSET]  # (heads, T, T)


class ResidualAttention(nn.Module):
    """What the one-kind attention blocks share: a pre-norm, the qkv projection, and an output
    projection that starts at zero, so the block starts as the identity (and can be added to a
    trained model). Subclasses add their position information and choose the tokens."""

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = PlainNorm(channels, num_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)


class TemporalAttention(ResidualAttention):
    """Self-attention across the frames at each position, pre-norm and residual, with a relative
    frame-position bias (what a frame sees depends on how far away the other frame is, not on where
    the clip starts). Cheap at any resolution: a sequence of T tokens per position."""

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__(channels, num_heads, num_groups)
        self.frame_bias = RelativeFrameBias(num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hgt, wid = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * hgt * wid, t, c)  # (B*H*W, T, C)
        h = self_attention(tokens, self.qkv, self.out, self.num_heads, self.frame_bias(t, x.device))
        return x + h.reshape(b, hgt, wid, t, c).permute(0, 4, 3, 1, 2)  # (B, C, T, H, W)


class JointAttention(ResidualAttention):
    """Self-attention over all T*H*W positions of a clip at once, pre-norm and residual.

    Factorized attention compares a position only with the same position in other frames, so a
    moving object meets itself there only while it overlaps its old place; here every position sees
    every frame, so an object's features (its colour, its size) can follow it wherever it moved.
    Affordable at the low resolutions: 8 frames of 8 x 8 are 512 tokens.
    """

    def __init__(self, channels: int, num_heads: int, num_groups: int):
        super().__init__(channels, num_heads, num_groups)
        self.frame_positions = FramePositions(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hgt, wid = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
        tokens = tokens + self.frame_positions(t, x.device).to(tokens.dtype)[None, :, None, None, :]
        h = self_attention(tokens.reshape(b, t * hgt * wid, c), self.qkv, self.out, self.num_heads)
        return x + h.reshape(b, t, hgt, wid, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)


def motion_grid(flow: torch.Tensor, offset: int) -> torch.Tensor:
    """(N, 2, H, W) motion (dy, dx) in px per frame -> (N, H, W, 2) grid_sample coordinates of where
    each pixel's content lies `offset` frames later, in grid_sample's (x, y) order and [-1, 1] units
    (align_corners=False: pixel i spans [i, i + 1], so its centre i + 0.5 maps to (2 i + 1) / H - 1)."""
    hgt, wid = flow.shape[-2:]
    ys = (2 * torch.arange(hgt, device=flow.device, dtype=flow.dtype) + 1) / hgt - 1  # (H,)
    xs = (2 * torch.arange(wid, device=flow.device, dtype=flow.dtype) + 1) / wid - 1  # (W,)
    gy = ys[:, None] + offset * flow[:, 0] * (2 / hgt)  # (N, H, W)
    gx = xs[None, :] + offset * flow[:, 1] * (2 / wid)
    return torch.stack([gx, gy], dim=-1)


class MotionAlign(nn.Module):
    """Each frame gathers its neighbours' features along its own estimated motion, pre-norm and residual.

    A 3x3x3 convolution at full resolution lines up content that moves at most 1 px per frame, while
    the demo's shapes move 1-2.6: so a pixel's evidence from other frames reaches it only through the
    coarser levels, which lose the outline. Here a convolution estimates each pixel's motion (dy, dx)
    in px per frame; for each offset d in +-1..+-reach, frame t + d is sampled bilinearly where that
    motion puts the pixel's content (zeros past the clip's ends), as video restoration networks align
    frames before fusing them (BasicVSR's flow-guided alignment). A 1x1x1 convolution fuses the
    frame with its aligned neighbours; it starts at zero and the motion at rest, so the block starts
    as the identity (and can be added to a trained model)."""

    def __init__(self, channels: int, num_groups: int, reach: int):
        super().__init__()
        self.offsets = [d for d in range(-reach, reach + 1) if d]
        self.norm = PlainNorm(channels, num_groups)
        self.motion = nn.Conv3d(channels, 2, 3, padding=1)
        self.fuse = nn.Conv3d(channels * (1 + len(self.offsets)), channels, 1)
        for conv in (self.motion, self.fuse):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, hgt, wid = x.shape
        h = self.norm(x)
        flow = self.motion(h).float().transpose(1, 2).reshape(b * t, 2, hgt, wid)  # (B*T, 2, H, W)
        reach = self.offsets[-1]
        padded = F.pad(h, (0, 0, 0, 0, reach, reach)).transpose(1, 2)  # (B, T + 2 reach, C, H, W), zero frames
        gathered = [h]
        for d in self.offsets:
            source = padded[:, reach + d:reach + d + t]  # frame t + d for every t, zeros past the clip's ends
            aligned = F.grid_sample(source.reshape(b * t, c, hgt, wid).float(), motion_grid(flow, d),
                                    mode="bilinear", padding_mode="zeros", align_corners=False)
            gathered.append(aligned.to(h.dtype).reshape(b, t, c, hgt, wid).transpose(1, 2))  # (B, C, T, H, W)
        return x + self.fuse(torch.cat(gathered, dim=1))


class Downsample(nn.Module):
    """Strided 3x3x3 convolution: halves H and W (and T when temporal_downsample)."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 3, stride=(2 if temporal else 1, 2, 2), padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling, then a 3x3x3 convolution."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.scale = (2.0 if temporal else 1.0, 2.0, 2.0)
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class SharedLabelEmbedding(nn.Module):
    """A label's vector as the sum of its features' vectors (vdm.data.label_features: the clip's colours,
    or colours and shapes, and with `counts` their number; the null class its own), so every clip trains
    the vectors of what it holds.

    A gather from a fixed 0/1 table and a matmul: export-friendly, no integer arithmetic in the graph."""

    def __init__(self, class_label: str, emb_dim: int, counts: bool = False):
        super().__init__()
        features = torch.as_tensor(label_features(class_label, counts))  # (num_classes + 1, F); as_tensor
        # follows a `with torch.device(...)` block (from_numpy stays on the CPU), so meta-device models build
        self.register_buffer("features", features, persistent=False)  # from the config, not saved
        self.vectors = nn.Parameter(torch.randn(features.shape[1], emb_dim) / math.sqrt(2))  # (F, emb_dim)
        # 1/sqrt(2): a clip of 1-3 shapes (and its count) sums to about nn.Embedding's unit-variance vectors

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.features[y] @ self.vectors  # (B, F) @ (F, emb_dim) -> (B, emb_dim)


class Embedding(KeepFloat32):
    """Timestep (and class) embedding: sinusoid -> MLP, plus a learned class vector (null class = num_classes)."""

    def __init__(self, base_channels: int, emb_dim: int, cfg: ModelConfig):
        super().__init__()
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if not cfg.conditional:
            self.class_embed = None
        elif cfg.label_embedding == "table":
            self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim)
        elif cfg.label_embedding in ("shared", "shared_count"):
            counts = cfg.label_embedding == "shared_count"
            self.class_embed = SharedLabelEmbedding(cfg.class_label, emb_dim, counts)
        else:
            raise ValueError(f"unknown label_embedding {cfg.label_embedding!r}")

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.base_channels))  # (B, emb_dim)
        if self.class_embed is not None:
            emb = emb + self.class_embed(y)
        return emb


class Level(nn.Module):
    """The residual blocks of one UNet level, each optionally followed by factorized attention,
    temporal attention, joint attention and (in the decoder) motion alignment."""

    def __init__(self, channels_in: list[int], out_ch: int, emb_dim: int, level: int, cfg: ModelConfig,
                 decoder: bool = False):
        super().__init__()
        self.decoder = decoder
        self.blocks = nn.ModuleList(ResBlock(c, out_ch, emb_dim, cfg) for c in channels_in)
        self.attentions = nn.ModuleList(
            FactorizedAttention(out_ch, cfg.num_heads, cfg.num_groups) if level in cfg.attention_levels
            else nn.Identity() for _ in channels_in)
        # Separate lists, so adding temporal or joint attention leaves the other weights' names as they were.
        self.temporals = nn.ModuleList(
            TemporalAttention(out_ch, cfg.num_heads, cfg.num_groups) if level in cfg.temporal_attention_levels
            else nn.Identity() for _ in channels_in)
        self.joints = nn.ModuleList(
            JointAttention(out_ch, cfg.num_heads, cfg.num_groups) if level in cfg.joint_attention_levels
            else nn.Identity() for _ in channels_in)
        # The decoder's blocks only: there the coarser levels' features can tell each pixel's motion.
        self.aligns = nn.ModuleList(
            MotionAlign(out_ch, cfg.num_groups, cfg.motion_align_reach)
            if decoder and level in cfg.motion_align_levels else nn.Identity() for _ in channels_in)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Encoder: push each block's output onto `skips`. Decoder: pop one skip into each block."""
        for block, attention, temporal, joint, align in zip(self.blocks, self.attentions, self.temporals,
                                                             self.joints, self.aligns):
            if self.decoder:
                h = torch.cat([h, skips.pop()], dim=1)
            h = align(joint(temporal(attention(block(h, emb)))))
            if not self.decoder:
                skips.append(h)
        return h


class PaletteMix(KeepFloat32):
    """Logits over K palette colours (B, K, T, H, W) -> their expected colour (B, 3, T, H, W) in [-1, 1].

    A 1x1x1 convolution with the colours as its fixed weights, after a float32 softmax: export-friendly
    and layout-agnostic. The colours come from the config, so they are not saved with the weights."""

    def __init__(self, palette: tuple[tuple[int, int, int], ...]):
        super().__init__()
        colours = palette_colours(palette)  # (K, 3)
        self.register_buffer("weight", colours.T.reshape(3, len(palette), 1, 1, 1).contiguous(), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return F.conv3d(torch.softmax(logits.float(), dim=1), self.weight)


class Unet3D(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        base = cfg.base_channels
        emb_dim = 4 * base
        widths = [base * m for m in cfg.channel_multiples]
        self.embedding = Embedding(base, emb_dim, cfg)
        self.conv_in = nn.Conv3d(cfg.network_channels, base, 3, padding=1)

        # Encoder: record the channels of every skip connection, in order.
        skips = [base]
        ch = base
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, width in enumerate(widths):
            ins = [ch] + [width] * (cfg.num_res_blocks - 1)
            self.down.append(Level(ins, width, emb_dim, level, cfg))
            ch = width
            skips += [width] * cfg.num_res_blocks
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else Downsample(ch, cfg.temporal_downsample))
            if not last:
                skips.append(ch)

        self.mid_block1 = ResBlock(ch, ch, emb_dim, cfg)
        self.mid_attention = FactorizedAttention(ch, cfg.num_heads, cfg.num_groups)
        self.mid_joint = (JointAttention(ch, cfg.num_heads, cfg.num_groups)
                          if cfg.num_levels - 1 in cfg.joint_attention_levels else nn.Identity())
        self.mid_block2 = ResBlock(ch, ch, emb_dim, cfg)

        # Decoder: each block takes one skip connection, popped in reverse.
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            ins = []
            for _ in range(cfg.num_res_blocks + 1):
                ins.append(ch + skips.pop())
                ch = width
            self.up.append(Level(ins, width, emb_dim, level, cfg, decoder=True))
            self.upsample.append(Upsample(ch, cfg.temporal_downsample) if level > 0 else nn.Identity())
        assert not skips, "every skip connection is consumed"

        self.norm_out = PlainNorm(ch, cfg.num_groups)
        self.conv_out = nn.Conv3d(ch, len(cfg.palette) or cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.palette_mix = PaletteMix(cfg.palette) if cfg.palette else nn.Identity()

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError naming the problem when x is not a (B, C, T, H, W) video this UNet can take."""
        if x.ndim != 5 or x.shape[1] != self.cfg.network_channels:
            raise ValueError(f"expected x of shape (B, {self.cfg.network_channels}, T, H, W), got {tuple(x.shape)}")
        check_video_shape(self.cfg, x.shape[2], x.shape[3], x.shape[4])

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                logits: bool = False) -> torch.Tensor:
        """x (B, C, T, H, W) float32, t (B,) timesteps, y (B,) class labels (None = the null class).

        With self_condition, x is (B, 2C, T, H, W): the noisy video, then the clean-video estimate
        (vdm.diffusion.with_estimate). Returns the prediction (B, C, T, H, W) in float32; with a
        palette, the expected clean video, or with `logits` the colour logits (B, K, T, H, W) it mixes.
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
        if self.cfg.conditional and y is None:
            y = torch.full_like(t, self.cfg.null_class, dtype=torch.long)
        emb = self.embedding(t, y)  # (B, emb_dim) float32
        h = self.conv_in(x.to(self.conv_in.weight.dtype))
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            h = level(h, emb, skips)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid_block2(self.mid_joint(self.mid_attention(self.mid_block1(h, emb))), emb)
        for level, up in zip(self.up, self.upsample):
            h = up(level(h, emb, skips))
        out = self.conv_out(F.silu(self.norm_out(h))).float()
        return out if logits else self.palette_mix(out)

    def cast_for_inference(self, dtype: torch.dtype) -> "Unet3D":
        """Convolutions and attention projections in `dtype`; norms and embeddings stay float32."""
        self.to(dtype)
        for module in self.modules():
            if isinstance(module, KeepFloat32):
                module.float()
        return self

    def use_channel_statistics(self, enabled: bool = True) -> "Unet3D":
        """Compute every GroupNorm as per-channel statistics and one multiply-add
        (`group_norm_by_statistics`): the same function, in a form that graph compilers keep channels-last."""
        for module in self.modules():
            if isinstance(module, (ConditionalNorm, PlainNorm)) and isinstance(module.norm, nn.GroupNorm):
                norm = module.norm
                module.averaging = (group_averaging(norm.num_channels, norm.num_groups).to(self.conv_in.weight.device)
                                    if enabled else None)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Training: `vdm-train`. AdamW with warm-up, gradient clipping and accumulation, EMA weights,
bf16 autocast (on CUDA and on CPUs with AMX), metrics.jsonl, sample videos, atomic checkpoints, exact
resume, and several processes (`torchrun --nproc_per_node N -m vdm.train ...`) with
DistributedDataParallel.

A run directory holds:
    config.json                        the model, diffusion and training configs
    metrics.jsonl                      one line per `log_every` steps
    checkpoints/latest.safetensors     EMA weights + configs: all that inference needs
    checkpoints/train_state.pt         raw weights, EMA, optimizer, step, world size: all that --resume needs
    samples/step_XXXXXX/               sample_XXX.mp4 per video and grid.gif, from the EMA weights

A run is a pure function of (seed, step): step s trains on the clips s*B ... s*B + B - 1 (B = the
global batch, split over the processes), and its timesteps, noise and label dropout are drawn on the
training device from a generator seeded by (seed, s), for the whole global batch, so each clip gets
the same draws whatever the number of processes. Dropout masks are seeded by (seed, s, rank). So
--resume continues exactly, with no random state to restore.

The step never makes the host wait for a GPU: the loss and gradient norm are summed on the device
and read every `log_every` steps (and before every checkpoint and sample), which is also when a
NaN/inf is caught.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import json
import math
import time
from pathlib import Path
from typing import get_args

import click
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vdm.atomic import atomic_write_text
from vdm.batches import StepBatches, local_batch_size
from vdm.checkpoint import check_weights, load_torch, read_checkpoint, save_checkpoint, save_torch_atomic
from vdm.config import (DiffusionConfig, LrScheduleKind, ModelConfig, PrecisionKind, Preset, TrainConfig, from_dict,
                        get_preset, load_config_file, to_dict)
from vdm.data import colors_of_shapes_label, label_classes, make_dataset
from vdm.diffusion import (Schedule, clean_from_output, correlate_frames, gather, implied_v_loss,
                           log_snr_normal_probabilities, palette_colours, palette_loss, q_sample,
                           timesteps_in_snr_range, training_loss, with_estimate)
from vdm.distributed import Ranks, all_reduce, barrier, rank_device, ranks_from_env
from vdm.distributed import start as start_processes
from vdm.distributed import stop as stop_processes
from vdm.errors import TrainingDiverged, VdmError, cli_errors
from vdm.machine import cpu_flags
from vdm.samplers import DEFAULT_STEPS
from vdm.schema import NON_NEGATIVE_INT, OBJECT, POSITIVE_INT, optional, validate
from vdm.unet import Unet3D, count_parameters

# What --resume reads from train_state.pt, checked before any of it is used.
TRAIN_STATE_SCHEMA = {"step": NON_NEGATIVE_INT, "model": OBJECT, "ema": OBJECT, "optimizer": OBJECT,
                      "world_size": optional(POSITIVE_INT), "config": {"model": OBJECT, "diffusion": OBJECT}}
LABEL_DROPOUT = 0.1  # fraction of conditional examples trained as the null class (for guidance)
SELF_CONDITION_SHARE = 0.5  # fraction of clips trained with their self-conditioning estimate (Chen et al.)
NOISE_STREAM, DROPOUT_STREAM = 0, 1  # the step's two seeded streams: see step_seed
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
# TrainConfig.memory_format "auto", per device type. CPU: channels-last 3D, faster with oneDNN on the
# AVX2 EPYC (tiny preset, batch 4, forward + backward: 1.17 -> 0.94 s on 1 thread, 0.61 -> 0.55 s on 2);
# on the AVX-512 Xeon whole steps in either layout are within 2-7 % of each other, neither always ahead
# (benchmarks/results/train-step-cpu-2026-11-28). CUDA: the default layout until benchmarks/train_step.py
# measures both there.
AUTO_MEMORY_FORMAT = {"cpu": "channels_last_3d", "cuda": "contiguous"}
# TrainConfig.workers None, per device type. CPU: none; data is under 1 % of a step there (about 2 ms
# of 260-480 ms, benchmarks/results/train-step-cpu-2026-11-28) and workers would take its cores.
# CUDA: 4 processes sampling the next steps' shapes (about 0.1 ms a clip) or decoding videos.
AUTO_WORKERS = {"cpu": 0, "cuda": 4}
# TrainConfig.precision "auto" on a CPU: bf16 autocast only with AMX. The demo's step (batch 16, 2
# threads) took 424 ms in bf16 against 583 ms in fp32 on a Xeon with AMX, but 847 against 619 ms with
# oneDNN held to AVX-512 bf16 (an AMD EPYC's units) (benchmarks/results/train-precision-cpu-2026-12-07).
CPU_BF16_TRAINING_FLAG = "amx_bf16"


def lr_at(step: int, peak: float, warmup_steps: int, schedule: str = "constant", total_steps: int = 1) -> float:
    """Linear warm-up to the peak, then constant, or (cosine) down to 0 at total_steps."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if schedule == "constant" or step < warmup_steps:
        return peak * warm
    elif schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def step_seed(seed: int, step: int, *stream: int) -> int:
    """A 63-bit seed for one of a step's random streams, mixed from (seed, step, *stream) by numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, step, *stream]).generate_state(1, np.uint64)[0] >> 1)


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d ema + (1 - d) model, with d ramped up early so the EMA is not stuck at the init.

    One foreach call for all parameters (a few fused kernels on CUDA, not one per tensor).
    """
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def make_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """The fused AdamW: on CUDA a few kernels for every parameter; on the CPU too it is faster than
    the default loop (one update on one thread of the AVX-512 Xeon, timed once outside the benchmark:
    the tiny preset's 2.0 M parameters 10.2 -> 3.5 ms, small's 32 M 122 -> 64 ms)."""
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True)


def enable_tf32() -> None:
    """Let CUDA float32 matmuls and convolutions use TF32 tensor cores (what autocast leaves in float32)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; the old flags are deprecated
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def auto_setting(table: dict, device: torch.device, what: str):
    if device.type not in table:
        raise VdmError(f"no default {what} for device {device.type}; train on cpu or cuda")
    return table[device.type]


def in_layout(model: torch.nn.Module, device: torch.device, memory_format: torch.memory_format,
              precision: str = "fp32") -> torch.nn.Module:
    """The model on `device` with its 5-D weights in `memory_format`.

    A 1x1x1 kernel is the same bytes in either layout, but its gradient comes with the strides of the
    layout oneDNN picked: contiguous in fp32 and channels-last in bf16 autocast, at torchrun's one
    thread per process (a Xeon with AMX, torch 2.13). Weights in their gradients' strides let DDP's
    gradient buckets take them (else DDP warns and copies).
    """
    model.to(device, memory_format=memory_format)
    if precision == "bf16":
        return model
    for param in model.parameters():
        if param.dim() == 5 and param.shape[2:] == (1, 1, 1):
            param.data = param.data.clone(memory_format=torch.contiguous_format)
    return model


def training_precision(asked: str, device: torch.device, flags: set[str] | None = None) -> str:
    """The precision a run trains in: `asked` unless "auto"; auto is bf16 autocast on CUDA and on CPUs
    with AMX (CPU_BF16_TRAINING_FLAG), else fp32. Weights, optimizer and EMA stay fp32 either way."""
    if asked != "auto":
        return asked
    if device.type == "cuda":
        return "bf16"
    return "bf16" if CPU_BF16_TRAINING_FLAG in (cpu_flags() if flags is None else flags) else "fp32"


def check_batch_split(train: TrainConfig, ranks: Ranks) -> None:
    """The global batch must split evenly over the processes, and each share into grad_accum micro-batches."""
    local = local_batch_size(train.batch_size, ranks)
    if local % train.grad_accum:
        raise VdmError(f"each of the {ranks.world_size} processes gets {local} clips, which do not split "
                       f"into grad_accum {train.grad_accum} micro-batches; use a batch_size that is a multiple "
                       f"of {ranks.world_size * train.grad_accum}")


def trained_timesteps(schedule: Schedule, snr_range: tuple[float, float] | None) -> tuple[int, int]:
    """(first, count): the timesteps training draws from, all of them or those in `snr_range`."""
    if snr_range is None:
        return 0, schedule.num_timesteps
    first, count = timesteps_in_snr_range(schedule.alphas_cumprod, *snr_range)
    if count == 0:
        snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
        raise VdmError(f"snr_range {list(snr_range)} holds no training timestep: their SNRs run from "
                       f"{snr[-1]:.3g} to {snr[0]:.3g}")
    return first, count


def timestep_probabilities(schedule: Schedule, timesteps: tuple[int, int],
                           log_snr_sampling: tuple[float, float] | None) -> np.ndarray | None:
    """(count,) probabilities of the timesteps (first, count) of `trained_timesteps` under
    `log_snr_sampling`, or None to draw them uniformly; a VdmError if it leaves them no weight."""
    if log_snr_sampling is None:
        return None
    first, count = timesteps
    probabilities = log_snr_normal_probabilities(schedule.alphas_cumprod, *log_snr_sampling)[first:first + count]
    if not probabilities.sum() > 1e-12:
        raise VdmError(f"log_snr_sampling {list(log_snr_sampling)} puts no weight on the trained timesteps")
    return probabilities / probabilities.sum()


def micro_batches(parts: int, *tensors: torch.Tensor | None) -> list[tuple]:
    """Split each (B, ...) tensor into `parts` chunks along B; None stays None in every chunk."""
    chunks = [t.chunk(parts) if t is not None else [None] * parts for t in tensors]
    return list(zip(*chunks))


def zero_estimate_inputs(conv_in_weight: torch.Tensor) -> torch.Tensor:
    """conv_in's weight (out, C, 3, 3, 3) -> (out, 2C, 3, 3, 3): the self-conditioning estimate's
    channels read with zero weight, so the network computes what it did without them."""
    return torch.cat([conv_in_weight, torch.zeros_like(conv_in_weight)], dim=1)


def shapes_class_vectors(colors_vectors: torch.Tensor) -> torch.Tensor:
    """A "colors" model's class vectors (2 ** K, emb_dim; the null class last) -> a "shapes" model's
    (3 ** K, emb_dim): each label starts from its colours' vector, so the fine-tune starts from what
    the colours model draws and learns only what the shapes add."""
    null = len(colors_vectors) - 1
    return colors_vectors[[colors_of_shapes_label(label) for label in range(label_classes("shapes", 0))] + [null]]


class StepStats:
    """The loss and gradient norm summed on the device since the last read, and the first step at
    which either was not finite. Reading them is when training waits for the device."""

    NO_STEP = 2**62

    def __init__(self, device: torch.device):
        self.device = device
        self.first_bad = torch.full((), self.NO_STEP, dtype=torch.int64, device=device)
        self.bad_values = torch.zeros(2, device=device)  # (loss, grad norm) at first_bad
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, device=self.device)  # (loss, grad norm)
        self.steps = 0

    def add(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        values = torch.stack((loss.float(), grad_norm.float()))  # (2,)
        self.sums += values
        self.steps += 1
        first = self.first_bad.eq(self.NO_STEP) & ~values.isfinite().all()
        self.first_bad = torch.where(first, step, self.first_bad)
        self.bad_values = torch.where(first, values, self.bad_values)

    def divergence(self, ranks: Ranks) -> str | None:
        """'loss became nan at step N' for the first step (on any rank) whose loss or gradient norm was
        not finite, else None."""
        first_bad = int(all_reduce(self.first_bad.clone(), ranks, "min"))
        if first_bad == self.NO_STEP:
            return None
        loss, grad_norm = all_reduce(self.bad_values.clone(), ranks).tolist()  # a NaN on any rank stays NaN
        what, value = ("loss", loss) if not np.isfinite(loss) else ("gradient norm", grad_norm)
        return f"{what} became {value} at step {first_bad}"

    def means(self, ranks: Ranks) -> tuple[float, float]:
        """(loss, grad norm), each the mean over the steps since the last reset and over every rank."""
        sums = all_reduce(self.sums.clone(), ranks) / (max(1, self.steps) * ranks.world_size)
        loss, grad_norm = sums.tolist()
        return loss, grad_norm


class Trainer:
    def __init__(self, preset: Preset, out_dir: Path, device: torch.device, ranks: Ranks = Ranks()):
        """Build the model, EMA, optimizer and data for this process. With several ranks the
        process group must be started (vdm.distributed.start) first."""
        self.cfg = preset
        self.out = out_dir
        self.device = device
        self.ranks = ranks
        tc = self.train_cfg = preset.train
        schedule = Schedule.from_config(preset.diffusion)
        self.timesteps = trained_timesteps(schedule, tc.snr_range)  # (first, count) that draws samples from
        probabilities = timestep_probabilities(schedule, self.timesteps, tc.log_snr_sampling)  # ... and how
        self.timestep_probabilities = None if probabilities is None else torch.as_tensor(probabilities, device=device)
        self.schedule = schedule.to(device)
        m = preset.model
        self.colours = palette_colours(m.palette, device) if m.palette else None  # (K, 3) a palette model's
        check_batch_split(tc, ranks)
        dataset = make_dataset(tc.data, m.frames, m.size, tc.frame_stride, tc.seed)
        workers = tc.workers if tc.workers is not None else auto_setting(AUTO_WORKERS, device, "workers")
        self.batches = StepBatches(dataset, tc.batch_size, ranks, device, workers, m.num_classes, m.class_label)
        torch.manual_seed(tc.seed)
        layout = tc.memory_format if tc.memory_format != "auto" else auto_setting(AUTO_MEMORY_FORMAT, device, "layout")
        self.memory_format = MEMORY_FORMATS[layout]
        if device.type == "cuda":
            enable_tf32()
        self.precision = training_precision(tc.precision, device)
        self.model = in_layout(Unet3D(m), device, self.memory_format, self.precision)  # what is saved and averaged
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = make_optimizer(self.model, tc)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                            gradient_as_bucket_view=True)
                    if ranks.distributed else None)
        network = self.ddp or self.model
        self.network = torch.compile(network) if tc.compile else network  # what the step calls
        self.generator = torch.Generator(device=device)  # timesteps, noise, label dropout: see step_seed
        self.stats = StepStats(device)
        self.data_seconds = 0.0  # host time spent waiting for batches, since the last metrics line
        self.step = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Rank 0 writes the training state and the inference checkpoint; every rank waits for it."""
        barrier(self.ranks)
        if self.ranks.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            state = {
                "step": self.step,
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "world_size": self.ranks.world_size,
                "config": {k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion")},
            }
            save_torch_atomic(state, self.checkpoint_dir / "train_state.pt")
            save_checkpoint(self.checkpoint_dir / "latest.safetensors", self.ema.state_dict(),
                            self.cfg.model, self.cfg.diffusion, self.step)
        barrier(self.ranks)

    def resume(self) -> None:
        """Load OUT/checkpoints/train_state.pt (every rank reads it: on several nodes, OUT must be shared)."""
        path = self.checkpoint_dir / "train_state.pt"
        if not path.exists():
            raise VdmError(f"--resume: no training state at {path}; start without --resume")
        state = load_torch(path)
        validate(state, TRAIN_STATE_SCHEMA, str(path))
        saved = state["config"]
        try:  # through the dataclasses, so fields added since (at their defaults) compare equal
            saved = {"model": to_dict(from_dict(ModelConfig, saved["model"])),
                     "diffusion": to_dict(from_dict(DiffusionConfig, saved["diffusion"]))}
        except (KeyError, TypeError, VdmError):
            pass  # an unreadable config differs from ours: refused below
        now = {k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion")}
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(now)):
            raise VdmError(f"--resume: {path} was trained with a different model/diffusion config; "
                           "use the same --preset/--config, or a new --out")
        saved_world = state.get("world_size") or 1  # states from before multi-process training lack it
        if saved_world != self.ranks.world_size:
            raise VdmError(f"--resume: {path} was trained by {saved_world} process(es), this run has "
                           f"{self.ranks.world_size}; resume with {saved_world} in all (torchrun "
                           "--nnodes x --nproc_per_node), or start a new --out")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]

    def init_from(self, path: str | Path) -> list[str]:
        """Load a checkpoint's weights into the model and its EMA; return the names it did not have.

        Those keep their initialization: a block added since that starts as the identity (the
        attention blocks' zero output projections) leaves the loaded model computing what it did.
        So does self-conditioning added since: the estimate's input channels start at zero weight;
        and class conditioning added to an unconditional model: every class vector starts at zero;
        a "colors" model refined to "shapes" labels (table embeddings): each class starts at its colours' vector.
        """
        state, model_config, diffusion_config, _ = read_checkpoint(path)
        if self.cfg.model.self_condition and not model_config.self_condition:
            state = state | {"conv_in.weight": zero_estimate_inputs(state["conv_in.weight"])}
        if self.cfg.model.conditional and not model_config.conditional:
            state = state | {name: torch.zeros_like(weights) for name, weights in self.model.state_dict().items()
                             if name.startswith("embedding.class_embed.")}  # the class vectors
        elif model_config.conditional and (model_config.class_label, self.cfg.model.class_label) == (
                "colors", "shapes") and model_config.label_embedding == self.cfg.model.label_embedding == "table":
            vectors = state["embedding.class_embed.weight"]
            state = state | {"embedding.class_embed.weight": shapes_class_vectors(vectors)}
        # A new frame-noise correlation is a fine-tune's to learn (Ge et al. adapt a model to it);
        # any other difference changes what the weights predict.
        correlation = self.cfg.diffusion.frame_noise_correlation
        if dataclasses.replace(diffusion_config, frame_noise_correlation=correlation) != self.cfg.diffusion:
            raise VdmError(f"--init-from: {path} was trained with diffusion config {to_dict(diffusion_config)}, "
                           f"this run uses {to_dict(self.cfg.diffusion)}")
        source = f"--init-from {path} (its model config: {to_dict(model_config)})"
        missing = check_weights(state, self.model.state_dict(), source, allow_missing=True)
        self.model.load_state_dict(state, strict=False)
        self.ema.load_state_dict(self.model.state_dict())
        return missing

    # -- one optimizer step ----------------------------------------------------------------------
    def draws(self, step: int, shape: torch.Size) -> tuple[torch.Tensor | None, ...]:
        """This rank's timesteps (b,), noise `shape` (b, C, T, H, W), the input perturbation (b, C, T, H,
        W; None without it), label dropout (b,) bool (None for an unconditional model) and
        self-conditioning choice (b,) bool (None without it) at `step`: drawn on the device for the
        whole global batch, then sliced. The perturbation is drawn last, so the other draws stay those
        of a run without it."""
        g = self.generator.manual_seed(step_seed(self.train_cfg.seed, step, NOISE_STREAM))
        batch, local = self.train_cfg.batch_size, shape[0]
        first, count = self.timesteps
        if self.timestep_probabilities is None:
            t = first + torch.randint(0, count, (batch,), generator=g, device=self.device)
        else:
            t = first + torch.multinomial(self.timestep_probabilities, batch, replacement=True, generator=g)
        noise = torch.randn((batch, *shape[1:]), generator=g, device=self.device)  # (B, C, T, H, W)
        noise = correlate_frames(noise, self.cfg.diffusion.frame_noise_correlation)
        drop = (torch.rand(batch, generator=g, device=self.device) < LABEL_DROPOUT
                if self.cfg.model.conditional else None)
        estimate = (torch.rand(batch, generator=g, device=self.device) < SELF_CONDITION_SHARE
                    if self.cfg.model.self_condition else None)
        gamma = self.train_cfg.input_perturbation
        perturbation = (gamma * torch.randn((batch, *shape[1:]), generator=g, device=self.device)
                        if gamma > 0 else None)
        mine = slice(self.ranks.rank * local, (self.ranks.rank + 1) * local)
        return tuple(None if d is None else d[mine] for d in (t, noise, perturbation, drop, estimate))

    def loss_on(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, perturbation: torch.Tensor | None,
                y: torch.Tensor | None, estimate: torch.Tensor | None) -> torch.Tensor:
        """The diffusion loss of one micro-batch x0 (b, C, T, H, W) at timesteps t (b,) with `noise`, the
        network's input noised with noise + `perturbation` where one is given; `estimate` (b,) bool
        picks the clips that see their self-conditioning estimate."""
        input_noise = noise if perturbation is None else noise + perturbation
        x_t = q_sample(x0, t, input_noise, self.schedule.alphas_cumprod)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if estimate is not None:
                x_t = self.self_conditioned(x_t, t, y, estimate)
            out = self.network(x_t.contiguous(memory_format=self.memory_format), t, y, logits=self.colours is not None)
        if self.colours is not None:
            return self.palette_loss_on(out, x0, t)
        return training_loss(out, x0, noise, t, self.schedule, self.train_cfg.min_snr_gamma)

    def palette_loss_on(self, logits: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A palette model's loss: the cross-entropy of its logits (b, K, T, H, W), plus palette_v_loss
        times the v loss of the v its clean video implies."""
        loss = palette_loss(logits, x0, self.colours)
        weight = self.train_cfg.palette_v_loss
        if weight == 0:
            return loss
        abar = gather(self.schedule.alphas_cumprod, t, x0.ndim)
        clean = self.model.palette_mix(logits)  # palette_mix has no weights, so DDP need not see it
        return loss + weight * implied_v_loss(clean, x0, abar)

    def self_conditioned(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                         estimate: torch.Tensor) -> torch.Tensor:
        """x_t (b, C, T, H, W) with its self-conditioning channels (b, 2C, T, H, W): the network's own
        clean-video estimate from x_t, without gradient, for the clips in `estimate`, zeros for the
        others (Chen et al.: so the network learns the first sampling step and the later ones)."""
        zeros = torch.zeros_like(x_t)
        with torch.no_grad():
            out = self.network(with_estimate(x_t, zeros).contiguous(memory_format=self.memory_format), t, y)
            abar = gather(self.schedule.alphas_cumprod, t, x_t.ndim)  # (b, 1, 1, 1, 1)
            x0 = clean_from_output(out.float(), x_t, abar.sqrt(), (1 - abar).sqrt(), self.schedule.prediction)
        return with_estimate(x_t, torch.where(estimate[:, None, None, None, None], x0.clamp(-1, 1), zeros))

    def gradient_sync(self, last: bool):
        """DDP all-reduces the gradients after the last micro-batch only."""
        return self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `grad_accum` micro-batches; returns (loss, grad norm), 0-dim tensors
        on the device (reading them waits for it)."""
        tc = self.train_cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, tc.lr, tc.warmup_steps, tc.lr_schedule, tc.steps)
        waited = time.perf_counter()
        x0, y = self.batches.get(self.step)  # (b, C, T, H, W), (b,) or None
        self.data_seconds += time.perf_counter() - waited
        t, noise, perturbation, drop, estimate = self.draws(self.step, x0.shape)
        if y is not None:
            y = torch.where(drop, self.cfg.model.null_class, y)
        torch.manual_seed(step_seed(tc.seed, self.step, DROPOUT_STREAM, self.ranks.rank))
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        parts = micro_batches(tc.grad_accum, x0, t, noise, perturbation, y, estimate)
        for i, (xb, tb, nb, pb, yb, eb) in enumerate(parts):
            with self.gradient_sync(last=i == tc.grad_accum - 1):
                loss = self.loss_on(xb, tb, nb, pb, yb, eb) * (xb.shape[0] / x0.shape[0])
                loss.backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, tc.ema_decay, self.step)
        self.stats.add(self.step, total, grad_norm)
        self.step += 1
        return total, grad_norm

    # -- outputs (rank 0 writes them all) ---------------------------------------------------------
    def check_finite(self) -> None:
        """Wait for the device; raise TrainingDiverged if a step since the start had a non-finite loss
        or gradient (called before anything is saved, so the last checkpoint stays good)."""
        diverged = self.stats.divergence(self.ranks)
        if diverged:
            raise TrainingDiverged(f"{diverged}; stopped. The last good checkpoint is in {self.checkpoint_dir} "
                                   "(try a lower --lr)")

    def write_samples(self) -> Path | None:
        """Rank 0 samples videos from the EMA weights into OUT/samples/step_XXXXXX/; the others wait."""
        from vdm.runtime.generator import VideoGenerator
        from vdm.runtime.torch_backend import TorchBackend
        from vdm.video import write_videos

        folder = None
        if self.ranks.is_main:
            tc = self.train_cfg
            backend = TorchBackend(copy.deepcopy(self.ema), self.cfg.diffusion, self.device)
            label = 0 if self.cfg.model.conditional else None
            videos = VideoGenerator(backend=backend).generate(
                tc.num_samples, num_steps=min(tc.sample_steps or DEFAULT_STEPS, self.cfg.diffusion.num_timesteps),
                seed=tc.seed, class_label=label).cpu()
            folder = self.out / "samples" / f"step_{self.step:06d}"
            write_videos(folder, videos)  # a fresh folder per step
        barrier(self.ranks)
        return folder

    def log(self, metrics, bar: tqdm, rate: float) -> None:
        """One metrics.jsonl line (rank 0): means over the steps since the last line and every rank."""
        loss, grad_norm = self.stats.means(self.ranks)
        bar.set_postfix(loss=f"{loss:.4f}")
        if self.ranks.is_main:
            metrics.write(json.dumps({"step": self.step, "loss": loss, "grad_norm": grad_norm,
                                      "lr": self.optimizer.param_groups[0]["lr"], "steps_per_s": rate,
                                      "data_ms_per_step": 1e3 * self.data_seconds / max(1, self.stats.steps)}) + "\n")
            metrics.flush()
        self.stats.reset()
        self.data_seconds = 0.0

    def run(self, stop_at: int | None = None) -> None:
        """Train to `steps` (or only to step `stop_at` of that schedule, to continue later with --resume),
        logging, checkpointing and sampling on the way (files from rank 0 only)."""
        tc = self.train_cfg
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        if stop_at is not None and self.step >= end:
            raise VdmError(f"--stop-at {stop_at}: this run is already at step {self.step}")
        main = self.ranks.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json",
                              json.dumps({k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion", "train")},
                                         indent=2))
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True, disable=not main)
        start, start_step = time.perf_counter(), self.step
        with (open(self.out / "metrics.jsonl", "a") if main else contextlib.nullcontext()) as metrics:
            try:
                while self.step < end:
                    self.train_step()
                    bar.update(1)
                    last = self.step == end
                    log = self.step % tc.log_every == 0 or last
                    save = self.step % tc.checkpoint_every == 0 or last
                    sample = (tc.sample_every and self.step % tc.sample_every == 0) or last
                    if log or save or sample:
                        self.check_finite()
                    if log:
                        self.log(metrics, bar, (self.step - start_step) / (time.perf_counter() - start))
                    if save:
                        self.save()
                    if sample:
                        folder = self.write_samples()
                        if main:
                            bar.write(f"samples: {folder}")
            finally:
                bar.close()
                self.batches.close()


RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints")  # any of them: the folder holds a run


def claim_run_folder(out: Path, resume: bool, overwrite: bool, is_main: bool) -> Path | None:
    """A run folder belongs to one run. A new run refuses a folder that holds one, unless --overwrite,
    which moves the old run aside (rank 0 only); returns where it went. --resume continues the run there."""
    if resume and overwrite:
        raise VdmError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if resume or not any((out / name).exists() for name in RUN_FILES):
        return None
    if not overwrite:
        raise VdmError(f"{out} already holds a training run; continue it with --resume, start a new run with "
                       "another --out, or replace it with --overwrite (which moves the old run aside)")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    aside = out.with_name(f"{out.name}.replaced-{stamp}")
    if is_main:
        out.rename(aside)
    return aside


def build_preset(preset: str, config: str | None, overrides: dict) -> Preset:
    """The preset, overlaid by the config file, overlaid by the CLI flags that were given."""
    base = load_config_file(config, get_preset(preset)) if config else get_preset(preset)
    model_over = {k: v for k, v in overrides.items() if k in ("frames", "size") and v is not None}
    train_over = {k: v for k, v in overrides.items() if k not in ("frames", "size") and v is not None}
    try:
        return Preset(model=dataclasses.replace(base.model, **model_over), diffusion=base.diffusion,
                      train=dataclasses.replace(base.train, **train_over))
    except TypeError as e:
        raise VdmError(str(e)) from None


def parse_snr_range(ctx, param, value: str | None) -> tuple[float, float] | None:
    """'LOW:HIGH' as two floats ('inf' allowed for HIGH); a malformed value is a usage error (exit 2)."""
    if value is None:
        return None
    try:
        low, high = (float(part) for part in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected LOW:HIGH such as 1:inf, got {value!r}") from None
    if not 0 <= low < high:
        raise click.BadParameter(f"needs 0 <= LOW < HIGH, got {value!r}")
    return low, high


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", default="tiny", show_default=True, type=click.Choice(["tiny", "small", "base"]),
              help="Model size and training defaults.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML/JSON with [model], [diffusion], [train] tables.")
@click.option("--data", help="'synthetic' (bouncing shapes) or a folder of videos.  [default: synthetic]")
@click.option("--steps", type=int, help="Optimizer steps.")
@click.option("--batch-size", type=int, help="Clips per optimizer step.")
@click.option("--grad-accum", type=int, help="Micro-batches per step (same batch, less memory).")
@click.option("--frames", type=int, help="Clip length T.")
@click.option("--size", type=int, help="Frame size (H = W).")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--ema-decay", type=float, help="Decay of the EMA weights that checkpoints hold (0.999 averages ~1000 steps).")
@click.option("--lr-schedule", type=click.Choice(get_args(LrScheduleKind)),
              help="After warm-up: constant, or cosine decay to 0 at --steps.  [default: constant]")
@click.option("--min-snr-gamma", type=float, help="Min-SNR-gamma loss weighting (5 is the paper's).  [default: off]")
@click.option("--snr-range", callback=parse_snr_range, metavar="LOW:HIGH",
              help="Train only on timesteps whose SNR lies in [LOW, HIGH], e.g. 1:inf for a low-noise "
                   "expert (with --init-from).  [default: all]")
@click.option("--sample-every", type=int, help="Steps between sample videos.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.  [default: runs/PRESET]")
@click.option("--stop-at", type=int, metavar="STEP",
              help="Stop after this step (checkpointed), keeping the learning-rate schedule of --steps; "
                   "continue later with --resume.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/train_state.pt.")
@click.option("--overwrite", is_flag=True,
              help="Start a new run in an --out that holds one; the old run is moved to OUT.replaced-<time>.")
@click.option("--init-from", type=click.Path(dir_okay=False),
              help="Fine-tune: start from this checkpoint's weights (step 0, fresh optimizer); "
                   "with --resume the run's own state is used instead.")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu or cuda (under torchrun on CUDA, each process takes the GPU of its LOCAL_RANK).")
@click.option("--workers", type=int,
              help="Data loader processes per training process.  [default: 0 on cpu, 4 on cuda]")
@click.option("--compile", "compile_network", is_flag=True, default=None,
              help="torch.compile the network (the first steps compile).")
@click.option("--precision", type=click.Choice(get_args(PrecisionKind)),
              help="bf16 autocast (weights stay fp32) or fp32.  [default: auto: bf16 on CUDA and on CPUs "
                   "with AMX, else fp32]")
@click.option("--seed", type=int, help="Seeds weights, data and noise.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(preset, config, data, steps, batch_size, grad_accum, frames, size, lr, ema_decay, lr_schedule,
         min_snr_gamma, snr_range, sample_every,
         checkpoint_every, stop_at, out, resume, overwrite, init_from, device, workers, compile_network, precision,
         seed, debug):
    """Train a video diffusion model (3D UNet, DDPM) on synthetic bouncing shapes or a folder of videos.

    Several processes: torchrun --nproc_per_node N -m vdm.train [OPTIONS] (the batch is split over them).
    """
    from vdm.runtime.backend import resolve_device

    ranks = ranks_from_env()
    settings = build_preset(preset, config, dict(
        data=data, steps=steps, batch_size=batch_size, grad_accum=grad_accum, frames=frames, size=size,
        lr=lr, ema_decay=ema_decay, lr_schedule=lr_schedule, min_snr_gamma=min_snr_gamma,
        snr_range=snr_range, sample_every=sample_every, checkpoint_every=checkpoint_every, seed=seed,
        init_from=init_from, workers=workers, compile=compile_network, precision=precision))
    tc = settings.train
    if stop_at is not None and stop_at < 1:
        raise VdmError(f"--stop-at must be a step of at least 1, got {stop_at}")
    check_batch_split(tc, ranks)  # a flag mistake is refused before any process group starts
    schedule = Schedule.from_config(settings.diffusion)  # ... nor are settings that leave no timestep to draw
    timestep_probabilities(schedule, trained_timesteps(schedule, tc.snr_range), tc.log_snr_sampling)
    device = rank_device(resolve_device(device), ranks)
    say = click.echo if ranks.is_main else (lambda *_: None)
    out = Path(out or f"runs/{preset}")
    aside = claim_run_folder(out, resume, overwrite, ranks.is_main)
    if aside is not None:
        say(f"--overwrite: moved the earlier run in {out} to {aside}")
    start_processes(ranks, device)
    try:
        trainer = Trainer(settings, out, device, ranks)
        if resume:
            trainer.resume()
            say(f"resumed at step {trainer.step}")
        elif tc.init_from:
            fresh = trainer.init_from(tc.init_from)
            say(f"initialized from {tc.init_from}" + (f"; {len(fresh)} new tensors keep their init" if fresh else ""))
        m = settings.model
        say(f"model: {count_parameters(trainer.model) / 1e6:.2f} M parameters, "
            f"clips {m.frames}x{m.size}x{m.size}, data: {tc.data}, device: {trainer.device} ({trainer.precision})"
            + (f", {ranks.world_size} processes of {tc.batch_size // ranks.world_size} clips" if ranks.distributed else ""))
        trainer.run(stop_at)
        say(f"done: {trainer.checkpoint_dir / 'latest.safetensors'}"
            + (f" (stopped at step {trainer.step} of {tc.steps}; continue with --resume)"
               if trainer.step < tc.steps else ""))
        return trainer
    finally:
        stop_processes()


if __name__ == "__main__":
    main()

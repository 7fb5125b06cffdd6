"""Training: `vdm-train`. AdamW with warm-up, gradient clipping and accumulation, EMA weights,
bf16 autocast on CUDA, metrics.jsonl, sample videos, atomic checkpoints, and exact resume.

A run directory holds:
    config.json                        the model, diffusion and training configs
    metrics.jsonl                      one line per `log_every` steps
    checkpoints/latest.safetensors     EMA weights + configs: all that inference needs
    checkpoints/train_state.pt         raw weights, EMA, optimizer, RNG states: all that --resume needs
    samples/step_XXXXXX/               sample_XX.mp4 per video and grid.gif, from the EMA weights
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import click
import torch
from tqdm import tqdm

from vdm.atomic import atomic_write_text
from vdm.checkpoint import check_weights, load_torch, read_checkpoint, save_checkpoint, save_torch_atomic
from vdm.config import (DiffusionConfig, ModelConfig, Preset, from_dict, get_preset, load_config_file,
                        to_dict)
from vdm.data import ClipDataset, SyntheticShapes, make_dataset
from vdm.diffusion import Schedule, q_sample, training_loss
from vdm.errors import TrainingDiverged, VdmError, cli_errors
from vdm.unet import Unet3D, count_parameters

LABEL_DROPOUT = 0.1  # fraction of conditional examples trained as the null class (for guidance)


def lr_at(step: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up to the peak, then constant."""
    return peak * min(1.0, (step + 1) / max(1, warmup_steps))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- d ema + (1 - d) model, with d ramped up early so the EMA is not stuck at the init."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def labelled_batch(dataset: ClipDataset, step: int, batch_size: int,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's clips (B, C, T, H, W) and their labels (B,): the number of shapes minus one.

    Synthetic data only; each clip is rendered once, with its shapes.
    """
    if not isinstance(dataset, SyntheticShapes):
        raise VdmError("class-conditional training needs labels; only the synthetic data has them "
                       "(the label is the number of shapes - 1)")
    if dataset.max_shapes > num_classes:
        raise VdmError(f"num_classes={num_classes} is too few for clips of up to {dataset.max_shapes} shapes")
    first = step * batch_size
    clips, tracks = zip(*(dataset.clip_with_meta(first + i) for i in range(batch_size)))
    return torch.stack(clips), torch.tensor([len(t) - 1 for t in tracks])


class Trainer:
    def __init__(self, preset: Preset, out_dir: Path, device: torch.device):
        self.cfg = preset
        self.out = out_dir
        self.device = device
        self.train_cfg = preset.train
        self.schedule = Schedule.from_config(preset.diffusion)
        m = preset.model
        self.dataset = make_dataset(self.train_cfg.data, m.frames, m.size, self.train_cfg.frame_stride,
                                    self.train_cfg.seed)
        torch.manual_seed(self.train_cfg.seed)
        # Channels-last 3D convolutions train faster on CPU (oneDNN; tiny preset, batch 4, forward +
        # backward: 1.17 -> 0.94 s on 1 thread, 0.61 -> 0.55 s on 2; benchmarks/train_step.py).
        # CUDA keeps the default layout (unmeasured there).
        self.memory_format = torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format
        self.model = Unet3D(m).to(device, memory_format=self.memory_format)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.train_cfg.lr,
                                           weight_decay=self.train_cfg.weight_decay)
        # Timesteps, noise and label dropout come from this generator (CPU, so runs match across devices).
        self.generator = torch.Generator().manual_seed(self.train_cfg.seed)
        self.step = 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": {k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion")},
        }
        save_torch_atomic(state, self.checkpoint_dir / "train_state.pt")
        save_checkpoint(self.checkpoint_dir / "latest.safetensors", self.ema.state_dict(),
                        self.cfg.model, self.cfg.diffusion, self.step)

    def resume(self) -> None:
        path = self.checkpoint_dir / "train_state.pt"
        if not path.exists():
            raise VdmError(f"--resume: no training state at {path}; start without --resume")
        state = load_torch(path)
        saved = state.get("config", {})
        try:  # through the dataclasses, so fields added since (at their defaults) compare equal
            saved = {"model": to_dict(from_dict(ModelConfig, saved["model"])),
                     "diffusion": to_dict(from_dict(DiffusionConfig, saved["diffusion"]))}
        except (KeyError, TypeError, VdmError):
            pass  # an unreadable config differs from ours: refused below
        now = {k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion")}
        if json.loads(json.dumps(saved)) != json.loads(json.dumps(now)):
            raise VdmError(f"--resume: {path} was trained with a different model/diffusion config; "
                           "use the same --preset/--config, or a new --out")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]

    def init_from(self, path: str | Path) -> list[str]:
        """Load a checkpoint's weights into the model and its EMA; return the names it did not have.

        Those keep their initialization: a block added since that starts as the identity (the
        attention blocks' zero output projections) leaves the loaded model computing what it did.
        """
        state, model_config, diffusion_config, _ = read_checkpoint(path)
        if to_dict(diffusion_config) != to_dict(self.cfg.diffusion):
            raise VdmError(f"--init-from: {path} was trained with diffusion config {to_dict(diffusion_config)}, "
                           f"this run uses {to_dict(self.cfg.diffusion)}")
        source = f"--init-from {path} (its model config: {to_dict(model_config)})"
        missing = check_weights(state, self.model.state_dict(), source, allow_missing=True)
        self.model.load_state_dict(state, strict=False)
        self.ema.load_state_dict(self.model.state_dict())
        return missing

    # -- one optimizer step ----------------------------------------------------------------------
    def loss_on(self, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The diffusion loss of one micro-batch x0 (B, C, T, H, W)."""
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=self.generator)
        noise = torch.randn(x0.shape, generator=self.generator)
        if y is not None:
            drop = torch.rand(b, generator=self.generator) < LABEL_DROPOUT
            y = torch.where(drop, torch.full_like(y, self.cfg.model.num_classes), y).to(self.device)
        t, noise = t.to(self.device), noise.to(self.device)
        x_t = q_sample(x0, t, noise, self.schedule.alphas_cumprod).contiguous(memory_format=self.memory_format)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.model(x_t, t, y)
        return training_loss(out, x0, noise, t, self.schedule)

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over `grad_accum` micro-batches; returns (loss, grad norm)."""
        tc = self.train_cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, tc.lr, tc.warmup_steps)
        if self.cfg.model.conditional:
            x0, y = labelled_batch(self.dataset, self.step, tc.batch_size, self.cfg.model.num_classes)
        else:
            x0, y = self.dataset.batch(self.step, tc.batch_size), None
        x0 = x0.to(self.device)  # (B, C, T, H, W)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        micro_x = x0.chunk(tc.grad_accum)
        micro_y = y.chunk(tc.grad_accum) if y is not None else [None] * len(micro_x)
        for xb, yb in zip(micro_x, micro_y):
            loss = self.loss_on(xb, yb) * (xb.shape[0] / x0.shape[0])
            loss.backward()
            total += loss.item()
        if not math.isfinite(total):
            raise TrainingDiverged(f"loss became {total} at step {self.step}; stopped. The last good "
                                   f"checkpoint is in {self.checkpoint_dir} (try a lower --lr)")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip).item()
        self.optimizer.step()
        update_ema(self.ema, self.model, tc.ema_decay, self.step)
        self.step += 1
        return total, grad_norm

    # -- outputs -----------------------------------------------------------------------------------
    def write_samples(self) -> Path:
        from vdm.runtime.generator import VideoGenerator
        from vdm.runtime.torch_backend import TorchBackend
        from vdm.video import write_gif_grid, write_mp4

        tc = self.train_cfg
        backend = TorchBackend(copy.deepcopy(self.ema), self.cfg.diffusion, self.device)
        label = 0 if self.cfg.model.conditional else None
        videos = VideoGenerator(backend=backend).generate(
            tc.num_samples, num_steps=min(tc.sample_steps, self.cfg.diffusion.num_timesteps),
            seed=tc.seed, class_label=label).cpu()
        folder = self.out / "samples" / f"step_{self.step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, video in enumerate(videos):
            write_mp4(folder / f"sample_{i:02d}.mp4", video)
        write_gif_grid(folder / "grid.gif", videos)
        return folder

    def run(self) -> None:
        tc = self.train_cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json",
                          json.dumps({k: to_dict(getattr(self.cfg, k)) for k in ("model", "diffusion", "train")},
                                     indent=2))
        metrics_path = self.out / "metrics.jsonl"
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        start, start_step = time.perf_counter(), self.step
        with open(metrics_path, "a") as metrics:
            while self.step < tc.steps:
                loss, grad_norm = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    rate = (self.step - start_step) / (time.perf_counter() - start)
                    metrics.write(json.dumps({"step": self.step, "loss": loss, "grad_norm": grad_norm,
                                              "lr": self.optimizer.param_groups[0]["lr"],
                                              "steps_per_s": rate}) + "\n")
                    metrics.flush()
                if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                    self.save()
                if (tc.sample_every and self.step % tc.sample_every == 0) or self.step == tc.steps:
                    bar.write(f"samples: {self.write_samples()}")
        bar.close()


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
@click.option("--sample-every", type=int, help="Steps between sample videos.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.  [default: runs/PRESET]")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/train_state.pt.")
@click.option("--init-from", type=click.Path(dir_okay=False),
              help="Fine-tune: start from this checkpoint's weights (step 0, fresh optimizer); "
                   "with --resume the run's own state is used instead.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--seed", type=int, help="Seeds weights, data and noise.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@cli_errors
def main(preset, config, data, steps, batch_size, grad_accum, frames, size, lr, ema_decay, sample_every,
         checkpoint_every, out, resume, init_from, device, seed, debug):
    """Train a video diffusion model (3D UNet, DDPM) on synthetic bouncing shapes or a folder of videos."""
    from vdm.runtime.backend import resolve_device

    settings = build_preset(preset, config, dict(
        data=data, steps=steps, batch_size=batch_size, grad_accum=grad_accum, frames=frames, size=size,
        lr=lr, ema_decay=ema_decay, sample_every=sample_every, checkpoint_every=checkpoint_every, seed=seed,
        init_from=init_from))
    tc = settings.train
    trainer = Trainer(settings, Path(out or f"runs/{preset}"), resolve_device(device))
    if resume:
        trainer.resume()
        click.echo(f"resumed at step {trainer.step}")
    elif tc.init_from:
        fresh = trainer.init_from(tc.init_from)
        click.echo(f"initialized from {tc.init_from}" + (f"; {len(fresh)} new tensors keep their init" if fresh else ""))
    m = settings.model
    click.echo(f"model: {count_parameters(trainer.model) / 1e6:.2f} M parameters, "
               f"clips {m.frames}x{m.size}x{m.size}, data: {tc.data}, device: {trainer.device}")
    trainer.run()
    click.echo(f"done: {trainer.checkpoint_dir / 'latest.safetensors'}")


if __name__ == "__main__":
    main()

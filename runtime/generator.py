"""VideoGenerator: the Python API. Loads a checkpoint or bundle on a backend and generates videos."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from vdm.errors import VdmError
from vdm.runtime.backend import Backend, load_backend
from vdm.runtime.sampling import (SamplingPlan, ddim_invert, initial_noise, network_batch, sample, sample_plan,
                                  sampling_plan, slerp, step_generator)
from vdm.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, Restart


def per_video(class_label: int | Sequence[int] | None, num_samples: int) -> list[int]:
    """Each video's class label: one for all of them, or one each (a VdmError when the count is off)."""
    if class_label is None:
        return []
    if isinstance(class_label, int):
        return [class_label] * num_samples
    labels = [int(label) for label in class_label]
    if len(labels) != num_samples:
        raise VdmError(f"{len(labels)} class labels for {num_samples} videos: give one label, or one per video")
    return labels


class VideoGenerator:
    """Generate videos from a checkpoint (`.safetensors`) or an exported bundle directory.

        gen = VideoGenerator("runs/tiny/checkpoints/latest.safetensors", backend="torch")
        videos = gen.generate(4, num_steps=50, seed=0)  # (4, 3, T, H, W) in [-1, 1]
    """

    def __init__(self, model_path: str | Path | None = None, backend: str | Backend = "torch",
                 device: str | None = None, precision: str = "auto", **backend_options):
        """backend: a name in vdm.runtime.BACKENDS (its declared options go in backend_options) or a
        Backend; precision: fp32, bf16, fp16 or auto (runtime/precision.py decides)."""
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            if model_path is None:
                raise VdmError("VideoGenerator needs a model path (a checkpoint or a bundle directory)")
            self.backend = load_backend(backend, model_path, device, precision, **backend_options)
        self.device = self.backend.device

    @property
    def model_config(self):
        return self.backend.model_config

    def check_request(self, num_samples: int = 1, num_frames: int | None = None, height: int | None = None,
                      width: int | None = None, num_steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
                      guidance: float = 1.0, class_label: int | Sequence[int] | None = None,
                      spacing: str | None = None, eta: float = 0.0,
                      restarts: Sequence[Restart] = ()) -> tuple[tuple[int, ...], SamplingPlan]:
        """Check a generate() request before any work: the (N, C, T, H, W) shape to sample, and the plan."""
        cfg = self.model_config
        if num_samples < 1:
            raise VdmError("num_samples must be at least 1")
        plan = sampling_plan(self.backend, sampler, num_steps, spacing, eta, restarts)  # VdmError on bad name/steps/eta
        if not math.isfinite(guidance):
            raise VdmError(f"guidance must be a finite number, got {guidance}")
        if class_label is not None and not cfg.conditional:
            raise VdmError("this model is unconditional; it takes no class label")
        labels = per_video(class_label, num_samples)
        for label in labels:
            if not 0 <= label < cfg.num_classes:
                raise VdmError(f"class {label} out of range: this model has classes 0..{cfg.num_classes - 1}")
        if guidance != 1.0 and not cfg.conditional:
            raise VdmError("guidance needs a class-conditional model; this one is unconditional")
        if guidance != 1.0 and class_label is None:
            raise VdmError("guidance needs a class label (--class)")
        shape = (num_samples, cfg.in_channels, cfg.frames if num_frames is None else num_frames,
                 cfg.size if height is None else height, cfg.size if width is None else width)
        self.backend.check_shape(network_batch(num_samples, guidance), *shape[2:])
        return shape, plan

    def generate(self, num_samples: int = 1, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None, num_steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
                 seed: int | None = None, guidance: float = 1.0, class_label: int | Sequence[int] | None = None,
                 eta: float = 0.0,
                 spacing: str | None = None, restarts: Sequence[Restart] = (), on_step=None) -> torch.Tensor:
        """(num_samples, C, T, H, W) videos in [-1, 1]; shapes left as None are the model's training shape.

        sampler: ddim, ddpm, dpm++2m, dpm++2m-sde or unipc (vdm.samplers); spacing: linspace, leading, trailing, logsnr
        or karras (None: the sampler's own default); eta: DDIM's noise (0 = deterministic); restarts: passes
        that noise the finished videos again and finish them again (vdm.samplers.Restart), in order;
        class_label: a class-conditional model's label for every video, or one per video (None: the
        null class, its unconditional prediction).
        """
        shape, plan = self.check_request(num_samples, num_frames, height, width, num_steps, sampler, guidance,
                                         class_label, spacing, eta, restarts)
        y = None if class_label is None else torch.tensor(per_video(class_label, num_samples), dtype=torch.long,
                                                           device=self.device)
        noise = initial_noise(shape, seed, self.device, self.backend.diffusion_config.frame_noise_correlation)
        return sample_plan(self.backend, noise, plan, y, guidance, step_generator(seed, self.device), on_step)

    def invert(self, video: torch.Tensor, num_steps: int = 50) -> torch.Tensor:
        """DDIM inversion: clean videos (B, C, T, H, W) in [-1, 1] -> their x_T under DDIM with num_steps."""
        video = torch.as_tensor(video, dtype=torch.float32, device=self.device)
        if video.ndim == 4:
            video = video.unsqueeze(0)
        _, plan = self.check_request(video.shape[0], *video.shape[2:], num_steps=num_steps, sampler="ddim")
        return ddim_invert(self.backend, video, plan.sampler.timesteps)

    def interpolate(self, video1: torch.Tensor, video2: torch.Tensor, num_steps: int = 50,
                    num_interp_frames: int = 8, sampler: str = "ddim", decode_steps: int | None = None) -> torch.Tensor:
        """`num_interp_frames` videos (N, C, T, H, W) morphing from video1 to video2 (each (C, T, H, W)).

        Both are DDIM-inverted to noise with `num_steps` steps, the noises are spherically
        interpolated, and each is decoded with `sampler` in `decode_steps` (default: num_steps) steps.
        With ddim at the same step count, the end points reconstruct the inputs.
        """
        if num_interp_frames < 2:
            raise VdmError("num_interp_frames must be at least 2 (the two end points)")
        v1 = torch.as_tensor(video1, dtype=torch.float32, device=self.device)
        v2 = torch.as_tensor(video2, dtype=torch.float32, device=self.device)
        if v1.shape != v2.shape:
            raise VdmError(f"videos to interpolate must share a shape, got {tuple(v1.shape)} and {tuple(v2.shape)}")
        _, plan = self.check_request(num_interp_frames, *v1.shape[1:], num_steps=decode_steps or num_steps,
                                     sampler=sampler)
        z1, z2 = self.invert(torch.stack([v1, v2]), num_steps)
        weights = [i / (num_interp_frames - 1) for i in range(num_interp_frames)]
        noise = torch.stack([slerp(z1, z2, w) for w in weights])  # (N, C, T, H, W)
        return sample(self.backend, noise, plan.sampler)

"""Classifier-free guidance with its output rescaled (Lin et al. 2024, "Common Diffusion Noise Schedules
and Sample Steps are Flawed", section 3.4; diffusers' guidance_rescale): the guided prediction scaled to
the conditional one's standard deviation per video, mixed with the plain guided one by PHI. Videos as
interval.py draws them (UniPC 6 restarted once, fp32, the data's labels, batches of 32 from SEED).
    python benchmarks/results/demo-colors-finetune-cpu-2026-12-07/rescale.py CKPT N SEED SCALE:PHI..."""
import os
import sys

import torch

import vdm.runtime.sampling as sampling
from interval import scored_videos  # this folder's: python puts a script's folder on sys.path
from vdm.runtime.generator import VideoGenerator


def main(ckpt: str, n: int, seed: int, specs: list[str]) -> None:
    gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
    for spec in specs:
        scale, phi = map(float, spec.split(":"))

        def rescaled(backend, x, t, y, guidance):
            null = torch.full_like(y, backend.model_config.null_class)
            cond, uncond = backend.predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
            guided = uncond + guidance * (cond - uncond)
            dims = tuple(range(1, x.ndim))
            matched = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
            return phi * matched + (1 - phi) * guided

        sampling.guided_prediction = rescaled
        print(f"{ckpt} guidance {scale:g} rescaled by {phi:g}: {scored_videos(gen, n, seed, scale)}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])

"""Classifier-free guidance across two networks: MAIN's conditional prediction against GUIDE's null
class (both v-prediction on the same schedule), for MAIN's N one-shape videos drawn as extents.py draws
them, at each guidance SCALE; measured as extents.py measures. A measurement, not a vdm option.
    python benchmarks/results/demo-extents-cpu-2026-12-07/cross_guidance.py N SEED MAIN GUIDE SCALE..."""
import os
import sys

import torch

import vdm.runtime.sampling as sampling

sys.path.insert(0, os.path.dirname(__file__))
from extents import sampled_videos, scored  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402


def main(n: int, seed: int, main_ckpt: str, guide_ckpt: str, scales: list[float]) -> None:
    gen = VideoGenerator(main_ckpt, backend="torch", device="cpu", precision="fp32")
    guide = VideoGenerator(guide_ckpt, backend="torch", device="cpu", precision="fp32").backend

    def crossed(backend, x, t, y, guidance):  # replaces sampling.guided_prediction
        if y is None or guidance == 1.0:
            return backend.predict(x, t, y)
        cond = backend.predict(x, t, y)
        uncond = guide.predict(x, t, torch.full_like(y, guide.model_config.null_class))
        return uncond + guidance * (cond - uncond)

    sampling.guided_prediction = crossed
    for scale in scales:
        print(scored(f"{main_ckpt} guided {scale:g} against {guide_ckpt}'s null class",
                     sampled_videos(gen, n, seed, scale)), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], [float(s) for s in sys.argv[5:]])

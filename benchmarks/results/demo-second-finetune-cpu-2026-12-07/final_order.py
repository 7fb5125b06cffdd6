"""UniPC with first order on the step into the plan's last timestep (t = 0) as well, against today's
second order there: does the extrapolation into t = 0 (2.08 x0(106) - 1.08 x0(441) in the demo's restart
pass) draw the ragged edges? Videos as ../demo-colors-finetune-cpu-2026-12-07/interval.py draws them.
    python benchmarks/results/demo-second-finetune-cpu-2026-12-07/final_order.py CKPT N SEED"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demo-colors-finetune-cpu-2026-12-07"))
from interval import scored_videos  # noqa: E402
from vdm.runtime.generator import VideoGenerator  # noqa: E402
from vdm.samplers import UniPC  # noqa: E402


def first_order_into(last_steps: int):
    """UniPC.step with first order on the last `last_steps` steps (1 is today's)."""
    def step(self, i, x, x0, eps, generator):
        if i > 0:
            x = self.update(self.x_before, i - 1, self.last_order, x0)
        self.x0_history.append(x0)
        del self.x0_history[:-self.order]
        order = min(self.order, i + 1, max(1, len(self.timesteps) - i - (last_steps - 1)))
        self.x_before, self.last_order = x, order
        return self.update(x, i, order, None)
    return step


torch.set_num_threads(int(os.environ.get("THREADS", "2")))
ckpt, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
gen = VideoGenerator(ckpt, backend="torch", device="cpu", precision="fp32")
for last_steps in (1, 2):
    UniPC.step = first_order_into(last_steps)
    print(f"{ckpt}, first order on the last {last_steps} step(s): {scored_videos(gen, n, seed, 5.0)}", flush=True)

"""`python -m vdm.demo CHECKPOINT`: store a trained checkpoint as the bundled demo model (float16 weights).

The weights are stored in float16 to keep the package small; loading upcasts them to float32.
"""
from __future__ import annotations

import sys

import torch

from vdm.checkpoint import read_checkpoint, save_checkpoint
from vdm.demo import DEMO_CHECKPOINT


def pack(source: str) -> None:
    state, model_config, diffusion_config, metadata = read_checkpoint(source)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(DEMO_CHECKPOINT, half, model_config, diffusion_config, int(metadata.get("step", 0)))
    size_mb = DEMO_CHECKPOINT.stat().st_size / 1e6
    print(f"wrote {DEMO_CHECKPOINT} ({size_mb:.1f} MB, step {metadata.get('step')})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m vdm.demo CHECKPOINT")
    torch.set_grad_enabled(False)
    pack(sys.argv[1])

"""`python -m vdm.demo CHECKPOINT [DEST]`: store a trained checkpoint as the bundled demo model (float16 weights).

The weights are stored in float16 to keep the package small; loading upcasts them to float32. DEST
writes them there instead of over the bundled demo (benchmarks/demo_gpu/run.sh brings candidates back
this way).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from vdm.checkpoint import read_checkpoint, save_checkpoint
from vdm.demo import DEMO_CHECKPOINT
from vdm.errors import VdmError, cli_errors


def pack(source: str, dest: str | Path = DEMO_CHECKPOINT) -> None:
    state, model_config, diffusion_config, metadata = read_checkpoint(source)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(dest, half, model_config, diffusion_config, int(metadata.get("step", 0)))
    size_mb = Path(dest).stat().st_size / 1e6
    print(f"wrote {dest} ({size_mb:.1f} MB, step {metadata.get('step')})")


@cli_errors
def main(*args: str) -> None:
    if len(args) not in (1, 2):
        raise VdmError("usage: python -m vdm.demo CHECKPOINT [DEST]")
    torch.set_grad_enabled(False)
    pack(*args)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""A regression checkpoint as the start of a palette fine-tune: the same weights under a model config
with `palette` (the data's 7 colours) and a diffusion config predicting x0, without the output
convolution, whose shape changes (3 channels -> 7 logits) and which the fine-tune learns afresh.
    python benchmarks/results/demo-temporal-attention-cpu-2026-12-06/to_palette.py SRC DST"""
import dataclasses
import sys

from vdm.checkpoint import read_checkpoint, save_checkpoint
from vdm.data import BACKGROUND, PALETTE

state, model_config, diffusion_config, _ = read_checkpoint(sys.argv[1])
palette = tuple(tuple(int(c) for c in colour) for colour in (BACKGROUND, *PALETTE))
model_config = dataclasses.replace(model_config, palette=palette)
diffusion_config = dataclasses.replace(diffusion_config, prediction="x0")
kept = {name: tensor.float() for name, tensor in state.items() if not name.startswith("conv_out.")}
save_checkpoint(sys.argv[2], kept, model_config, diffusion_config)
print(f"{sys.argv[2]}: {len(kept)} of {len(state)} tensors, palette {palette}")

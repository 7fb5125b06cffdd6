"""A weighted sum of checkpoints of one architecture, stored in float16 as the demo is:
  an average of fine-tunes from the same start (a model soup): A:0.5 B:0.5;
  a fine-tune's step taken further (ExPO, Zheng et al.): BASE:-1 TUNED:2 is BASE + 2 x (TUNED - BASE).
The configs and step are the first checkpoint's.
usage: python mix.py OUT CHECKPOINT:WEIGHT..."""
import sys

import torch

from vdm.checkpoint import read_checkpoint, save_checkpoint

out, parts = sys.argv[1], [arg.rsplit(":", 1) for arg in sys.argv[2:]]
mixed, configs = {}, None
for path, weight in parts:
    state, model_config, diffusion_config, metadata = read_checkpoint(path)
    configs = configs or (model_config, diffusion_config, int(metadata["step"]))
    for name, tensor in state.items():
        mixed[name] = mixed.get(name, 0) + float(weight) * tensor.double()
save_checkpoint(out, {name: tensor.half() for name, tensor in mixed.items()}, *configs)
print(f"{out} = " + " + ".join(f"{weight} x {path}" for path, weight in parts))

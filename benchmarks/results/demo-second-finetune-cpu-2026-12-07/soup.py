"""Average the weights of checkpoints of one architecture (a "model soup", Wortsman et al. 2022):
fine-tunes from one start often sit in one basin, where their mean is as good as the best or better.
    python benchmarks/results/demo-second-finetune-cpu-2026-12-07/soup.py OUT CKPT CKPT..."""
import sys

import torch

from vdm.checkpoint import read_checkpoint, save_checkpoint

out, sources = sys.argv[1], sys.argv[2:]
states = [read_checkpoint(path) for path in sources]
state, model_config, diffusion_config, metadata = states[0]
mean = {k: torch.stack([s[0][k].float() for s in states]).mean(0) if v.is_floating_point() else v
        for k, v in state.items()}
save_checkpoint(out, mean, model_config, diffusion_config, int(metadata.get("step", 0)))
print(f"wrote {out}: the mean of {', '.join(sources)}")

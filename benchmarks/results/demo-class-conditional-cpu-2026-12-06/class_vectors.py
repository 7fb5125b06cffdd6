"""How far a class-conditional run's class vectors grew: the mean norm of its class vectors (the null
class's apart) against the norm of its timestep embedding at a few timesteps, which they are added to.
    python benchmarks/results/demo-class-conditional-cpu-2026-12-06/class_vectors.py CKPT..."""
import sys

import torch

from vdm.checkpoint import load_model, read_checkpoint
from vdm.unet import sinusoidal_embedding

for path in sys.argv[1:]:
    model, _, _ = load_model(path)
    step = read_checkpoint(path)[3].get("step")
    classes = model.embedding.class_embed.weight.detach()  # (num_classes + 1, emb_dim); the null class last
    with torch.no_grad():
        t = torch.tensor([100, 500, 900, 999])
        time_norms = model.embedding.time_mlp(sinusoidal_embedding(t, model.embedding.base_channels)).norm(dim=1)
    print(f"{path} (step {step}): class vectors {classes[:-1].norm(dim=1).mean():.3f}, null class "
          f"{classes[-1].norm():.3f}; timestep embedding at t = {t.tolist()}: "
          + ", ".join(f"{n:.2f}" for n in time_norms.tolist()))

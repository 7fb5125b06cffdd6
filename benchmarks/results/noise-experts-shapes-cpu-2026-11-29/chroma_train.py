"""Scratch: vdm-train with the loss's chroma part (error minus its mean over RGB) weighted 1 + CHROMA
(env), the luminance part 1. Same flags as vdm-train."""
import os, sys, torch
import vdm.train, vdm.diffusion as D
CHROMA = float(os.environ.get("CHROMA", "2"))
def training_loss(model_output, x0, noise, t, schedule, min_snr_gamma=None):
    abar = D.gather(schedule.alphas_cumprod, t, x0.ndim)
    target = D.v_target(x0, noise, abar)
    e = model_output.float() - target  # (B, C, T, H, W)
    chroma = e - e.mean(dim=1, keepdim=True)
    return torch.mean(e ** 2) + CHROMA * torch.mean(chroma ** 2)
vdm.train.training_loss = training_loss
vdm.train.main()

"""Scratch: a palette UNet whose logits also get a direct, timestep-dependent linear read of the noisy
pixel itself: logits += W(t) x_t + b(t), W (K, 3) and b (K,) from the time embedding by a
zero-initialised linear layer. The exact per-pixel evidence log p(x_t | colour k) has this form,
(a/b^2) <c_k, x_t> - a^2 |c_k|^2 / (2 b^2), so it plays the part of v-prediction's skip from x_t.
usage: python skip.py train|eval ARGS...   (vdm-train or vdm-eval's arguments)"""
import sys
import torch
import torch.nn as nn
import vdm.unet


class SkipUnet(vdm.unet.Unet3D):
    def __init__(self, cfg):
        super().__init__(cfg)
        k, c = len(cfg.palette), cfg.in_channels
        self.palette_skip = nn.Linear(4 * cfg.base_channels, k * (c + 1))
        nn.init.zeros_(self.palette_skip.weight)
        nn.init.zeros_(self.palette_skip.bias)

    def forward(self, x, t, y=None, logits=False):
        out = super().forward(x, t, y, logits=True)  # (B, K, T, H, W)
        if self.cfg.conditional and y is None:
            y = torch.full_like(t, self.cfg.null_class, dtype=torch.long)
        c = self.cfg.in_channels
        coeffs = self.palette_skip(self.embedding(t, y)).float().reshape(x.shape[0], -1, c + 1)  # (B, K, C+1)
        out = out + torch.einsum("bkc,bcthw->bkthw", coeffs[..., :c], x[:, :c].float()) + coeffs[..., c, None, None, None]
        return out if logits else self.palette_mix(out)


vdm.unet.Unet3D = SkipUnet
command = sys.argv.pop(1)
sys.argv[0] = f"vdm-{command}"
if command == "train":
    from vdm.train import main
else:
    from vdm.cli.eval import main
main()

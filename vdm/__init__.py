"""vdm: video diffusion models (DDPM/DDIM with a 3D UNet), from training to fast inference."""

__version__ = "0.1.0"

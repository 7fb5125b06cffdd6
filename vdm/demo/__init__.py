"""The bundled demo model: a tiny UNet trained on the synthetic bouncing shapes (see TRAINING.md here)."""
from __future__ import annotations

import os
from pathlib import Path

from vdm.errors import VdmError

DEMO_CHECKPOINT = Path(__file__).with_name("demo.safetensors")
# The demo samples autoguided (vdm.runtime.autoguidance) by a smaller, briefly trained model of its
# recipe, at the weight that passed the most videos (TRAINING.md, "Autoguidance").
DEMO_GUIDE = Path(__file__).with_name("guide.safetensors")
DEMO_GUIDE_WEIGHT = 1.5
# Its videos are restarted once (vdm.samplers.Restart) from SNR 0.01, where their colours are chosen:
# the pass that kept the most shapes' colours (TRAINING.md, "Restart sampling").
DEMO_RESTARTS = "0.01:6"


def cache_dir() -> Path:
    """Where derived artifacts (the demo's ONNX bundle) are cached: $VDM_CACHE or ~/.cache/vdm."""
    return Path(os.environ.get("VDM_CACHE", Path.home() / ".cache" / "vdm"))


def demo_model_path(backend: str = "torch", guide: bool = False) -> Path:
    """The demo checkpoint (or with `guide`, its guide's), or for ONNX-based backends its bundle,
    exported on first use and cached."""
    checkpoint = DEMO_GUIDE if guide else DEMO_CHECKPOINT
    if not checkpoint.is_file():
        raise VdmError(f"the demo model {checkpoint} is missing from this install; pass a MODEL path")
    from vdm.runtime.backend import backend_class

    if backend_class(backend).source == "checkpoint":
        return checkpoint
    from vdm.export.pipeline import cached_bundle

    return cached_bundle(checkpoint, cache_dir() / ("demo-guide-bundle" if guide else "demo-bundle"))

"""The bundled demo model: a tiny UNet trained on the synthetic bouncing shapes (see TRAINING.md here)."""
from __future__ import annotations

import os
from pathlib import Path

from vdm.errors import VdmError

DEMO_CHECKPOINT = Path(__file__).with_name("demo.safetensors")
# Its videos are restarted once (vdm.samplers.Restart) from SNR 0.01, where their colours are chosen:
# the pass that kept the most shapes' colours (TRAINING.md, "Restart sampling").
DEMO_RESTARTS = "0.01:6"
# It is class-conditional on each colour's shape in a clip (demo.toml); each video gets the label of
# a synthetic clip (vdm.data.data_labels) and is sampled with classifier-free guidance at this scale,
# which passed the most videos of the colour-conditional demo before it (TRAINING.md).
DEMO_GUIDANCE = 5.0


def cache_dir() -> Path:
    """Where derived artifacts (the demo's ONNX bundle) are cached: $VDM_CACHE or ~/.cache/vdm."""
    return Path(os.environ.get("VDM_CACHE", Path.home() / ".cache" / "vdm"))


def demo_model_path(backend: str = "torch") -> Path:
    """The demo checkpoint, or for ONNX-based backends its bundle, exported on first use and cached."""
    if not DEMO_CHECKPOINT.is_file():
        raise VdmError(f"the demo model {DEMO_CHECKPOINT} is missing from this install; pass a MODEL path")
    from vdm.runtime.backend import backend_class

    if backend_class(backend).source == "checkpoint":
        return DEMO_CHECKPOINT
    from vdm.export.pipeline import cached_bundle

    return cached_bundle(DEMO_CHECKPOINT, cache_dir() / "demo-bundle")

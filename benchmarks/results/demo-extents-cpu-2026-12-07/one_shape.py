"""vdm-train on one-shape clips only (SyntheticShapes with min_shapes = max_shapes = 1), every other
setting as its command line says: can the demo's network learn to draw a single shape that passes?
A measurement, not a vdm option.
    python benchmarks/results/demo-extents-cpu-2026-12-07/one_shape.py VDM-TRAIN-OPTIONS..."""
import vdm.train
from vdm.data import SyntheticShapes


def one_shape_clips(data: str, frames: int, size: int, frame_stride: int = 1, seed: int = 0) -> SyntheticShapes:
    if data != "synthetic":
        raise SystemExit("one_shape.py trains on the synthetic data only")
    return SyntheticShapes(frames, size, seed=seed, min_shapes=1, max_shapes=1)


vdm.train.make_dataset = one_shape_clips
vdm.train.main()

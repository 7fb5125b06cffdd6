"""vdm-train with extra one-shape clips for the conditional labels only: each clip is, with probability
EXTRA (default 0.5), a one-shape clip instead of one of the data's mix (1-3 shapes), and only the
data's-mix clips are trained as the null class (at LABEL_DROPOUT / (1 - EXTRA), so the null class keeps
its 10 % of each batch and the data's mix). Every other setting as the command line says.
On the CPU (elsewhere the trainer draws clips from their shapes, without these labels).
A measurement, not a vdm option.
    EXTRA=0.5 python benchmarks/results/demo-second-finetune-cpu-2026-12-07/one_shape_mix.py VDM-TRAIN-OPTIONS..."""
import os

import numpy as np

import vdm.batches
import vdm.train
from vdm.data import SyntheticShapes

EXTRA = float(os.environ.get("EXTRA", "0.5"))
NULL_SHARE_OF_MIX = vdm.train.LABEL_DROPOUT / (1 - EXTRA)
ONE_SHAPE_SEED_OFFSET = 1_000_003  # the extra clips are their own stream, not copies of the mix's
NULL_CLASS = 63  # the "colors" model's null class (ModelConfig.null_class = num_classes)


class OneShapeHeavy(SyntheticShapes):
    """The synthetic data with clip `index` replaced, with probability EXTRA, by a one-shape clip."""

    def __init__(self, frames: int, size: int, seed: int = 0):
        super().__init__(frames, size, seed=seed)
        self.single = SyntheticShapes(frames, size, seed=seed + ONE_SHAPE_SEED_OFFSET, min_shapes=1, max_shapes=1)

    def is_extra(self, index: int) -> bool:
        return np.random.default_rng([self.seed, index, 1]).random() < EXTRA

    def tracks(self, index: int):
        return self.single.tracks(index) if self.is_extra(index) else super().tracks(index)


class MixNullLabels(vdm.batches.LabelledClips):
    """(clip, label): the null class for NULL_SHARE_OF_MIX of the data's-mix clips, never for extra ones."""

    def __getitem__(self, index: int):
        clip, label = super().__getitem__(index)
        null = (not self.shapes.is_extra(index)
                and np.random.default_rng([self.shapes.seed, index, 2]).random() < NULL_SHARE_OF_MIX)
        return clip, (NULL_CLASS if null else label)


def one_shape_heavy(data: str, frames: int, size: int, frame_stride: int = 1, seed: int = 0) -> OneShapeHeavy:
    if data != "synthetic":
        raise SystemExit("one_shape_mix.py trains on the synthetic data only")
    return OneShapeHeavy(frames, size, seed=seed)


vdm.train.make_dataset = one_shape_heavy
vdm.train.LABEL_DROPOUT = 0.0  # the labels above carry the null class instead
vdm.batches.LabelledClips = MixNullLabels
vdm.train.main()

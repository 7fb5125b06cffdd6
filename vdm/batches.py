"""What a training step trains on: this rank's share of the step's clips (and labels), on the training device.

Step s trains on the dataset's clips s*B ... s*B + B - 1, B being the global batch, whatever the
number of processes: rank r of N takes the r-th of N equal slices. A step's batch is a pure function
of (seed, step), so a resumed run, or one with another number of processes, sees the same clips.

The items come from a `torch.utils.data.DataLoader` whose worker processes (`--workers`) prepare
the next steps while this one trains:
- folder data: the decoded clips, in pinned memory on CUDA, copied to the device without waiting;
- synthetic data off the CPU: only each clip's shapes (a few numbers); torch draws the pixels on the
  device, batched (`vdm.data.render_scenes`), bit-identical to the numpy reference renderer;
- synthetic data on the CPU: the clips from the numpy reference renderer, faster there than the
  batched torch renderer (tiny preset, 4 clips of 8x32x32: 1.1-1.6 ms against 1.5-3.1 ms on the
  AVX-512 Xeon of benchmarks/results/train-step-cpu-2026-11-28, whose rows print both).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from vdm.data import (ClipDataset, Scenes, SyntheticShapes, clip_label, label_classes, render_scenes,
                      scene_arrays, scene_labels, stack_scenes)
from vdm.distributed import Ranks
from vdm.errors import VdmError

PREFETCH_STEPS = 2  # steps each worker prepares ahead


def local_batch_size(global_batch: int, ranks: Ranks) -> int:
    """Clips per step on one rank; the global batch must split evenly."""
    if global_batch % ranks.world_size:
        raise VdmError(f"batch_size {global_batch} does not split over {ranks.world_size} processes; "
                       f"use a multiple of {ranks.world_size}")
    return global_batch // ranks.world_size


def step_indices(step: int, global_batch: int, ranks: Ranks) -> list[int]:
    """The dataset indices of this rank's clips at `step`."""
    local = local_batch_size(global_batch, ranks)
    first = step * global_batch + ranks.rank * local
    return list(range(first, first + local))


def draws_on_device(device: torch.device) -> bool:
    """Whether synthetic clips are drawn by torch on `device` (else by numpy on the host; measured above)."""
    return device.type != "cpu"


class StepIndices:
    """A DataLoader batch sampler: this rank's indices for step `start`, `start + 1`, ... without end."""

    def __init__(self, start: int, global_batch: int, ranks: Ranks):
        self.start, self.global_batch, self.ranks = start, global_batch, ranks

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield step_indices(step, self.global_batch, self.ranks)
            step += 1


class LabelledClips(Dataset):
    """Synthetic clips with their labels: (clip (3, T, H, W), `vdm.data.clip_label` of `kind`)."""

    def __init__(self, shapes: SyntheticShapes, kind: str):
        self.shapes, self.kind = shapes, kind

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip, tracks = self.shapes.clip_with_meta(index)
        return clip, clip_label(tracks, self.kind)


class ShapeScenes(Dataset):
    """The shapes of each synthetic clip, as one row of `vdm.data.Scenes` (drawn later, on the device)."""

    def __init__(self, shapes: SyntheticShapes):
        self.shapes = shapes

    def __getitem__(self, index: int) -> dict:
        return scene_arrays(self.shapes.tracks(index), self.shapes.max_shapes, self.shapes.frames)


def check_labels(dataset: ClipDataset, num_classes: int, kind: str = "count") -> None:
    """Class-conditional training needs a label per clip: only the synthetic data has them."""
    if not isinstance(dataset, SyntheticShapes):
        raise VdmError("class-conditional training needs labels; only the synthetic data has them "
                       "(the label is the number of shapes - 1, or their colours)")
    needed = label_classes(kind, dataset.max_shapes)
    if needed > num_classes:
        raise VdmError(f"num_classes={num_classes} is too few for {kind!r} labels of clips of up to "
                       f"{dataset.max_shapes} shapes: they need {needed}")


class StepBatches:
    """This rank's clips (b, C, T, H, W) and labels (b,) or None for any step, on `device`.

    Reading the steps in order streams them from the workers; asking for another step (a resume)
    starts the stream over from there.
    """

    def __init__(self, dataset: ClipDataset, global_batch: int, ranks: Ranks, device: torch.device,
                 workers: int, num_classes: int = 0, class_label: str = "count"):
        if num_classes:
            check_labels(dataset, num_classes, class_label)
        local_batch_size(global_batch, ranks)  # refuse an uneven split before any work
        self.dataset, self.global_batch, self.ranks = dataset, global_batch, ranks
        self.device, self.workers, self.labelled = device, workers, num_classes > 0
        self.class_label = class_label
        self.scenes = isinstance(dataset, SyntheticShapes) and draws_on_device(device)
        self._stream: Iterator | None = None
        self._next_step: int | None = None

    def _items(self) -> tuple[Dataset, object]:
        """The per-index dataset the workers read, and how a step's items are stacked."""
        if self.scenes:
            return ShapeScenes(self.dataset), stack_scenes
        elif self.labelled:
            return LabelledClips(self.dataset, self.class_label), default_collate
        else:
            return self.dataset, default_collate

    def _loader(self, start: int) -> DataLoader:
        items, collate = self._items()
        return DataLoader(items, batch_sampler=StepIndices(start, self.global_batch, self.ranks),
                          num_workers=self.workers, collate_fn=collate, pin_memory=self.device.type == "cuda",
                          prefetch_factor=PREFETCH_STEPS if self.workers else None,
                          generator=torch.Generator())  # not the global RNG: nothing here is random

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(clips (b, C, T, H, W), labels (b,) int64 or None) of `step` on the device."""
        if step != self._next_step:
            self.close()
            self._stream = iter(self._loader(step))
        item = next(self._stream)
        self._next_step = step + 1
        return self._on_device(item)

    def _on_device(self, item) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(item, Scenes):
            scenes = item.to(self.device, non_blocking=True)
            clips = render_scenes(scenes, self.dataset.height, self.dataset.width)  # (b, 3, T, H, W)
            return clips, (scene_labels(scenes, self.class_label) if self.labelled else None)
        elif self.labelled:
            clips, labels = item
            return clips.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        else:
            return item.to(self.device, non_blocking=True), None

    def close(self) -> None:
        """Stop the workers (they would otherwise run until the process ends)."""
        self._stream, self._next_step = None, None

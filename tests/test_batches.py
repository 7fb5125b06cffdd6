"""Specification of vdm.batches: which clips each rank trains on at each step, through the DataLoader."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vdm.batches
from vdm.batches import StepBatches, local_batch_size, step_indices
from vdm.data import (PALETTE, SyntheticShapes, VideoFolder, clip_label, colors_of_shapes_label, label_classes,
                      label_features)
from vdm.distributed import Ranks
from vdm.errors import VdmError
from vdm.video import write_mp4

CPU = torch.device("cpu")
ONE, RANK0_OF_2, RANK1_OF_2 = Ranks(), Ranks(0, 0, 2), Ranks(1, 1, 2)


def test_the_ranks_slices_tile_the_steps_global_batch_in_rank_order():
    assert step_indices(3, 4, ONE) == [12, 13, 14, 15]
    assert step_indices(3, 4, RANK0_OF_2) + step_indices(3, 4, RANK1_OF_2) == [12, 13, 14, 15]


def test_a_batch_that_does_not_split_over_the_processes_is_refused():
    with pytest.raises(VdmError, match="batch_size 3 does not split over 2 processes"):
        local_batch_size(3, RANK0_OF_2)


# ---------------------------------------------------------------------------------------------
# Synthetic data: the numpy reference on the CPU, and the device renderer (forced here on the CPU)


@pytest.fixture(params=["numpy", "torch"])
def draw(request, monkeypatch) -> str:
    """Both ways of drawing synthetic clips; 'torch' is what a GPU uses, run on the CPU."""
    monkeypatch.setattr(vdm.batches, "draws_on_device", lambda device: request.param == "torch")
    return request.param


def test_synthetic_batches_are_the_datasets_clips_of_the_step(draw):
    shapes = SyntheticShapes(4, 8, seed=2)
    batches = StepBatches(shapes, 4, ONE, CPU, workers=0)
    for step in range(3):
        clips, labels = batches.get(step)
        assert torch.equal(clips, shapes.batch(step, 4)) and labels is None


def test_each_rank_gets_its_slice_of_the_global_batch(draw):
    shapes = SyntheticShapes(4, 8)
    halves = [StepBatches(shapes, 4, ranks, CPU, workers=0).get(5)[0] for ranks in (RANK0_OF_2, RANK1_OF_2)]
    assert torch.equal(torch.cat(halves), shapes.batch(5, 4))


def test_labels_are_the_number_of_shapes_minus_one(draw):
    shapes = SyntheticShapes(4, 8)
    _, labels = StepBatches(shapes, 6, ONE, CPU, workers=0, num_classes=3).get(1)
    assert labels.tolist() == [len(shapes.tracks(i)) - 1 for i in range(6, 12)]


def test_colors_labels_are_the_bitmask_of_the_clips_palette_colours_minus_one(draw):
    shapes = SyntheticShapes(4, 8)
    _, labels = StepBatches(shapes, 6, ONE, CPU, workers=0, num_classes=63, class_label="colors").get(1)
    expected = [sum(2 ** PALETTE.index(track.color) for track in shapes.tracks(i)) - 1 for i in range(6, 12)]
    assert labels.tolist() == expected and len(set(expected)) > 1


def test_shapes_labels_give_each_palette_colour_a_base_3_digit_for_its_shape(draw):
    shapes = SyntheticShapes(4, 8)
    _, labels = StepBatches(shapes, 6, ONE, CPU, workers=0, num_classes=728, class_label="shapes").get(1)
    digit = {"square": 1, "disc": 2}
    expected = [sum(digit[track.kind] * 3 ** PALETTE.index(track.color) for track in shapes.tracks(i)) - 1
                for i in range(6, 12)]
    assert labels.tolist() == expected and len(set(expected)) > 1
    colors = [sum(2 ** PALETTE.index(track.color) for track in shapes.tracks(i)) - 1 for i in range(6, 12)]
    assert [colors_of_shapes_label(label) for label in expected] == colors


@pytest.mark.parametrize("kind", ["colors", "shapes"])
def test_label_features_mark_exactly_the_clips_colours_and_shapes(kind):
    shapes = SyntheticShapes(4, 8)
    features = label_features(kind)  # (classes + 1, F)
    per_colour = {"colors": 1, "shapes": 2}[kind]
    for i in range(40):
        tracks = shapes.tracks(i)
        expected = {PALETTE.index(t.color) * per_colour + (t.kind == "disc" if kind == "shapes" else 0)
                    for t in tracks}
        assert set(np.flatnonzero(features[clip_label(tracks, kind)])) == expected
    assert np.flatnonzero(features[-1]).tolist() == [features.shape[1] - 1]  # the null class: its own only
    assert features[:-1, -1].sum() == 0 and len(features) == label_classes(kind, 0) + 1


def test_counted_label_features_add_one_feature_for_the_clips_number_of_shapes():
    shapes = SyntheticShapes(4, 8)
    plain, counted = label_features("shapes"), label_features("shapes", counts=True)  # (729, 13), (729, 19)
    assert counted.shape == (len(plain), plain.shape[1] + len(PALETTE))
    np.testing.assert_array_equal(counted[:, :12], plain[:, :12])
    np.testing.assert_array_equal(counted[:, -1], plain[:, -1])
    seen = set()
    for i in range(40):
        tracks = shapes.tracks(i)
        count_features = np.flatnonzero(counted[clip_label(tracks, "shapes"), 12:-1])
        assert count_features.tolist() == [len(tracks) - 1]
        seen.add(len(tracks))
    assert seen == {1, 2, 3} and counted[-1, 12:-1].sum() == 0  # the null class names no count


def test_asking_for_another_step_restarts_the_stream_there():
    shapes = SyntheticShapes(4, 8)
    batches = StepBatches(shapes, 2, ONE, CPU, workers=0)
    batches.get(0), batches.get(1)
    assert torch.equal(batches.get(7)[0], shapes.batch(7, 2))
    assert torch.equal(batches.get(0)[0], shapes.batch(0, 2))


def test_labels_need_synthetic_data(tmp_path):
    write_mp4(tmp_path / "a.mp4", SyntheticShapes(8, 16).clip(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = VideoFolder(tmp_path, 4, 16)
    with pytest.raises(VdmError, match="only the synthetic data has them"):
        StepBatches(folder, 2, ONE, CPU, workers=0, num_classes=3)


def test_labels_need_a_class_per_possible_shape_count():
    with pytest.raises(VdmError, match="num_classes=2 is too few"):
        StepBatches(SyntheticShapes(4, 8), 2, ONE, CPU, workers=0, num_classes=2)


def test_colors_labels_need_a_class_per_colour_set():
    with pytest.raises(VdmError, match="num_classes=3 is too few for 'colors' labels.*they need 63"):
        StepBatches(SyntheticShapes(4, 8), 2, ONE, CPU, workers=0, num_classes=3, class_label="colors")


# ---------------------------------------------------------------------------------------------
# Folder data through worker processes


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    shapes = SyntheticShapes(10, 16)
    for i in range(3):
        write_mp4(root / f"clip{i}.mp4", shapes.clip(i))
    return root


def test_worker_processes_give_the_clips_the_main_process_gives(videos):
    folder = VideoFolder(videos, 4, 16, frame_stride=2, seed=1)
    batches = StepBatches(folder, 2, ONE, CPU, workers=2)
    try:
        for step in (0, 1, 2):
            assert torch.equal(batches.get(step)[0], folder.batch(step, 2))
        assert torch.equal(batches.get(9)[0], folder.batch(9, 2))  # a resume: the stream starts over
    finally:
        batches.close()

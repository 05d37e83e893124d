"""Labeled frames: reading CollectedData.csv, clear errors, the split, augmentation."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from lpray.data.augment_spec import AugmentSpec
from lpray.data.labeled import (
    LabeledDataset,
    LabelError,
    context_paths,
    read_labeled_frames,
    split_frames,
)
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats
from lpray.io.tables import arrays_to_table, write_pose_csv


def make_project(root, n=6, size=(60, 80), nan_everywhere=False, dot=True):
    """Greyscale frames with a bright dot at each frame's single 'nose' keypoint."""
    rng = np.random.default_rng(0)
    (root / "labeled-data").mkdir(parents=True)
    xy = np.stack([rng.uniform(15, size[1] - 15, n), rng.uniform(15, size[0] - 15, n)], axis=1)
    paths = []
    for i, (x, y) in enumerate(xy):
        image = np.zeros(size, np.uint8)
        if dot:
            yy, xx = np.mgrid[: size[0], : size[1]]
            image[((xx - x) ** 2 + (yy - y) ** 2) <= 2.0] = 255
        path = f"labeled-data/img{i:03d}.png"
        Image.fromarray(image, mode="L").save(root / path)
        paths.append(path)
    keypoints = np.stack([xy, xy + 5], axis=1)
    if nan_everywhere:
        keypoints[:, 1] = np.nan
    write_pose_csv(
        arrays_to_table(keypoints, ["nose", "tail"], index=paths), root / "CollectedData.csv"
    )
    return xy


def test_reads_labels_and_images(tmp_path):
    xy = make_project(tmp_path)
    frames = read_labeled_frames(tmp_path)
    assert frames.keypoint_names == ["nose", "tail"]
    np.testing.assert_allclose(frames.keypoints[:, 0], xy)
    item = LabeledDataset(frames, (64, 64))[0]
    assert item["image"].shape == (1, 3, 64, 64)  # greyscale -> 3 channels
    mean, std = imagenet_stats(torch.device("cpu"), torch.float32)
    channels = item["image"][0] * std + mean
    torch.testing.assert_close(channels[0], channels[2])


def test_missing_image_is_named(tmp_path):
    make_project(tmp_path)
    (tmp_path / "labeled-data" / "img003.png").unlink()
    with pytest.raises(
        LabelError, match=r"CollectedData\.csv: 1 labeled image\(s\) not found.*img003"
    ):
        read_labeled_frames(tmp_path)


def test_keypoint_missing_everywhere_is_named(tmp_path):
    make_project(tmp_path, nan_everywhere=True)
    with pytest.raises(LabelError, match=r"keypoint\(s\) \['tail'\] missing in every frame"):
        read_labeled_frames(tmp_path)
    frames = read_labeled_frames(tmp_path, keypoints=["nose"])  # leaving it out works
    assert frames.keypoint_names == ["nose"]


def test_unknown_keypoint_and_bad_header(tmp_path):
    make_project(tmp_path)
    with pytest.raises(LabelError, match=r"unknown keypoints \['ear'\]"):
        read_labeled_frames(tmp_path, keypoints=["ear"])
    (tmp_path / "CollectedData.csv").write_text("just,a\nplain,csv\n")
    with pytest.raises(LabelError, match="CollectedData.csv"):
        read_labeled_frames(tmp_path)


def test_split_is_seeded_disjoint_and_train_frames_nest(tmp_path):
    make_project(tmp_path, n=40, dot=False)
    frames = read_labeled_frames(tmp_path)
    split = split_frames(frames, 0.8, 0.1, seed=5)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert [len(p) for p in parts] == [32, 4, 4]
    assert set().union(*parts) == set(range(40)) and sum(map(len, parts)) == 40
    again = split_frames(frames, 0.8, 0.1, seed=5)
    assert np.array_equal(again.train, split.train)
    small = split_frames(frames, 0.8, 0.1, seed=5, train_frames=10)
    large = split_frames(frames, 0.8, 0.1, seed=5, train_frames=20)
    assert set(small.train) < set(large.train) < set(split.train)
    assert np.array_equal(small.test, split.test)  # label counts never touch held-out frames
    assert len(split_frames(frames, 0.8, 0.1, seed=5, train_frames=0.5).train) == 16
    with pytest.raises(LabelError, match="train_frames=50 asks for 50"):
        split_frames(frames, 0.8, 0.1, seed=5, train_frames=50)


def test_augmentation_moves_keypoints_with_the_image(tmp_path):
    make_project(tmp_path, n=4, size=(96, 128))
    frames = read_labeled_frames(tmp_path)
    spec = AugmentSpec(
        rotation_deg=25, scale=0.2, shift=0.08, brightness=0.0, contrast=0.0, blur_prob=0
    )
    dataset = LabeledDataset(frames, (64, 64), spec, seed=1)
    for epoch in range(3):
        dataset.epoch = epoch
        for i in range(len(dataset)):
            item = dataset[i]
            image = (item["image"][0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).numpy()
            expected = item["keypoints"][0].numpy()
            peak = np.array(np.unravel_index(image.argmax(), image.shape))[::-1]
            weights = np.clip(image - 0.3, 0, None)
            yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
            centroid = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
            assert np.linalg.norm(peak - expected) < 1.5
            assert np.linalg.norm(centroid - expected) < 0.6
            # to_frame undoes the whole warp: model pixels -> frame pixels
            back = item["to_frame"][:, :2] @ item["keypoints"][0] + item["to_frame"][:, 2]
            torch.testing.assert_close(back, item["keypoints_frame"][0], atol=1e-3, rtol=0)


def test_repeated_visits_draw_new_augmentations_of_the_same_frame(tmp_path):
    make_project(tmp_path, n=4, size=(96, 128))
    frames = read_labeled_frames(tmp_path)
    spec = AugmentSpec(rotation_deg=25, scale=0.2, shift=0.08, blur_prob=0)
    dataset = LabeledDataset(frames, (64, 64), spec, seed=1, length=10)
    assert len(dataset) == 10
    visits = [dataset[i] for i in (1, 5, 9)]  # frame 1 three times
    assert {int(v["index"]) for v in visits} == {1}
    for v in visits:  # same labels in frame pixels, each visit its own warp
        torch.testing.assert_close(v["keypoints_frame"], visits[0]["keypoints_frame"])
    assert not torch.allclose(visits[0]["keypoints"], visits[1]["keypoints"])
    assert not torch.allclose(visits[1]["image"], visits[2]["image"])
    with pytest.raises(IndexError):
        dataset[10]
    with pytest.raises(ValueError, match="below the 4 frames"):
        LabeledDataset(frames, (64, 64), length=3)


def test_min_steps_per_epoch_sets_the_epoch_length(tmp_path):
    from lpray.config import config_from_dict
    from lpray.train.data import labeled_loader

    make_project(tmp_path, n=6, size=(64, 64))
    frames = read_labeled_frames(tmp_path)
    cfg = config_from_dict(
        {
            "data": {"root": str(tmp_path), "image_size": [64, 64]},
            "training": {"batch_size": 4, "min_steps_per_epoch": 5},
        }
    )
    bundle = types.SimpleNamespace(frames=frames)
    train = labeled_loader(cfg, bundle, np.arange(6), True, 0)
    assert len(train) == 5 and len(train.dataset) == 20
    val = labeled_loader(cfg, bundle, np.arange(6), False, 0)  # validation never repeats
    assert len(val.dataset) == 6


def test_context_paths_follow_frame_numbers():
    assert context_paths("labeled-data/v/img00000042.png", range(-2, 3)) == [
        f"labeled-data/v/img000000{n}.png" for n in (40, 41, 42, 43, 44)
    ]
    assert context_paths("a/img1.png", range(-2, 1)) == ["a/img0.png", "a/img0.png", "a/img1.png"]


@pytest.mark.parametrize("preset", ["mild", "strong"])
def test_augmentation_deferred_to_the_device_matches_the_loader(tmp_path, preset):
    """Frames augmented a batch at a time after transfer (training.labeled_augment_on=device)
    equal the loader's per-frame augmentation with the same draws (blur, motion blur and
    occlusion included), for a batch mixing frame sizes (zero-padded in the collate), and the
    module's transfer hook applies it."""
    from lpray.config import load_config
    from lpray.data.augment import DRAW_KEYS, augment_batch
    from lpray.data.augment_spec import AUGMENT_PRESETS
    from lpray.train.data import _collate_labeled
    from lpray.train.module import PoseModule

    make_project(tmp_path, n=4, size=(96, 128))
    bigger = np.zeros((110, 140), np.uint8)
    bigger[40:44, 50:54] = 200
    Image.fromarray(bigger, mode="L").save(tmp_path / "labeled-data" / "img001.png")
    frames = read_labeled_frames(tmp_path)
    spec = AUGMENT_PRESETS[preset].frames
    if preset == "mild":
        spec = AugmentSpec(
            rotation_deg=25, scale=0.2, shift=0.08, brightness=0.2, contrast=0.3, blur_prob=0.5
        )
    loader_side = LabeledDataset(frames, (64, 64), spec, seed=3, length=8)
    deferred = LabeledDataset(frames, (64, 64), spec, seed=3, length=8, defer_augment=True)
    for dataset in (loader_side, deferred):
        dataset.epoch = 2
    expected = _collate_labeled([loader_side[i] for i in range(8)])
    batch = _collate_labeled([deferred[i] for i in range(8)])
    assert "image" not in batch and batch["raw"].dtype == torch.uint8
    assert batch["raw"].shape[-2:] == (110, 140)  # padded to the largest frame
    blurred = [
        not torch.equal(
            k,
            batch["blur_kernel"][0]
            .new_zeros(k.shape)
            .index_put_((torch.tensor(k.shape[0] // 2),) * 2, torch.tensor(1.0)),
        )
        for k in batch["blur_kernel"]
    ]
    assert 0 < sum(blurred) < 8  # both blur branches are exercised
    if preset == "strong":
        occluded = [bool(codes.any()) for codes in batch["occlusion"]]
        assert 0 < sum(occluded) < 8
    torch.testing.assert_close(batch["keypoints"], expected["keypoints"])
    draws = {key: batch[key] for key in DRAW_KEYS if key in batch}
    images = augment_batch(batch["raw"], draws, (64, 64))
    torch.testing.assert_close(
        images, expected["image"], atol=1e-4, rtol=0
    )  # 1 grey level is 0.017

    module = PoseModule(load_config(None, ["data.image_size=[64,64]"]).to_dict(), ["nose", "tail"])
    hooked = module.on_after_batch_transfer({"labeled": dict(batch), "unlabeled": None}, 0)
    assert set(hooked["labeled"]) == {"image", "keypoints", "keypoints_frame", "to_frame", "index"}
    torch.testing.assert_close(
        hooked["labeled"]["image"], expected["image"], atol=1e-4, rtol=0
    )  # 1 grey level is 0.017


def test_loader_workers_draw_new_augmentation_each_epoch(tmp_path):
    """With loader worker processes (training.num_workers > 0, persistent across epochs) each
    epoch still gets its own draws: the workers must see the epoch the trainer sets on the
    loader's sampler."""
    from lpray.config import config_from_dict
    from lpray.train.data import labeled_loader

    make_project(tmp_path, n=4, size=(64, 64))
    frames = read_labeled_frames(tmp_path)
    cfg = config_from_dict(
        {
            "data": {"root": str(tmp_path), "image_size": [32, 32]},
            "training": {"batch_size": 4, "num_workers": 1},
        }
    )
    bundle = types.SimpleNamespace(frames=frames)
    loader = labeled_loader(cfg, bundle, np.arange(4), True, 0)
    epochs = []
    assert loader.persistent_workers
    for epoch in (0, 1, 0):
        loader.sampler.set_epoch(epoch)
        batch = next(iter(loader))
        order = torch.argsort(batch["index"])
        epochs.append(batch["keypoints"][order])
    torch.testing.assert_close(epochs[0], epochs[2])  # the same epoch: the same draws
    assert not torch.allclose(epochs[0], epochs[1])  # another epoch: other draws


def test_preload_decodes_every_image_once_and_respects_its_budget(tmp_path):
    """Training loaders with worker processes decode the images before the workers fork; the
    items are the ones lazy loading gives, context neighbours included."""
    make_project(tmp_path, n=5, size=(48, 64))
    frames = read_labeled_frames(tmp_path)
    lazy = LabeledDataset(frames, (32, 32), context=2)
    eager = LabeledDataset(frames, (32, 32), context=2)
    image_bytes = 3 * 48 * 64
    assert not eager.preload(max_bytes=image_bytes)  # over budget: left lazy
    assert len(eager._cache) <= 1
    assert eager.preload()
    assert set(eager._cache) == {str(p) for p in frames.image_paths}  # neighbours missing here
    for i in range(len(frames)):
        torch.testing.assert_close(eager[i]["image"], lazy[i]["image"])
        torch.testing.assert_close(eager[i]["keypoints"], lazy[i]["keypoints"])

"""What a training run reads (lpray.train.data): the unlabeled clips follow the augmentation
preset."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lpray.train.data as train_data
from lpray.config import config_from_dict
from lpray.data.geometry import to_frame_matrix
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from lpray.data.video import PyAVReader

import video_fixtures as vf

SIZE = (32, 64)


def clip_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preset: str) -> tuple[dict, str]:
    """The first unlabeled batch of a run with ``training.augmentation: preset``, and the
    video it reads."""
    video = vf.make_video(tmp_path, "mjpeg", 12)
    cfg = config_from_dict(
        {
            "data": {"image_size": list(SIZE), "video_backend": "pyav"},
            "training": {"augmentation": preset, "sequence_length": 4, "seed": 1},
            "losses": {"temporal": {"weight": 1.0}},
        }
    )
    no_split = SimpleNamespace(train=np.arange(0))
    bundle = train_data.DataBundle(tmp_path, None, no_split, [video], [], [])
    # Only the unlabeled half is under test: no labeled frames are needed.
    monkeypatch.setattr(train_data, "labeled_loader", lambda *args, **kwargs: [])
    loader = train_data.make_train_loader(cfg, bundle, context=0)
    return next(iter(loader.iterables["unlabeled"])), video


def test_preset_none_leaves_the_unlabeled_clips_untransformed(tmp_path, monkeypatch):
    """``training.augmentation: none`` used to leave the labeled frames alone but still rotate,
    zoom and shift the clips: now the clips are the plain resize of the video's frames."""
    batch, video = clip_batch(tmp_path, monkeypatch, "none")
    frame_size = (vf.HEIGHT, vf.WIDTH)
    resize = torch.from_numpy(to_frame_matrix(np.eye(2, 3), frame_size, SIZE)).float()
    assert torch.equal(batch["to_frame"][0], resize)
    start = int(batch["frame_index"][0, 0])
    with PyAVReader(video) as reader:
        raw = torch.from_numpy(reader.read(start, 4)).permute(0, 3, 1, 2).float()
    resized = torch.nn.functional.interpolate(raw, SIZE, mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(batch["frames"][0], (resized - mean) / std, atol=1e-4, rtol=0)


def test_default_preset_augments_the_unlabeled_clips(tmp_path, monkeypatch):
    batch, _ = clip_batch(tmp_path, monkeypatch, "mild")
    resize = to_frame_matrix(np.eye(2, 3), (vf.HEIGHT, vf.WIDTH), SIZE)
    assert not np.allclose(batch["to_frame"][0].numpy(), resize, atol=1e-3)

"""The 5-frame context model lines up with the video: no off-by-one at chunk borders or ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpray.data.labeled import LabeledDataset, read_labeled_frames
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from lpray.data.synthetic import load_synthetic_project
from lpray.data.video import PyAVReader
from lpray.inference.chunks import iter_prediction_chunks
from lpray.models.heatmap import ContextModel


@pytest.fixture(scope="module")
def context_model() -> ContextModel:
    torch.manual_seed(0)
    model = ContextModel("resnet18", n_keypoints=3).eval()
    with torch.no_grad():  # make every window position matter, asymmetrically
        model.temporal_weights.copy_(torch.linspace(-1.0, 2.0, 5).expand_as(model.temporal_weights))
    return model


@pytest.mark.parametrize("chunk_size", [7, 40])
def test_chunked_prediction_equals_per_frame_windows(tiny_project, context_model, chunk_size):
    """Chunked sequence prediction == the model applied to each frame's own window t-2..t+2."""
    video = str(load_synthetic_project(tiny_project).test_videos[0])
    chunks = list(
        iter_prediction_chunks(video, (64, 64), chunk_size=chunk_size, context=2, backend="pyav")
    )
    frames = {}
    with torch.no_grad():
        chunked = []
        for chunk in chunks:
            for i, t in enumerate(chunk["frame_index"].tolist()):
                frames.setdefault(t, chunk["frames"][i])
            heatmaps = context_model.forward_sequence(chunk["frames"])
            chunked.append(heatmaps[chunk["valid"]])
        chunked = torch.cat(chunked)
        n = len(frames)
        assert chunked.shape[0] == n == 40
        windows = torch.stack(
            [
                torch.stack([frames[min(max(t + o, 0), n - 1)] for o in range(-2, 3)])
                for t in range(n)
            ]
        )
        direct = torch.cat(
            [context_model(windows[i : i + 10])["heatmaps"] for i in range(0, n, 10)]
        )
    torch.testing.assert_close(chunked, direct, atol=1e-4, rtol=1e-4)


def test_chunk_frames_are_the_video_frames_in_order(tiny_project):
    video = str(load_synthetic_project(tiny_project).test_videos[0])
    with PyAVReader(video) as reader:
        decoded = reader.read(0, len(reader))[..., 0].astype(np.float32) / 255.0
    for chunk in iter_prediction_chunks(video, (64, 64), chunk_size=9, context=2, backend="pyav"):
        grey = (chunk["frames"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).numpy()
        for row, t in enumerate(chunk["frame_index"].tolist()):
            assert np.abs(grey[row] - decoded[t]).mean() < 0.01  # 64x64 frames: resize is identity


def test_labeled_context_frames_are_the_video_neighbours(tiny_project):
    """Labeled frame t comes with frames t-2..t+2 of its video (exact neighbours, right order)."""
    project = load_synthetic_project(tiny_project)
    frames = read_labeled_frames(project.root)
    dataset = LabeledDataset(frames, (64, 64), None, context=2)
    checked = 0
    for i, path in enumerate(frames.image_paths):
        stem = path.split("/")[1]
        t = int(path.rsplit("img", 1)[1].split(".")[0])
        with PyAVReader(project.root / "videos" / f"{stem}.mp4") as reader:
            clip = reader.read(t - 2, 5)[..., 0].astype(np.float32) / 255.0
        images = (dataset[i]["image"][:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).numpy()
        for offset in range(5):
            diffs = [np.abs(images[offset] - clip[j]).mean() for j in range(5)]
            assert int(np.argmin(diffs)) == offset and diffs[offset] < 0.02
        checked += 1
        if checked == 4:
            break

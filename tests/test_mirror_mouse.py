"""The real mirror-mouse example from Lightning Pose: load, train a few steps, predict its video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lpray.config import load_config
from lpray.data.labeled import read_labeled_frames
from lpray.inference.network import load_network
from lpray.inference.video import predict_video
from lpray.io.layout import ModelDir
from lpray.io.tables import read_pose_csv, table_to_arrays
from lpray.train.data import fit_loss_states, prepare_data
from lpray.train.fit import train

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "mirror_mouse.yaml"


def mirror_config(root: Path, out: Path, *extra: str):
    return load_config(CONFIG, [f"data.root={root}", f"training.output_dir={out}", *extra])


def test_loads_the_example(mirror_mouse):
    frames = read_labeled_frames(mirror_mouse)
    assert len(frames) == 90 and len(frames.keypoint_names) == 17
    assert frames.keypoint_names[0] == "paw1LH_top"
    assert np.isnan(frames.keypoints).any()  # some keypoints are unlabeled


def test_multiview_pca_fits_the_mirror_views(mirror_mouse, tmp_path):
    cfg = mirror_config(mirror_mouse, tmp_path, "losses.pca_singleview.weight=0.001")
    bundle = prepare_data(cfg)
    assert len(bundle.split.train) == 72 and len(bundle.videos) == 1
    pcas = fit_loss_states(cfg, bundle)
    multi = pcas["pca_multiview"]
    assert multi.components.shape == (3, 4)  # (x, y) in two views -> a 3-D world
    # In frame pixels the top and bottom views share x: the labels reproject within a few pixels.
    assert 0 < multi.epsilon < 15


@pytest.mark.slow
def test_trains_a_few_steps_and_predicts_the_video(mirror_mouse, tmp_path):
    cfg = mirror_config(
        mirror_mouse,
        tmp_path / "model",
        "model.backbone=resnet18",
        "data.image_size=[64,64]",
        "training.max_epochs=1",
        "data.train_frames=16",
        "training.batch_size=8",
        "training.sequence_length=4",
        "training.progress_bar=false",
        "training.accelerator=cpu",
    )
    model_dir = train(cfg)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert summary["train_steps"] == 2 and summary["n_test_frames"] == 9
    trained = load_network(model_dir, "cpu")
    video = mirror_mouse / "videos" / "test_vid.mp4"
    stats = predict_video(trained, str(video), tmp_path / "pred", chunk_size=128)
    assert stats["frames"] == 994
    xy, likelihood = table_to_arrays(read_pose_csv(tmp_path / "pred" / "test_vid.csv"))
    assert xy.shape == (994, 17, 2) and np.isfinite(xy).all()
    assert (xy[..., 0] <= 396).all() and (xy[..., 1] <= 406).all()  # frame pixels, not model pixels
    assert xy[..., 1].max() > 64
    assert ((likelihood >= 0) & (likelihood <= 1)).all()

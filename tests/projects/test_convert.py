"""``lpray convert``: DeepLabCut, SLEAP and Lightning Pose projects in, lpray projects out, with the
same keypoints and images (the tiny synthetic project re-laid out as each tool lays it out)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lpray.config import config_from_dict
from lpray.data.labeled import read_labeled_frames
from lpray.io.layout import ModelDir
from lpray.io.tables import keypoint_names, read_pose_csv, table_to_arrays

from conftest import tiny_config

sio = pytest.importorskip("sleap_io")


def convert(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lpray", "convert", str(source), "--out", str(out), *extra],
        capture_output=True,
        text=True,
    )


def labels_of(project: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    table = read_pose_csv(project / "CollectedData.csv")
    xy, _ = table_to_arrays(table)
    return keypoint_names(table), {str(k): v for k, v in zip(table.index, xy)}


def dlc_project(tiny: Path, folder: Path, multi: bool = False) -> Path:
    """The tiny project as DeepLabCut lays one out: config.yaml, labeled-data/<video>/
    CollectedData_<scorer>.h5 with (labeled-data, video, image) row keys."""
    names, labels = labels_of(tiny)
    config = {
        "Task": "tiny",
        "scorer": "me",
        "bodyparts": names,
        "multianimalproject": multi,
        "video_sets": {
            f"/elsewhere/videos/{p.name}": {"crop": "0, 64, 0, 64"}
            for p in sorted((tiny / "videos").glob("*.mp4"))
        },
        "skeleton": [[names[0], names[1]], [names[0], names[2]]],
    }
    if multi:
        config["individuals"] = ["mouse1", "mouse2"]
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(tiny / "videos", folder / "videos")
    by_video: dict[str, list[str]] = {}
    for image in labels:
        by_video.setdefault(image.split("/")[1], []).append(image)
    for video, images in by_video.items():
        target = folder / "labeled-data" / video
        target.mkdir(parents=True)
        for image in images:
            shutil.copy(tiny / image, target / Path(image).name)
        columns = pd.MultiIndex.from_tuples(
            [("me", n, c) for n in names for c in ("x", "y")],
            names=["scorer", "bodyparts", "coords"],
        )
        rows = pd.MultiIndex.from_tuples([tuple(i.split("/")) for i in images])
        values = np.stack([labels[i].reshape(-1) for i in images])
        frame = pd.DataFrame(values, index=rows, columns=columns)
        frame.to_hdf(target / "CollectedData_me.h5", key="df_with_missing")  # DLC: fixed
    return folder


def assert_same_labels(converted: Path, expected: dict[str, np.ndarray], names: list[str]):
    got_names, got = labels_of(converted)
    assert got_names == names
    assert len(got) == len(expected)
    for image, xy in got.items():
        match = [
            k
            for k in expected
            if Path(k).name == Path(image).name and Path(k).parent.name == Path(image).parent.name
        ]
        assert match, image
        np.testing.assert_allclose(xy, expected[match[0]], atol=1e-4)
    frames = read_labeled_frames(converted)  # lpray's own loader accepts it (images exist)
    assert len(frames) == len(expected) and frames.keypoint_names == names


@pytest.mark.slow
def test_dlc_project_converts_and_trains(tiny_project, tmp_path):
    from lpray.train.fit import train

    names, expected = labels_of(tiny_project)
    source = dlc_project(tiny_project, tmp_path / "dlc")
    out = tmp_path / "lpray-project"
    done = convert(source, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_labels(out, expected, names)
    for image in expected:  # images copied unchanged
        a = np.asarray(Image.open(tiny_project / image))
        b = np.asarray(Image.open(out / image))
        np.testing.assert_array_equal(a[..., :3], b[..., :3])
    meta = yaml.safe_load((out / "config.yaml").read_text())
    assert meta["data"]["keypoints"] == names
    record = pd.read_json(out / "project.json", typ="series")
    assert record["skeleton"] == [[0, 1], [0, 2]]
    # the config's video paths were another machine's: the project's own videos/ were found
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["train00.mp4", "train01.mp4"]
    values = tiny_config(out, tmp_path / "model", training={"max_epochs": 1})
    values["data"]["keypoints"] = names
    model_dir = train(config_from_dict(values))
    assert ModelDir(model_dir).best_checkpoint.is_file()


def test_multi_animal_dlc_project_is_refused_and_nothing_written(tiny_project, tmp_path):
    source = dlc_project(tiny_project, tmp_path / "dlc", multi=True)
    done = convert(source, tmp_path / "out")
    assert done.returncode == 2
    assert "multi-animal DeepLabCut project (2 individuals)" in done.stderr
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["dlc"]  # no staging folder left


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".slp", ".pkg.slp"])
def test_sleap_labels_convert_and_train(tiny_project, tmp_path, suffix):
    from lpray.data.video import PyAVReader
    from lpray.train.fit import train

    names, expected = labels_of(tiny_project)
    skeleton = sio.Skeleton(
        nodes=list(names), edges=[(names[0], names[1])]
    )  # (it converts the list)
    videos = {p.stem: sio.Video.from_filename(str(p)) for p in (tiny_project / "videos").glob("*")}
    frames, truth = [], {}
    for image, xy in expected.items():
        video, frame_idx = image.split("/")[1], int(Path(image).stem[3:])
        instance = sio.Instance.from_numpy(xy, skeleton=skeleton)
        frames.append(
            sio.LabeledFrame(video=videos[video], frame_idx=frame_idx, instances=[instance])
        )
        truth[f"labeled-data/{video}/img{frame_idx:05d}.png"] = xy
    labels = sio.Labels(labeled_frames=frames, videos=list(videos.values()), skeletons=[skeleton])
    path = tmp_path / f"labels{suffix}"
    if suffix == ".pkg.slp":
        sio.save_file(labels, str(path), embed="user")
    else:
        sio.save_file(labels, str(path))
    out = tmp_path / "project"
    done = convert(path, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_labels(out, truth, names)
    # the extracted frames are the video's frames (within the RGB conversions' rounding)
    image = next(iter(truth))
    video, frame_idx = image.split("/")[1], int(Path(image).stem[3:])
    decoded = PyAVReader(str(tiny_project / "videos" / f"{video}.mp4")).read(frame_idx, 1)[0]
    extracted = np.asarray(Image.open(out / image).convert("RGB")).astype(int)
    assert np.abs(extracted - decoded.astype(int)).mean() < 3
    values = tiny_config(out, tmp_path / "model", training={"max_epochs": 1})
    values["data"]["keypoints"] = names
    assert (train(config_from_dict(values)) / "checkpoints" / "best.ckpt").is_file()


def test_lightning_pose_project_converts(tiny_project, tmp_path):
    names, expected = labels_of(tiny_project)
    out = tmp_path / "project"
    done = convert(tiny_project, out, "--from", "lightning-pose")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_labels(out, expected, names)
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["train00.mp4", "train01.mp4"]


def test_unknown_layout_names_what_it_looked_for(tmp_path):
    done = convert(tmp_path, tmp_path / "out")
    assert done.returncode == 2
    assert "not a DeepLabCut project" in done.stderr and "--from" in done.stderr

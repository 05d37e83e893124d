"""The synthetic dataset: exact, deterministic truth that matches the pixels and the files."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lpray import cli
from lpray.data import synthetic
from lpray.data.synthetic import (
    SyntheticSpec,
    load_synthetic_project,
    load_truth,
    make_synthetic_project,
    render_video,
)
from lpray.io.tables import read_pose_csv, table_to_arrays

SMALL = SyntheticSpec(frames_per_video=40, n_labeled=24, frame_size=(96, 96))
CLEAN = dict(noise_std=0.0, motion_blur=False, n_labeled=0)  # pixels from the pose alone


def decode(path: Path) -> np.ndarray:
    """All frames of a video, greyscale, with PyAV (independent of the generator's reader)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


def all_bytes(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SyntheticProject:
    return make_synthetic_project(tmp_path_factory.mktemp("small") / "proj", SMALL)


def test_same_seed_gives_same_bytes_and_other_seed_differs(small, tmp_path):
    again = make_synthetic_project(tmp_path / "again", SMALL)
    other = make_synthetic_project(tmp_path / "other", dataclasses.replace(SMALL, seed=1))
    assert again.csv_path.read_bytes() == small.csv_path.read_bytes()
    pngs = all_bytes(small.root, "labeled-data/*/*.png")
    assert pngs and all_bytes(again.root, "labeled-data/*/*.png") == pngs
    assert all_bytes(again.root, "truth/*.csv") == all_bytes(small.root, "truth/*.csv")
    for a, b in zip(small.train_videos + small.test_videos, again.train_videos + again.test_videos):
        assert a.read_bytes() == b.read_bytes()  # hence identical decoded frames
    assert other.csv_path.read_bytes() != small.csv_path.read_bytes()
    first = small.train_videos[0]
    assert not np.array_equal(decode(first), decode(other.train_videos[0]))


def test_labels_are_the_truth_and_missing_exactly_where_hidden(small):
    labels = read_pose_csv(small.csv_path)
    xy, _ = table_to_arrays(labels)
    assert list(labels.columns.get_level_values(1)[::2]) == small.keypoint_names
    assert len(labels) == SMALL.n_labeled
    truth = {stem: load_truth(path) for stem, path in small.truth_paths.items()}
    hidden = 0
    for row, image in enumerate(labels.index):
        _, stem, name = str(image).split("/")
        t = int(name[3:11])
        true_xy, visible = truth[stem][0][t], truth[stem][1][t]
        np.testing.assert_array_equal(np.isnan(xy[row]).any(-1), ~visible)
        np.testing.assert_allclose(xy[row][visible], true_xy[visible], atol=1e-9)
        hidden += int((~visible).sum())
        assert (small.root / str(image)).is_file()
        for d in (-2, -1, 1, 2):  # context neighbours exist but are not rows
            assert (small.root / "labeled-data" / stem / f"img{t + d:08d}.png").is_file()
    assert hidden > 0, "occlusion should hide some labeled keypoints"
    assert set(truth) == {"train00", "train01", "test00"}


def test_truth_file_is_the_scene_truth(small):
    keypoints, visible = synthetic.scene_truth(synthetic.make_scene(SMALL, "test", 0))
    read_xy, read_visible = load_truth(small.truth_paths["test00"])
    np.testing.assert_array_equal(read_xy, keypoints)
    np.testing.assert_array_equal(read_visible, visible)
    assert 0.75 < visible.mean() < 1.0


def test_any_frame_range_renders_the_same_pixels():
    scene = synthetic.make_scene(SMALL, "train", 1)
    whole = synthetic.render_frames(scene, 0, SMALL.frames_per_video)
    np.testing.assert_array_equal(synthetic.render_frames(scene, 17, 21), whole[17:21])
    assert not np.array_equal(whole[17], whole[18])


@pytest.mark.parametrize("two_view", [False, True])
def test_paw_blobs_are_centred_on_the_true_paws(two_view):
    """Intensity centroid of each bright paw blob lies on the truth (pixel centres at integers)."""
    spec = SyntheticSpec(frames_per_video=40, two_view=two_view, occlusion=False, **CLEAN)
    frames, keypoints, _ = render_video(spec)
    names = synthetic.keypoint_names(two_view)
    paws = [k for k, n in enumerate(names) if n.startswith("paw")]
    static_bright = np.median(frames, axis=0) > 160  # paw-like specks on the floor
    errors = []
    for t in range(len(frames)):
        for k in paws:
            others = [j for j in paws if j != k]
            if np.linalg.norm(keypoints[t, others] - keypoints[t, k], axis=-1).min() < 9:
                continue  # another paw's blob would leak into the window
            x0, y0 = np.rint(keypoints[t, k]).astype(int)
            if not (5 <= x0 < frames.shape[2] - 5 and 5 <= y0 < frames.shape[1] - 5):
                continue
            if static_bright[y0 - 6 : y0 + 7, x0 - 6 : x0 + 7].any():
                continue
            window = frames[t, y0 - 4 : y0 + 5, x0 - 4 : x0 + 5].astype(float)
            weight = np.clip(window - 160.0, 0, None)  # only paw pixels are this bright
            ys, xs = np.mgrid[y0 - 4 : y0 + 5, x0 - 4 : x0 + 5]
            centroid = np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
            errors.append(centroid - keypoints[t, k])
    errors = np.array(errors)
    assert len(errors) > 20
    assert np.linalg.norm(errors, axis=1).max() < 1.0
    assert np.abs(errors.mean(axis=0)).max() < 0.2  # no half-pixel convention shift


def test_hidden_keypoints_sit_under_the_dark_bar():
    spec = SyntheticSpec(frames_per_video=120, two_view=True, **CLEAN)
    frames, keypoints, visible = render_video(spec)
    view_height, width = spec.frame_size
    xy = np.rint(keypoints).astype(int)
    view = np.arange(xy.shape[1]) >= xy.shape[1] // 2  # 0 top, 1 bottom
    local_y = xy[..., 1] - view * view_height
    inside = (xy[..., 0] >= 1) & (xy[..., 0] < width - 1)
    inside &= (local_y >= 0) & (local_y < view_height)
    t, k = np.nonzero(~visible & inside)
    assert len(t) > 10
    # The bar covers the keypoint, so the row through it is fully dark within a pixel.
    row = np.stack([frames[t, xy[t, k, 1], xy[t, k, 0] + d] for d in (-1, 0, 1)])
    assert row.min(axis=0).max() < 50  # the occluder is the darkest thing in the scene
    t, k = np.nonzero(visible)
    assert np.median(frames[t, xy[t, k, 1], xy[t, k, 0]]) > 100


def test_decoded_video_matches_rendered_frames(small):
    for split, paths in (("train", small.train_videos), ("test", small.test_videos)):
        for i, path in enumerate(paths):
            rendered, _, _ = render_video(SMALL, split, i)
            decoded = decode(path)
            assert decoded.shape == (SMALL.frames_per_video, *SMALL.frame_size)
            assert np.abs(decoded.astype(float) - rendered).mean() < 2.0
    rendered, _, _ = render_video(SMALL, "train", 0)
    for png in sorted((small.root / "labeled-data" / "train00").glob("*.png")):
        np.testing.assert_array_equal(np.asarray(Image.open(png)), rendered[int(png.stem[3:])])
    with av.open(str(small.train_videos[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == SMALL.fps


def test_two_view_shares_x_and_multiview_pca_has_rank_three(tmp_path):
    spec = SyntheticSpec(frames_per_video=30, n_labeled=4, n_test_videos=0, two_view=True)
    project = make_synthetic_project(tmp_path / "mirror", spec)
    assert project.frame_size == (256, 128)
    assert project.view_groups[0] == ["nose_top", "nose_bot"]
    assert len(project.view_groups) == len(project.keypoint_names) // 2
    keypoints, _ = load_truth(project.truth_paths["train00"])
    names = project.keypoint_names
    top = [names.index(a) for a, _ in project.view_groups]
    bot = [names.index(b) for _, b in project.view_groups]
    np.testing.assert_array_equal(keypoints[:, top, 0], keypoints[:, bot, 0])
    assert (keypoints[:, top, 1] < 128).mean() > 0.95 and (keypoints[:, bot, 1] >= 128).all()
    observations = np.concatenate([keypoints[:, top], keypoints[:, bot]], axis=-1).reshape(-1, 4)
    singular = np.linalg.svd(observations - observations.mean(0), compute_uv=False)
    assert singular[2] / singular[0] > 1e-2 and singular[3] / singular[0] < 1e-9
    assert decode(project.train_videos[0]).shape == (30, 256, 128)


def test_motion_is_smooth_yet_covers_the_frame():
    spec = SyntheticSpec(frames_per_video=900)
    for index in range(2):
        keypoints, _ = synthetic.scene_truth(synthetic.make_scene(spec, "train", index))
        step = np.linalg.norm(np.diff(keypoints, axis=0), axis=-1)
        assert step.max() < 14.0 and np.median(step) > 0.5
        centre = keypoints.mean(axis=1)
        assert (np.ptp(centre, axis=0) > 0.45 * 128).all()
        cells = np.histogram2d(*centre.T, bins=4, range=[[0, 128], [0, 128]])[0]
        assert (cells > 0).sum() >= 9


@pytest.mark.parametrize("codec, suffix", [("vp9", ".webm"), ("mjpeg", ".avi")])
def test_dali_codecs_decode_with_pyav(tmp_path, codec, suffix):
    spec = SyntheticSpec(frames_per_video=12, n_labeled=2, n_test_videos=0, codec=codec)
    project = make_synthetic_project(tmp_path / codec, spec)
    path = project.train_videos[0]
    assert path.suffix == suffix
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == codec
    decoded = decode(path)
    rendered, _, _ = render_video(spec)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(float) - rendered).mean() < 3.0


def test_second_call_reuses_the_project_and_refuses_a_different_one(small):
    stamps = {p: p.stat().st_mtime_ns for p in small.root.rglob("*") if p.is_file()}
    again = make_synthetic_project(small.root, SMALL)
    assert again == small
    assert {p: p.stat().st_mtime_ns for p in small.root.rglob("*") if p.is_file()} == stamps
    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_project(small.root, dataclasses.replace(SMALL, seed=5))
    assert load_synthetic_project(small.root).spec == SMALL


def test_overwrite_replaces_and_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    spec = SyntheticSpec(frames_per_video=10, n_labeled=2, n_test_videos=0)
    make_synthetic_project(tmp_path / "p", spec)
    other = dataclasses.replace(spec, seed=3)
    assert make_synthetic_project(tmp_path / "p", other, overwrite=True).spec == other

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic, "_write_video", killed)
    with pytest.raises(RuntimeError):
        make_synthetic_project(tmp_path / "q", spec)
    assert sorted(os.listdir(tmp_path)) == ["p"]


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="even"):
        SyntheticSpec(frame_size=(127, 128))
    with pytest.raises(ValueError, match="codec"):
        SyntheticSpec(codec="h265")
    with pytest.raises(ValueError, match="n_labeled"):
        SyntheticSpec(frames_per_video=10, n_labeled=100)


def test_cli_writes_a_project_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synthetic", str(out), "--frames", "12", "--labeled", "3", "--test-videos", "0"]
    assert cli.main([*argv, "--seed", "4", "--two-view", "--codec", "mjpeg", "--preview"]) == 0
    printed = capsys.readouterr().out
    assert "nose_top" in printed and "train00.avi" in printed and str(out) in printed
    project = load_synthetic_project(out)
    assert project.spec.seed == 4 and project.spec.frames_per_video == 12
    assert len(read_pose_csv(project.csv_path)) == 3
    assert Image.open(out / "preview.png").size[0] > 300
    assert cli.main([*argv, "--seed", "9"]) == 2  # refuses to clobber another project


def test_dali_cpu_reader_reads_the_vp9_and_mjpeg_videos(tmp_path):
    """The formats exist for DALI's CPU reader; check it decodes them to the rendered frames."""
    dali = pytest.importorskip("nvidia.dali")
    fn = pytest.importorskip("nvidia.dali.fn")
    for codec in ("vp9", "mjpeg"):
        spec = SyntheticSpec(
            frames_per_video=10, n_labeled=2, n_train_videos=1, n_test_videos=0, codec=codec
        )
        project = make_synthetic_project(tmp_path / codec, spec)

        @dali.pipeline_def(batch_size=1, num_threads=1, device_id=None)
        def reader(path=str(project.train_videos[0])):
            return fn.experimental.readers.video(filenames=[path], sequence_length=10, device="cpu")

        pipe = reader()
        pipe.build()
        sequence = np.asarray(pipe.run()[0][0])
        rendered, _, _ = render_video(spec)
        assert sequence.shape == (10, 128, 128, 3)
        assert np.abs(sequence[..., 0].astype(float) - rendered).mean() < 3.0

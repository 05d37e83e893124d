"""Corpus tracking on Ray: outputs per video, a corrupt video fails alone, reruns do no work,
a killed tracking worker is restarted and loses no frame, segments of a video spread over
workers stitch exactly, and the Ray path gives what the plain single-process path gives."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lpray import cli
from lpray.config import config_from_dict
from lpray.data.synthetic import load_synthetic_project
from lpray.data.video import validate_video
from lpray.ensemble.run import MemberResources, train_ensemble
from lpray.inference.network import load_network
from lpray.inference.video import predict_video_arrays
from lpray.io.tables import read_pose_csv, read_pose_parquet, table_to_arrays
from lpray.smooth.api import smooth_ensemble
from lpray.track.corpus import TaskResources, track_corpus
from lpray.track.tasks import TrackSettings

from conftest import tiny_config
from members import make_ensemble

pytestmark = pytest.mark.slow
HALF_CPU = TaskResources(cpus=0.5)


@pytest.fixture(scope="module")
def ensemble(tiny_project, tmp_path_factory, ray_cluster):
    """Two 1-epoch members: poor models, but two different ones (that is all tracking needs)."""
    out = tmp_path_factory.mktemp("ensemble")
    cfg = config_from_dict(tiny_config(tiny_project, out / "unused", training={"max_epochs": 1}))
    result = train_ensemble(cfg, 2, out, MemberResources(cpus=0.5), progress=False)
    assert not result.failed, result.records
    return out


@pytest.fixture(scope="module")
def corpus(tiny_project, tmp_path_factory):
    """The tiny project's three videos, plus one corrupt file in the same folder."""
    project = load_synthetic_project(tiny_project)
    folder = tmp_path_factory.mktemp("corpus")
    for video in [*project.train_videos, *project.test_videos]:
        shutil.copy(video, folder / video.name)
    good = project.test_videos[0].read_bytes()
    (folder / "broken.mp4").write_bytes(good[:600] + os.urandom(3000))
    return folder


def test_corpus_good_videos_finish_bad_one_fails_and_rerun_does_nothing(ensemble, corpus, tmp_path):
    out = tmp_path / "tracks"
    started = time.perf_counter()
    result = track_corpus(
        ensemble, [str(corpus / "*.mp4")], out, TrackSettings(), HALF_CPU, progress=False
    )
    first_seconds = time.perf_counter() - started
    good = sorted(p.stem for p in corpus.glob("*.mp4") if p.stem != "broken")
    assert sorted(result.done) == good
    assert result.failed == ["broken"]
    # 4 probes; the 3 good videos: one worker call each (both members, one decoding) + EKS
    assert result.launched_tasks == 4 + 3 + 3

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    assert pd.read_parquet(out / "summary.parquet").shape == summary.shape
    bad = summary.set_index("video").loc["broken"]
    assert bad["status"] == "failed"
    assert "VideoError" in bad["error"] and "broken.mp4" in bad["error"]
    assert not (out / "broken" / "done.json").exists()
    assert json.loads((out / "broken" / "failed.json").read_text())["status"] == "failed"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["n_done"], manifest["n_failed"]) == (3, 1)

    for stem in good:
        folder = out / stem
        done = json.loads((folder / "done.json").read_text())
        assert done["frames"] == 40 and done["members"] == ["member-0", "member-1"]
        assert done["decode_passes"] == 1 and done["segments"] == [[0, 40]]
        assert np.isfinite(done["mean_posterior_var"]) and 0 < done["mean_confidence"] <= 1
        for name in (
            f"{stem}.rng=0.csv",
            f"{stem}.rng=1.parquet",
            f"{stem}.eks.csv",
            f"{stem}.eks.parquet",
            f"{stem}.labeled.png",
        ):
            assert (folder / name).is_file(), name
        row = summary.set_index("video").loc[stem]
        assert row["status"] == "done" and row["frames"] == 40
        # done.json was written last: every other output is at least as old.
        newest = max(p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "done.json")
        assert (folder / "done.json").stat().st_mtime_ns >= newest

    # Rerun: nothing to do, no task launched; the corrupt file (unchanged) is not retried.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("done.json")}
    started = time.perf_counter()
    again = track_corpus(
        ensemble, [str(corpus / "*.mp4")], out, TrackSettings(), HALF_CPU, progress=False
    )
    rerun_seconds = time.perf_counter() - started
    assert again.launched_tasks == 0 and again.skipped == 4
    assert sorted(again.done) == good and again.failed == ["broken"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("done.json")} == mtimes
    assert rerun_seconds < min(2.0, first_seconds / 3), (rerun_seconds, first_seconds)
    print(f"\ncorpus: first run {first_seconds:.1f} s, rerun {rerun_seconds:.2f} s")


def test_ray_outputs_match_single_process_prediction_and_eks(ensemble, corpus, tmp_path):
    """The task chain must write exactly what predicting and smoothing by hand gives."""
    video = sorted(p for p in corpus.glob("*.mp4") if p.stem != "broken")[0]
    out = tmp_path / "one"
    formats = ("csv", "parquet", "h5", "nwb")
    settings = TrackSettings(overlay="video", formats=formats)
    track_corpus(ensemble, [str(video)], out, settings, HALF_CPU, False)
    folder = out / video.stem
    tables = []
    for k in (0, 1):
        xy, confidence = predict_video_arrays(
            load_network(ensemble / f"member-{k}", "cpu"), str(video)
        )
        written = read_pose_csv(folder / f"{video.stem}.rng={k}.csv")
        got_xy, got_confidence = table_to_arrays(written)
        np.testing.assert_allclose(got_xy, xy, atol=1e-3)
        np.testing.assert_allclose(got_confidence, confidence, atol=1e-5)
        tables.append(written)
    expected, _ = smooth_ensemble(tables)
    smoothed = read_pose_parquet(folder / f"{video.stem}.eks.parquet")
    np.testing.assert_allclose(
        smoothed.to_numpy(float), expected.to_numpy(float), rtol=1e-6, atol=1e-6
    )
    # the other formats hold the same EKS table (DLC's h5 layout; NWB: x, y and likelihood)
    h5 = pd.read_hdf(folder / f"{video.stem}.eks.h5", "df_with_missing")
    pd.testing.assert_frame_equal(h5, smoothed, check_names=False, check_index_type=False)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(folder / f"{video.stem}.eks.nwb"), "r") as io:
        estimation = io.read().processing["behavior"]["PoseEstimation"]
        fps = validate_video(str(video)).fps
        assert fps > 1  # the video's own rate, not the writer's fallback
        smoothed_xy, likelihood = table_to_arrays(smoothed)
        for k, name in enumerate(estimation.skeleton.nodes[:]):
            series = estimation.pose_estimation_series[name]
            np.testing.assert_allclose(series.data[:], smoothed_xy[:, k])
            np.testing.assert_allclose(series.confidence[:], likelihood[:, k])
            assert series.rate == pytest.approx(fps)
    import av

    with av.open(str(folder / f"{video.stem}.labeled.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 40


def kill_on_call(marker_dir: str, call: int, video: str) -> None:
    """Fault injection: the ``call``-th worker call (counted with files, across processes)
    kills its own worker process, once."""
    folder = Path(marker_dir)
    seen = len(list(folder.glob("call-*")))
    (folder / f"call-{seen}-{os.getpid()}").touch()
    if seen + 1 == call and not (folder / "killed").exists():
        (folder / "killed").touch()
        os.kill(os.getpid(), signal.SIGKILL)


def test_killed_worker_mid_video_loses_nothing_and_rerun_launches_nothing(
    ensemble, corpus, tmp_path, ray_cluster
):
    """Videos cut into 3 segments each; the worker handling the 2nd call dies in it. The
    restarted worker redoes the call: every video has exactly its frames, in order."""
    from ray import cloudpickle

    markers = tmp_path / "markers"
    markers.mkdir()
    videos = [str(p) for p in sorted(corpus.glob("*.mp4")) if p.stem != "broken"][:2]
    settings = TrackSettings(overlay="none", segment_frames=15)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    try:
        result = track_corpus(
            ensemble,
            videos,
            tmp_path / "out",
            settings,
            HALF_CPU,
            progress=False,
            before_predict=functools.partial(kill_on_call, str(markers), 2),
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (markers / "killed").exists()  # a worker really died
    pids = {p.name.rsplit("-", 1)[1] for p in markers.glob("call-*")}
    assert len(pids) >= 2  # ... and a new process took over
    assert len(result.done) == 2 and not result.failed
    for video in videos:
        stem = Path(video).stem
        done = json.loads((tmp_path / "out" / stem / "done.json").read_text())
        assert done["segments"] == [[0, 13], [13, 27], [27, 40]]
        for k in (0, 1):
            table = read_pose_csv(tmp_path / "out" / stem / f"{stem}.rng={k}.csv")
            assert list(table.index) == list(range(40))  # exactly its frames, once each
            network = load_network(ensemble / f"member-{k}", "cpu")
            expected, _ = predict_video_arrays(network, video)
            np.testing.assert_allclose(table_to_arrays(table)[0], expected, atol=1e-3)
    again = track_corpus(ensemble, videos, tmp_path / "out", settings, HALF_CPU, progress=False)
    assert again.launched_tasks == 0 and again.skipped == 2


def test_cli_track_exit_code_and_remote_style_urls(ensemble, corpus, tmp_path, capsys):
    """``file://`` globs go through fsspec; a corpus with a bad video exits 1 and says why."""
    code = cli.main(
        [
            "track",
            str(ensemble),
            f"file://{corpus}/broken.mp4",
            "--out",
            f"file://{tmp_path}/cli",
            "--cpus-per-task",
            "0.5",
            "--overlay",
            "none",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr()
    assert code == 1
    assert "0/1 videos done" in printed.out and "broken.mp4" in printed.err


def test_remote_video_is_downloaded_in_the_worker_and_outputs_go_to_remote_storage(
    ensemble, corpus, ray_cluster
):
    """An object-store corpus (fsspec ``memory://`` here) in and out, through the worker and the
    EKS task bodies run in this process."""
    import fsspec

    from lpray.ensemble.manifest import trained_members
    from lpray.io.storage import expand, local_file
    from lpray.track.manifest import plan_jobs
    from lpray.track.tasks import TrackWorker, probe_video, smooth_video

    memory = fsspec.filesystem("memory")
    video = sorted(p for p in corpus.glob("*.mp4") if p.stem != "broken")[0]
    memory.pipe("/lpray-corpus/clip.mp4", video.read_bytes())
    try:
        [url] = expand(["memory://lpray-corpus/*.mp4"])
        with local_file(url) as copy:
            assert Path(copy).read_bytes() == video.read_bytes()
        assert not Path(copy).exists()  # the download is removed afterwards
        [job] = plan_jobs([url], "memory://lpray-out")
        assert probe_video(job).n_frames == 40
        members = trained_members(ensemble)
        settings = TrackSettings(overlay="none", members=[m.name for m in members])
        worker = TrackWorker([str(m.model_dir) for m in members], settings, "cpu")
        first, second = worker.predict(job, 0, 25), worker.predict(job, 25, 40)
        record = smooth_video(job, settings, second, first)  # any order: stitched by frame
        assert record["frames"] == 40 and record["segments"] == [[0, 25], [25, 40]]
        for member in members:
            table = read_pose_csv(f"memory://lpray-out/clip/clip.rng={member.index}.csv")
            network = load_network(member.model_dir, "cpu")
            expected, _ = predict_video_arrays(network, str(video))
            np.testing.assert_allclose(table_to_arrays(table)[0], expected, atol=1e-3)
            assert memory.exists(f"/lpray-out/clip/clip.rng={member.index}.parquet")
        assert memory.exists("/lpray-out/clip/done.json")
    finally:
        for folder in ("/lpray-corpus", "/lpray-out"):
            if memory.exists(folder):
                memory.rm(folder, recursive=True)


def test_multiview_model_tracks_with_the_multiview_smoother_on_ray(corpus, tmp_path, ray_cluster):
    """An ensemble whose config has view groups is smoothed by the multi-view EKS, and its
    member tables equal single-process prediction of each member."""
    from lpray.smooth.api import smooth_ensemble_multiview

    names = ["nose_top", "nose_bot", "tail_top", "tail_bot", "marker"]
    groups = [["nose_top", "nose_bot"], ["tail_top", "tail_bot"]]
    ensemble = make_ensemble(tmp_path / "mv", 3, names, view_groups=groups)
    video = sorted(p for p in corpus.glob("*.mp4") if p.stem != "broken")[0]
    out = tmp_path / "tracks"
    settings = TrackSettings(overlay="none")
    result = track_corpus(ensemble, [str(video)], out, settings, HALF_CPU, False)
    assert result.done == [video.stem]
    folder = out / video.stem
    done = json.loads((folder / "done.json").read_text())
    assert done["multiview"] and done["decode_passes"] == 1
    tables = []
    for k in range(3):
        table = read_pose_csv(folder / f"{video.stem}.rng={k}.csv")
        network = load_network(ensemble / f"member-{k}", "cpu")
        expected, _ = predict_video_arrays(network, str(video))
        np.testing.assert_allclose(table_to_arrays(table)[0], expected, atol=1e-3)
        tables.append(table)
    expected, _ = smooth_ensemble_multiview(tables, groups)
    written = read_pose_csv(folder / f"{video.stem}.eks.csv")
    np.testing.assert_allclose(written.to_numpy(float), expected.to_numpy(float), atol=1e-6)


def test_view_groups_select_the_multiview_smoother(tmp_path, ray_cluster):
    """A mirror-style model (view groups) is smoothed by the multi-view EKS."""
    from lpray.smooth.api import smooth_ensemble_multiview
    from lpray.track.manifest import VideoJob
    from lpray.track.tasks import smooth_video

    rng = np.random.default_rng(0)
    names = ["nose_top", "nose_bot", "tail_top", "tail_bot", "marker"]
    groups = [["nose_top", "nose_bot"], ["tail_top", "tail_bot"]]
    truth = np.cumsum(rng.normal(0, 1, (60, 5, 2)), axis=0) + 30
    xy = np.stack([truth + rng.normal(0, 1.5, truth.shape) for _ in range(3)])
    confidence = rng.uniform(0.5, 1, (3, 60, 5))
    segment = {
        "xy": xy,
        "confidence": confidence,
        "start": 0,
        "stop": 60,
        "keypoints": names,
        "seconds": 0.1,
        "decode_passes": 1,
        "parts": 1,
        "first_chunk_at": 0.0,
        "worker_created_at": 0.0,
        "worker_ready_at": 0.0,
        "node_id": "n",
    }
    settings = TrackSettings(overlay="none", view_groups=groups, members=["a", "b", "c"])
    job = VideoJob("clip", "clip.mp4", str(tmp_path))
    record = smooth_video(job, settings, segment)
    assert record["multiview"] and json.loads((tmp_path / "clip" / "done.json").read_text())
    from lpray.io.tables import arrays_to_table

    tables = [arrays_to_table(xy[k], names, confidence[k]) for k in range(3)]
    expected, _ = smooth_ensemble_multiview(tables, groups)
    written = read_pose_csv(tmp_path / "clip" / "clip.eks.csv")
    np.testing.assert_allclose(written.to_numpy(float), expected.to_numpy(float), atol=1e-6)

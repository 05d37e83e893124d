"""Object storage end to end against a real S3-protocol server (moto's server mode, s3fs as the
client): corpus tracking with the videos, the ensemble and the outputs in a bucket, and
``lpray predict`` / ``lpray smooth`` on URLs. Workers are separate Ray processes, so what they
read and write goes over the network to the server."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lpray import cli
from lpray.data.synthetic import load_synthetic_project
from lpray.inference.network import load_network
from lpray.inference.video import predict_video_arrays
from lpray.io.tables import read_pose_csv, table_to_arrays
from lpray.track.corpus import TaskResources, track_corpus
from lpray.track.tasks import TrackSettings

try:
    from .members import make_ensemble
except ImportError:
    from members import make_ensemble

pytestmark = pytest.mark.slow
NAMES = ["nose", "ear_l", "ear_r", "tail"]


@pytest.fixture(scope="module")
def bucket(s3, tiny_project, tmp_path_factory):
    """A corpus (3 good videos, 1 corrupt) and a 2-member ensemble, uploaded to the bucket."""
    local = tmp_path_factory.mktemp("s3src")
    project = load_synthetic_project(tiny_project)
    videos = [*project.train_videos, *project.test_videos]
    for video in videos:
        s3.put(str(video), f"lpray-test/corpus/{video.name}")
    good = videos[0].read_bytes()
    s3.pipe("lpray-test/corpus/broken.mp4", good[:600] + os.urandom(3000))
    ensemble = make_ensemble(local / "ensemble", 2, NAMES)
    s3.put(str(ensemble), "lpray-test/ensemble", recursive=True)
    return {"videos": videos, "local_ensemble": ensemble}


def track_bucket(out: str):
    return track_corpus(
        "s3://lpray-test/ensemble",
        ["s3://lpray-test/corpus/*.mp4"],
        out,
        TrackSettings(overlay="strip"),
        TaskResources(cpus=0.5),
        progress=False,
    )


def test_track_reads_and_writes_the_bucket_and_a_corrupt_video_fails_alone(
    s3, bucket, ray_cluster, tmp_path
):
    out = "s3://lpray-test/tracks"
    result = track_bucket(out)
    good = sorted(v.stem for v in bucket["videos"])
    assert sorted(result.done) == good and result.failed == ["broken"], result.rows
    for stem in good:
        folder = f"lpray-test/tracks/{stem}"
        done = json.loads(s3.cat(f"{folder}/done.json"))
        assert done["frames"] == 40
        for name in (f"{stem}.rng=0.csv", f"{stem}.rng=1.parquet", f"{stem}.eks.csv"):
            assert s3.exists(f"{folder}/{name}"), name
        assert s3.exists(f"{folder}/{stem}.labeled.png")
    failed = json.loads(s3.cat("lpray-test/tracks/broken/failed.json"))
    assert "broken.mp4" in failed["error"] and failed["input_error"]
    assert not s3.exists("lpray-test/tracks/broken/done.json")
    assert s3.exists("lpray-test/tracks/summary.csv") and s3.exists(
        "lpray-test/tracks/manifest.json"
    )
    # the members' tables equal a local prediction of the same member on the same video
    video = bucket["videos"][0]
    for k in (0, 1):
        network = load_network(bucket["local_ensemble"] / f"member-{k}", "cpu")
        expected, _ = predict_video_arrays(network, str(video))
        written = read_pose_csv(f"s3://lpray-test/tracks/{video.stem}/{video.stem}.rng={k}.csv")
        np.testing.assert_allclose(table_to_arrays(written)[0], expected, atol=1e-3)
    # credentials never land in what lpray writes
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for path in s3.find("lpray-test/tracks"):
        if path.endswith((".json", ".csv")):
            assert secret not in s3.cat(path).decode(errors="ignore"), path
    again = track_bucket(out)
    assert again.launched_tasks == 0 and again.skipped == 4


def test_predict_and_smooth_on_urls(s3, bucket, capsys):
    """``lpray predict`` with the model directory, the video and the output in the bucket, for
    both members; then ``lpray smooth`` of those two tables into the bucket."""
    video = bucket["videos"][0]
    for k in (0, 1):
        code = cli.main(
            [
                "predict",
                f"s3://lpray-test/ensemble/member-{k}",
                f"s3://lpray-test/corpus/{video.name}",
                "--out",
                f"s3://lpray-test/predictions/member-{k}",
            ]
        )
        assert code == 0, capsys.readouterr().err
        table = read_pose_csv(f"s3://lpray-test/predictions/member-{k}/{video.stem}.csv")
        network = load_network(bucket["local_ensemble"] / f"member-{k}", "cpu")
        expected, _ = predict_video_arrays(network, str(video))
        np.testing.assert_allclose(table_to_arrays(table)[0], expected, atol=1e-3)
        assert s3.exists(f"lpray-test/predictions/member-{k}/{video.stem}.metrics.csv")
    members = [f"s3://lpray-test/predictions/member-{k}/{video.stem}.csv" for k in (0, 1)]
    code = cli.main(["smooth", *members, "--out", "s3://lpray-test/smooth/eks.csv"])
    assert code == 0, capsys.readouterr().err
    smoothed = read_pose_csv("s3://lpray-test/smooth/eks.csv")
    assert len(smoothed) == 40
    assert "x_posterior_var" in set(smoothed.columns.get_level_values(2))


def test_local_copy_fetches_what_prediction_needs_and_a_retrained_model_anew(s3, tmp_path):
    """A model directory in the bucket is copied without its resume checkpoint and logs; the
    copy is reused while the stored files are unchanged and fetched again once they change."""
    from lpray.io.storage import local_copy

    base = "lpray-test/copy-me/member-0"
    s3.pipe(f"{base}/config.yaml", b"model: {}\n")
    s3.pipe(f"{base}/checkpoints/best.ckpt", b"weights v1")
    s3.pipe(f"{base}/checkpoints/last.ckpt", b"resume state")
    s3.pipe(f"{base}/logs/metrics.csv", b"epoch\n0\n")
    first = local_copy(f"s3://{base}", tmp_path)
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == [".complete", "checkpoints/best.ckpt", "config.yaml"]
    assert local_copy(f"s3://{base}", tmp_path) == first
    s3.pipe(f"{base}/checkpoints/best.ckpt", b"weights v2, retrained")
    second = local_copy(f"s3://{base}", tmp_path)
    assert second != first
    assert (second / "checkpoints" / "best.ckpt").read_bytes() == b"weights v2, retrained"
    with pytest.raises(FileNotFoundError, match="nothing stored"):
        local_copy("s3://lpray-test/no-such-model", tmp_path)

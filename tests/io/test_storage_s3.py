"""Object storage end to end against a real S3-protocol server (moto's server mode, s3fs as the
client): corpus tracking with the videos, the ensemble and the outputs in a bucket, and
``lpray predict`` / ``lpray smooth`` on URLs. Workers are separate Ray processes, so what they
read and write goes over the network to the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lpray import cli
from lpray.data.synthetic import load_synthetic_project
from lpray.inference.network import load_network
from lpray.inference.video import predict_video_arrays
from lpray.io.tables import read_pose_csv, table_to_arrays
from lpray.pipeline import STAGES
from lpray.track.corpus import TaskResources, track_corpus
from lpray.track.tasks import TrackSettings

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


# -- the pipeline, Ray Train and an outage, with the bucket as the only storage ----------------

SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]


def stored_listing(s3, prefix: str) -> dict[str, str]:
    """Every object under ``prefix`` -> its ETag (a rewritten object gets a new one)."""
    s3.invalidate_cache()
    return {path: info["ETag"] for path, info in s3.find(prefix, detail=True).items()}


def assert_no_secret(s3, prefix: str) -> None:
    """The secret key is in no object lpray, Ray or Tune wrote (pickles and logs included)."""
    for path in s3.find(prefix):
        assert SECRET.encode() not in s3.cat(path), path


def check_stored_run(s3, run: str, trials: int, members: int) -> dict[str, dict]:
    """Every stage's outputs are objects in the bucket; returns the stage markers."""
    s3.invalidate_cache()
    markers = {s: json.loads(s3.cat(f"{run}/stages/{s}.json")) for s in STAGES}
    sweep = markers["sweep"]
    assert sweep["experiment_dir"].startswith(f"s3://{run}/sweep/")
    report = sweep["experiment_dir"].removeprefix("s3://") + "/report"
    trials_table = pd.read_csv(f"s3://{report}/trials.csv")
    assert len(trials_table) == trials and set(trials_table["status"]) == {"completed"}
    for name in ("trials.parquet", "best_configs.csv", "error_vs_labels.png"):
        assert s3.exists(f"{report}/{name}"), name
    assert s3.exists(sweep["best"]["path"].removeprefix("s3://"))
    assert s3.exists(f"{run}/config.yaml") and s3.exists(f"{run}/pipeline.yaml")
    ensemble = json.loads(s3.cat(f"{run}/ensemble/ensemble.json"))
    assert ensemble["n_done"] == members
    params = json.loads(sweep["best"]["params"])  # the ensemble trains the sweep's best
    weight = ensemble["config"]["losses"]["temporal"]["weight"]
    assert weight == pytest.approx(params["losses.temporal.weight"])
    for k in range(members):
        for name in ("summary.json", "config.yaml", "checkpoints/best.ckpt", "metrics.csv"):
            assert s3.exists(f"{run}/ensemble/member-{k}/{name}"), (k, name)
    summary = pd.read_csv(f"s3://{run}/track/summary.csv")
    assert list(summary["status"]) == ["done"]
    video = summary["video"][0]
    for name in ("done.json", f"{video}.eks.csv", f"{video}.labeled.png"):
        assert s3.exists(f"{run}/track/{video}/{name}"), name
    page = s3.cat(f"{run}/report.html").decode()
    assert 'id="ensemble"' in page and video in page and str(sweep["best"]["trial_id"]) in page
    return markers


def submit(cluster, job_id: str, pipeline: Path, *overrides: str) -> str:
    """``ray job submit`` of experiments/submit_pipeline.py; returns the job's log."""
    from test_job_submit import EXCLUDES

    command = ["ray", "job", "submit", f"--address={cluster.dashboard}"]
    command += [f"--submission-id={job_id}", f"--working-dir={REPO}"]
    command += [f"--runtime-env-json={json.dumps({'excludes': EXCLUDES})}", "--"]
    command += [sys.executable, "experiments/submit_pipeline.py", str(pipeline), *overrides]
    try:
        done = subprocess.run(
            command, env=cluster.env, cwd=REPO, capture_output=True, text=True, timeout=JOB_S
        )
        failure = None if done.returncode == 0 else f"exit code {done.returncode}"
    except subprocess.TimeoutExpired:
        failure = f"not finished in {JOB_S} s"
    logs = subprocess.run(
        ["ray", "job", "logs", f"--address={cluster.dashboard}", job_id],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert failure is None, f"ray job submit: {failure}; ray job logs:\n{logs[-6000:]}"
    return logs


REPO = Path(__file__).resolve().parents[2]
JOB_S = 420  # the first run: about 2.5 minutes on 2 loaded cores


def test_ray_train_worker_killed_resumes_from_the_checkpoint_in_the_bucket(
    s3, ray_cluster, tiny_project: Path, tmp_path: Path
) -> None:
    """``lpray train --storage s3://...`` (``train_distributed``): the only worker is SIGKILLed
    in epoch 1; Ray Train restarts it from epoch 0's checkpoint, which exists only in the bucket
    (no local storage folder), and the run completes with every epoch once."""
    import ray.cloudpickle
    import test_distributed as td

    from lpray.config import config_from_dict
    from lpray.train.distributed import train_distributed

    from conftest import tiny_config

    # the narrow ResNet-18 of test_pipeline: small checkpoints through the in-process server
    # (ResNet-18's with its optimizer state is 134 MB)
    values = tiny_config(
        tiny_project,
        tmp_path / "model",
        training={"max_epochs": 2},
        model={"backbone": "resnet18_w16"},
    )
    storage, marker = "s3://lpray-test/train-runs", tmp_path / "killed"
    ray.cloudpickle.register_pickle_by_value(td)  # workers cannot import the test modules
    try:
        model_dir = train_distributed(
            config_from_dict(values),
            num_workers=1,
            storage_path=storage,
            max_failures=1,
            callbacks=[
                td.BatchRecorder(tmp_path / "batches"),
                td.KillOnce(rank=0, epoch=1, batch=1, marker=marker),
            ],
        )
    finally:
        ray.cloudpickle.unregister_pickle_by_value(td)
    metrics = td.check_model_dir(model_dir, epochs=2)
    assert marker.is_file()  # the kill really happened
    records = td.read_records(tmp_path / "batches")
    killed = int(marker.read_text())
    assert sorted(set(records.loc[records["pid"] == killed, "epoch"])) == [0, 1]
    assert set(records.loc[records["pid"] != killed, "epoch"]) == {1}  # resumed after epoch 0
    run = "lpray-test/train-runs/model"
    assert s3.exists(f"{run}/epoch_00001/checkpoint.ckpt")
    stored = pd.read_csv(f"s3://{run}/metrics.csv")
    pd.testing.assert_frame_equal(stored, metrics)
    assert json.loads(s3.cat(f"{run}/summary.json"))["test_pixel_error"] > 0
    assert not (tmp_path / "ray").exists()  # no local storage beside the model directory
    assert_no_secret(s3, run)


def test_store_down_mid_upload_then_back_the_rerun_redoes_the_stage_and_loses_nothing(
    s3, s3_server, ray_cluster, tiny_project: Path, tmp_path: Path
) -> None:
    """The S3 server goes down while the ensemble stage uploads its member (at the request
    that starts ``checkpoints/last.ckpt``, after config.yaml, the fingerprint and best.ckpt):
    the stage fails and is not marked done, the member is not finished (no summary.json). With
    the server back, a rerun skips the finished sweep stage, redoes the ensemble stage (the
    member's finished training, kept on its node, is uploaded again, summary.json last) and
    runs the rest; what was stored before the outage is unchanged."""
    from test_pipeline import write_pipeline

    from lpray.pipeline import load_pipeline, run_pipeline

    run = "lpray-test/outage"
    path = write_pipeline(
        tmp_path,
        tiny_project,
        sweep=None,
        ensemble={"seeds": 1, "cpus_per_member": 1},
        storage={"path": f"s3://{run}"},
        overrides=["training.max_epochs=1"],
    )
    member = f"{run}/ensemble/member-0"
    spec = load_pipeline(path)
    s3_server.stop_on(
        lambda method, where: (
            method in ("PUT", "POST") and where.endswith(f"/{member}/checkpoints/last.ckpt")
        )
    )
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises for "refused"
            run_pipeline(spec, progress=False)
        assert s3_server.trigger is None and s3_server.server is None  # it went down mid-upload
    finally:
        s3_server.stop_on(None)
        if s3_server.server is None:
            s3_server.start()
    assert s3.exists(f"{run}/stages/sweep.json") and not s3.exists(f"{run}/stages/ensemble.json")
    stored = stored_listing(s3, member)
    assert f"{member}/config.yaml" in stored and f"{member}/checkpoints/best.ckpt" in stored
    assert (
        f"{member}/summary.json" not in stored and f"{member}/checkpoints/last.ckpt" not in stored
    )
    before = stored_listing(s3, run)
    kept = {p: s3.cat(p) for p in before if not p.startswith(f"{run}/ensemble/")}

    result = run_pipeline(load_pipeline(path), progress=False)
    assert result.skipped == ["sweep"]
    s3.invalidate_cache()  # (this client listed the run before the rerun wrote)
    for p, data in kept.items():  # nothing stored before the outage was lost or changed
        assert s3.cat(p) == data, p
    for name in ("summary.json", "checkpoints/last.ckpt", "metrics.csv"):
        assert s3.exists(f"{member}/{name}"), name
    assert json.loads(s3.cat(f"{run}/ensemble/ensemble.json"))["n_done"] == 1
    for stage in STAGES:
        assert s3.exists(f"{run}/stages/{stage}.json"), stage
    assert list(pd.read_csv(f"s3://{run}/track/summary.csv")["status"]) == ["done"]


def test_ensemble_in_a_bucket_refuses_a_stored_member_of_other_inputs(
    s3, tiny_project: Path, tmp_path: Path
) -> None:
    """A member folder in the bucket holding a model of another config is refused before any
    member is launched or anything is written, naming the member's URL and the difference."""
    from lpray.config import config_from_dict, save_config
    from lpray.ensemble.run import train_ensemble
    from lpray.train.data import validate_inputs
    from lpray.train.model_dir import ModelDirError, fingerprint

    from conftest import tiny_config

    url = "s3://lpray-test/refuse/ensemble"
    old = config_from_dict(tiny_config(tiny_project, tmp_path / "m", model={"heatmap_sigma": 3}))
    save_config(old, f"{url}/member-0/config.yaml")
    record = fingerprint(old, validate_inputs(old))
    s3.pipe(f"{url.removeprefix('s3://')}/member-0/lpray_fingerprint.json", json.dumps(record))
    s3.pipe(f"{url.removeprefix('s3://')}/member-0/checkpoints/last.ckpt", b"resume state")
    before = stored_listing(s3, "lpray-test/refuse")
    new = config_from_dict(tiny_config(tiny_project, tmp_path / "m", model={"heatmap_sigma": 2}))
    with pytest.raises(ModelDirError, match=rf"{url}/member-0 holds a model .*heatmap_sigma"):
        train_ensemble(new, 2, url, progress=False)
    assert stored_listing(s3, "lpray-test/refuse") == before  # no manifest, nothing written


# Last in this module: the session's in-process cluster (ray_cluster) is up before two more
# Ray nodes start on this machine.
def test_job_submit_runs_the_pipeline_on_two_nodes_in_a_bucket(
    s3, tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``ray job submit`` of the pipeline with ``storage.path=s3://...`` on two ``ray start``
    nodes: every stage's outputs land in the bucket, written from both nodes; a rerun (here, in
    this process: skipping needs no cluster) skips every stage and rewrites no object.

    Each node unpacks the job's working directory into its own temp dir (as on two machines),
    so the driver and the workers of each node run in different folders and share no output
    folder; the only shared disk is the input project (absolute paths, like a dataset baked into
    an image). The nodes reach the server through ``AWS_ENDPOINT_URL`` and the dummy key pair in
    their environment, as cluster nodes reach S3 through theirs.
    """
    from test_multinode import two_node_cluster
    from test_pipeline import write_pipeline

    run = "lpray-test/pipeline-2n"
    path = write_pipeline(tmp_path, tiny_project, storage={"path": f"s3://{run}"})
    # Half-CPU sweep workers: a trial holds 0.01 CPU on its node, so with one trial on each
    # 1-CPU node a 1-CPU worker fits on neither and the sweep waits forever.
    half = "sweep.resources.cpus_per_worker=0.5"
    with two_node_cluster(dashboard=True, worker_ports=40) as cluster:
        started = time.perf_counter()
        logs = submit(cluster, "lpray-s3-first", path, half)
        first_s = time.perf_counter() - started
        markers = check_stored_run(s3, run, trials=2, members=2)
        members = json.loads(s3.cat(f"{run}/ensemble/ensemble.json"))["members"]
        assert len({m["node_id"] for m in members}) == 2, members  # both nodes uploaded one
    before = stored_listing(s3, run)
    capsys.readouterr()
    started = time.perf_counter()
    assert cli.main(["pipeline", str(path), "--no-progress", half]) == 0
    again_s = time.perf_counter() - started
    again = capsys.readouterr().out
    assert again.count("skipped (done before)") == len(STAGES), again[-3000:]
    assert stored_listing(s3, run) == before  # nothing relaunched, no object rewritten
    assert {s: json.loads(s3.cat(f"{run}/stages/{s}.json")) for s in STAGES} == markers
    assert f"report: s3://{run}/report.html" in logs
    assert SECRET not in logs + again
    assert_no_secret(s3, run)
    # nothing of the run on local disk: not beside the config's model directory, not in the
    # folder the pipeline file is in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.yaml", "tiny.yaml"]
    print(f"\ntwo-node pipeline in a bucket: {first_s:.0f} s, rerun {again_s:.0f} s")

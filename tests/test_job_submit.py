"""``ray job submit`` for real: a head node of its own, a tiny training job, its model directory.

The head node runs in a subprocess (``ray start --head --block``) with its own ports and temp
dir, so it never attaches to the session's in-process cluster nor to other Ray instances on the
machine. It is stopped by signalling the process group of the ``ray start`` process this test
started (``start_new_session``): ``ray stop`` would kill every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lpray.io.layout import ModelDir

from conftest import tiny_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# Kept out of the job's upload (the job server refuses packages over 512 MiB, and small is fast).
EXCLUDES = [".venv/", ".git/", "outputs/", ".carry/", "bench/", "docs/", "**/__pycache__/"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_env() -> dict[str, str]:
    """This venv's ``ray`` and python first, no inherited cluster address, auth off."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group ``ray start`` leads: this test's own session
    (GCS, raylet, dashboard, workers), as ``ray stop`` would do for every Ray process here."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)  # let the group's other members exit too before checking again


@pytest.fixture
def head_node() -> Iterator[str]:
    """A Ray head node of its own with a dashboard; yields the job submission address."""
    temp_dir = tempfile.mkdtemp(prefix="lpr", dir="/tmp")  # short: unix socket paths are limited
    dashboard = free_port()
    ports = {
        "port": free_port(),
        "dashboard-port": dashboard,
        "ray-client-server-port": free_port(),
        "dashboard-agent-listen-port": free_port(),
        "dashboard-agent-grpc-port": free_port(),
        "metrics-export-port": free_port(),
        "runtime-env-agent-port": free_port(),
        "node-manager-port": free_port(),
        "object-manager-port": free_port(),
    }
    command = [
        "ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        *[f"--{name}={port}" for name, port in ports.items()],
    ]
    log = open(Path(temp_dir) / "ray_start.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command, env=ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(f"{address}/api/version", seconds=90)
        yield address
    finally:
        stop(process)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_trains_a_model(head_node: str, tiny_project: Path, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    model_dir = tmp_path / "model"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_project, model_dir)))
    storage = tmp_path / "storage"
    entrypoint = [
        sys.executable,
        "experiments/submit_train.py",
        str(config),
        "training.max_epochs=2",
        "--workers=2",
        "--cpus-per-worker=0.5",
        f"--storage={storage}",
    ]
    submit = subprocess.run(
        [
            "ray",
            "job",
            "submit",
            f"--address={head_node}",
            f"--working-dir={REPO}",
            f"--runtime-env-json={json.dumps({'excludes': EXCLUDES})}",
            "--",
            *entrypoint,
        ],
        env=ray_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    jobs = JobSubmissionClient(head_node).list_jobs()
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED], output[-4000:]

    # The model directory is complete and its numbers are the run's.
    metrics = pd.read_csv(ModelDir(model_dir).metrics)
    assert list(metrics["epoch"]) == [0, 1]
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv"):
        assert (model_dir / name).is_file(), name
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert summary["best_val_pixel_error"] == pytest.approx(metrics["val_pixel_error"].min())
    assert summary["train_steps"] == metrics["step"].iloc[-1] > 0
    # Checkpoints and metrics are on storage too, under the run named after the model directory.
    run = storage / "model"
    # (training.keep_checkpoints' default keeps the latest and the best epoch's checkpoint)
    best = int(metrics.loc[metrics["val_pixel_error"].idxmin(), "epoch"])
    kept = sorted(p.name for p in run.glob("epoch_*"))
    assert kept == sorted({f"epoch_{best:05d}", "epoch_00001"})
    pd.testing.assert_frame_equal(pd.read_csv(ModelDir(run).metrics), metrics)
    assert f"model directory: {model_dir}" in output  # the driver's own report reached the CLI

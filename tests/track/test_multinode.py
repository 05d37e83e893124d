"""Corpus tracking across two real Ray nodes on this machine.

The cluster is started with ``ray start`` (a head and a second node, each with its own ports and
temp dir, so no other Ray on the machine is touched or found), the tracking runs in a separate
process connected to it through ``RAY_ADDRESS``, and only the processes started here are stopped,
by process group and then by PID. The in-process session cluster of other tests is not used.
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
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_job_submit import ray_env, wait_for

from lpray.config import config_from_dict
from lpray.data.synthetic import load_synthetic_project
from lpray.train.fit import train

from conftest import tiny_config

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (bound together, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def node_ports(ports: list[int]) -> list[str]:
    """Every port a node opens, explicit, so nothing collides with another Ray here."""
    names = (
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
    )
    options = [f"--{name}={port}" for name, port in zip(names, ports)]
    return options + [f"--worker-port-list={','.join(map(str, ports[len(names) :]))}"]


def stop(process: subprocess.Popen, temp_dir: Path) -> None:
    """Stop a ``ray start --block`` process group, then any straggler of this cluster by PID."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in pids_mentioning(str(temp_dir)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (this cluster's temp dir: only our processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class Cluster:
    """A running :func:`two_node_cluster`.

    Attributes:
        address: the head's GCS address (``RAY_ADDRESS`` for a driver).
        env: the environment the nodes run in (no ``RAY_ADDRESS``, auth off).
        temp: the folder holding each node's temp dir and ``ray start`` log.
        dashboard: the head's dashboard / job server URL, when started with one.
    """

    address: str
    env: dict[str, str]
    temp: Path
    dashboard: str | None = None


# A node starts in ~5 s on an idle 2-core machine; a loaded one (another Ray session's workers
# still exiting) has needed over 90 s.
NODE_START_S = 240


@contextmanager
def two_node_cluster(dashboard: bool = False, worker_ports: int = 16) -> Iterator[Cluster]:
    """A head (1 CPU) and a second node (1 CPU, resource ``node2``), each with its own temp dir.

    Own temp dirs, as on two machines: nodes sharing one unpack a job's ``working_dir`` into the
    same ``runtime_resources`` folder, and each node's runtime-env agent deletes and re-extracts it
    when it first sets the job up (``overwrite=True``), under the feet of processes of the other
    node already importing from it.

    Args:
        dashboard: start the head's dashboard (and job server) too.
        worker_ports: worker processes each node can run at once (one port each).
    """
    temp = Path(tempfile.mkdtemp(prefix="lprmn", dir="/tmp"))  # short: Ray's socket paths
    env = ray_env()
    per_node = 6 + worker_ports
    ports = free_ports(3 + 2 * per_node)
    gcs, client, dashboard_port = ports[:3]
    head_args = ["--head", f"--port={gcs}", f"--ray-client-server-port={client}"]
    if dashboard:
        head_args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        head_args.append(f"--dashboard-port={dashboard_port}")
    else:
        head_args.append("--include-dashboard=false")
    second_args = [f"--address=127.0.0.1:{gcs}", "--resources", '{"node2": 1}']
    processes = []
    try:
        for k, extra in enumerate((head_args, second_args)):
            log = open(temp / f"node{k}.log", "w")  # noqa: SIM115 - the process holds it
            args = [RAY, "start", *extra, "--block", "--num-cpus=1", "--disable-usage-stats"]
            args += [f"--temp-dir={temp / f'n{k}'}", f"--object-store-memory={100 * 1024**2}"]
            args += node_ports(ports[3 + per_node * k : 3 + per_node * (k + 1)])
            processes.append(
                subprocess.Popen(
                    args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            deadline = time.time() + NODE_START_S
            while "Ray runtime started" not in (temp / f"node{k}.log").read_text():
                assert processes[-1].poll() is None, (temp / f"node{k}.log").read_text()
                assert time.time() < deadline, f"ray start did not come up in {NODE_START_S} s"
                time.sleep(0.5)
        url = f"http://127.0.0.1:{dashboard_port}" if dashboard else None
        if url:
            wait_for(f"{url}/api/version", seconds=90)
        yield Cluster(f"127.0.0.1:{gcs}", env, temp, url)
    finally:
        for process in reversed(processes):
            stop(process, temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    with two_node_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def model(tiny_project, tmp_path_factory):
    """One 1-epoch model, trained in this process (no Ray): an ensemble of one."""
    out = tmp_path_factory.mktemp("mn") / "model"
    return train(config_from_dict(tiny_config(tiny_project, out, training={"max_epochs": 1})))


DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import ray
    ray.init(log_to_driver=False)  # RAY_ADDRESS: the two-node cluster
    deadline = time.time() + 60
    while sum(n["Alive"] for n in ray.nodes()) < 2:
        assert time.time() < deadline, "second node never joined"
        time.sleep(0.5)
    from lpray import cli
    code = cli.main(sys.argv[2:])
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    json.dump({"code": code, "nodes": nodes}, open(sys.argv[1], "w"))
    """
)


def test_corpus_runs_on_both_nodes(two_nodes, model, tiny_project, tmp_path):
    address, env = two_nodes.address, two_nodes.env
    project = load_synthetic_project(tiny_project)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = [*project.train_videos, *project.test_videos]
    for k in range(4):
        shutil.copy(sources[k % len(sources)], corpus / f"clip{k}.mp4")
    out, report = tmp_path / "tracks", tmp_path / "report.json"
    args = [str(model), str(corpus / "*.mp4"), "--out", str(out)]
    args += ["--cpus-per-task", "0.5", "--overlay", "none", "--no-progress"]
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-c", DRIVER, str(report), "track", *args],
        env={**env, "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["code"] == 0 and len(result["nodes"]) == 2
    used = set()
    for k in range(4):
        done = json.loads((out / f"clip{k}" / "done.json").read_text())
        assert done["status"] == "done" and done["frames"] == 40
        used |= set(done["predict_nodes"]) | {done["smooth_node"]}
    assert used == set(result["nodes"])  # both nodes ran tasks
    print(f"\ntwo-node corpus run: {seconds:.1f} s (subprocess, including connect)")
    print(completed.stdout[-500:])

"""Tracking a video corpus with an ensemble on Ray: ``lpray track ENSEMBLE_DIR VIDEOS... --out``.

Work flows through three kinds of Ray work (:mod:`lpray.track.tasks`):

1. a CPU probe task per video validates it and counts its frames; a corrupt video fails here;
2. long-lived tracking workers (Ray actors, one per GPU by default, or per GPU fraction) hold
   every member, loaded once, and predict segments (a video, or a piece of a long one) with all
   members on one decoding;
3. a CPU EKS task per video takes its segments' result refs as arguments: Ray starts it when the
   last segment is ready, so smoothing and writing overlap the prediction of later videos and
   never sit on a worker's critical path; no prediction passes through the driver.

Why actors fed by the driver rather than Ray Data (``map_batches`` with an actor pool): a video's
segments must meet again in one EKS task (in Ray Data a group-by, i.e. a shuffle), a failed video
must become a record while the rest go on (Ray Data fails the dataset or drops blocks), and the
results are a few MB per video, so the pipelining Ray Data offers reduces to what this does:
each worker has at most ``videos_in_flight + 1`` calls submitted (backpressure; Ray's "limit
pending tasks" pattern with ``ray.wait``), the next segment goes to the least loaded worker.
Ray Data's frame-per-row video reader is not an option (CPU decoding, frames through the object
store).

Nothing is lost (see :mod:`lpray.track.manifest` for the layout):

- a rerun skips every video with a ``done.json`` from the same members, launching nothing;
- a video that fails (corrupt, unreadable, truncated) is recorded with its error, in
  ``failed.json``, the summary and the manifest, while the others finish; a rerun retries it,
  except a video whose file is unusable (a :class:`~lpray.data.video.VideoError`) and unchanged
  since (``retry_failed`` forces it);
- a worker process or node that dies is restarted by Ray and its calls are retried
  (``max_retries``); a task's worker that dies is retried too.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from tqdm.auto import tqdm

from lpray.data.video import VideoError
from lpray.ensemble.manifest import trained_members
from lpray.io.layout import ModelDir
from lpray.io.storage import expand, is_local, join, local_copy, local_path
from lpray.raywork import describe_error, task_exception, task_options
from lpray.track.manifest import (
    VideoJob,
    finished_jobs,
    known_bad_inputs,
    plan_jobs,
    write_corpus_manifest,
    write_failed,
    write_summary,
)
from lpray.track.tasks import TrackSettings, TrackWorker, plan_segments, probe_video, smooth_video


@dataclass(frozen=True)
class TaskResources:
    """Resources of the tracking workers and tasks.

    Attributes:
        cpus: CPUs of each probe and EKS task, and of each tracking worker (decoding threads
            and, without GPUs, the networks).
        gpus: GPUs of each tracking worker (a fraction packs several workers onto one GPU).
            None: 1 when the cluster has GPUs, else 0.
        max_retries: restarts of a worker (and retries of its calls) or task whose process or
            node died.
        spread: spread workers over nodes (``SPREAD``) instead of packing them.
        workers: tracking workers (None: one per ``gpus`` of the cluster's GPUs; without GPUs as
            many as the CPUs allow while leaving one task's CPUs for probes and EKS).
        videos_in_flight: segments a worker works on at once (their decoders overlap the other's
            network passes).
    """

    cpus: float = 1.0
    gpus: float | None = None
    max_retries: int = 3
    spread: bool = True
    workers: int | None = None
    videos_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(
                f"--workers must be >= 1 (or left out: one per GPU), got {self.workers}"
            )
        if self.videos_in_flight < 1:
            raise ValueError(f"--videos-in-flight must be >= 1, got {self.videos_in_flight}")


@dataclass
class CorpusResult:
    """What a call to :func:`track_corpus` did."""

    out: str
    rows: list[dict[str, Any]]  # one per video, input order: done.json or failure records
    launched_tasks: int  # Ray tasks and worker calls started (0 on a rerun of a finished corpus)
    skipped: int  # videos not run: already finished, or known-bad files unchanged since
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    workers: int = 0

    @property
    def done(self) -> list[str]:
        return [r["video"] for r in self.rows if r["status"] == "done"]


def model_view_groups(model_dir: Path) -> list[list[str]]:
    """The view groups a model was trained with: its config's, else its synthetic project's.

    A non-empty result makes tracking use the multi-view EKS.
    """
    from lpray.config import load_config
    from lpray.data.synthetic_project import load_synthetic_project

    cfg = load_config(ModelDir(model_dir).config)
    if cfg.data.view_groups is not None:
        return [list(g) for g in cfg.data.view_groups]
    root = Path(cfg.data.synthetic_dir if cfg.data.root == "synthetic" else cfg.data.root)
    if (root / "project.yaml").is_file():
        return load_synthetic_project(root).view_groups
    return []


def _member_location(source: str, local_root: Path, model_dir: Path) -> str:
    """Where workers load a member from: its local path, or its URL when the ensemble is on an
    object store (each worker fetches it to its own node)."""
    if is_local(source):
        return str(model_dir)
    relative = model_dir.resolve().relative_to(local_root.resolve()).as_posix()
    return source.rstrip("/") if relative == "." else join(source, relative)


def _absolute(path: str) -> str:
    """Local paths made absolute (workers do not share the driver's working directory)."""
    return str(local_path(path).expanduser().resolve()) if is_local(path) else path


def worker_count(resources: TaskResources, gpus: float, items: int) -> int:
    """How many tracking workers to start for ``items`` segments (see :class:`TaskResources`)."""
    if resources.workers is not None:
        wanted = resources.workers
    elif gpus > 0:
        wanted = max(1, math.floor(ray.cluster_resources().get("GPU", 0) / gpus + 1e-9))
    else:
        spare = ray.cluster_resources().get("CPU", 1) - resources.cpus
        wanted = max(1, math.floor(spare / max(resources.cpus, 1e-3) + 1e-9))
    return max(1, min(wanted, items))


class _Dispatch:
    """The driver's loop: probe, feed workers with backpressure, smooth, collect records."""

    def __init__(
        self,
        jobs: list[VideoJob],
        settings: TrackSettings,
        resources: TaskResources,
        model_dirs: list[str],
        gpus: float,
        before_predict: Callable[[str], None] | None,
    ) -> None:
        self.settings, self.resources = settings, resources
        self.before = before_predict
        cpu_task = task_options(resources.cpus, 0.0, resources.max_retries)
        self.probe = ray.remote(probe_video).options(**cpu_task)
        self.smooth = ray.remote(smooth_video).options(**cpu_task)
        self.jobs = {job.key: job for job in jobs}
        self.queue: deque[VideoJob] = deque(jobs)
        self.probes: dict[ray.ObjectRef, VideoJob] = {}
        self.segments: deque[tuple[VideoJob, int, int, ray.ObjectRef]] = deque()
        self.expected: dict[str, int] = {}
        self.submitted: dict[str, list[ray.ObjectRef]] = {}
        self.calls: dict[ray.ObjectRef, int] = {}
        self.smoothing: dict[ray.ObjectRef, VideoJob] = {}
        self.launched = 0
        self.settings_ref = ray.put(settings)
        self.model_dirs, self.gpus = model_dirs, gpus
        self.workers: list[Any] = []
        self.load: list[int] = []

    def start_workers(self, count: int) -> None:
        r = self.resources
        options: dict[str, Any] = {
            "num_cpus": r.cpus,
            "num_gpus": self.gpus,
            "max_restarts": r.max_retries,
            "max_task_retries": r.max_retries,
            "max_concurrency": r.videos_in_flight,
        }
        if r.spread:
            options["scheduling_strategy"] = "SPREAD"
        actor = ray.remote(TrackWorker).options(**options)
        self.workers = [actor.remote(self.model_dirs, self.settings) for _ in range(count)]
        self.load = [0] * count

    def _fill(self) -> None:
        # probes run ahead of the workers, bounded so a huge corpus is not all probed at once
        while self.queue and len(self.probes) < 2 * max(1, len(self.workers)) + 2:
            job = self.queue.popleft()
            self.probes[self.probe.remote(job)] = job
            self.launched += 1
        depth = self.resources.videos_in_flight + 1
        while self.segments and self.workers and min(self.load) < depth:
            w = min(range(len(self.load)), key=self.load.__getitem__)
            job, start, stop, info = self.segments.popleft()
            ref = self.workers[w].predict.remote(job, start, stop, self.before, info)
            self.calls[ref] = w
            self.load[w] += 1
            self.launched += 1
            refs = self.submitted.setdefault(job.key, [])
            refs.append(ref)
            if len(refs) == self.expected[job.key]:
                self.smoothing[self.smooth.remote(job, self.settings_ref, *refs)] = job
                self.launched += 1
                del self.submitted[job.key]

    def run(self, progress: bool):  # noqa: ANN201 - generator of (job, record, error)
        with tqdm(total=len(self.jobs), desc="videos", unit="videos", disable=not progress) as bar:
            self._fill()
            while self.probes or self.calls or self.smoothing or self.queue or self.segments:
                waiting = [*self.probes, *self.calls, *self.smoothing]
                [ref], _ = ray.wait(waiting, num_returns=1)
                if ref in self.calls:  # a worker call ended (its failure reaches the EKS task)
                    self.load[self.calls.pop(ref)] -= 1
                elif ref in self.probes:
                    job = self.probes.pop(ref)
                    try:
                        n_frames = ray.get(ref).n_frames
                    except Exception as err:  # noqa: BLE001 - one bad video must not stop the rest
                        bar.update(1)
                        yield job, None, task_exception(err)
                    else:  # the probe's result travels to the workers as its ref
                        pieces = plan_segments(n_frames, self.settings.segment_frames)
                        self.expected[job.key] = len(pieces)
                        self.segments.extend((job, a, b, ref) for a, b in pieces)
                else:
                    job = self.smoothing.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - one bad video must not stop the rest
                        yield job, None, task_exception(err)
                    else:
                        yield job, record, None
                    bar.update(1)
                self._fill()

    def stop_workers(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


def track_corpus(
    ensemble_dir: str | Path,
    videos: list[str],
    out: str | Path,
    settings: TrackSettings | None = None,
    resources: TaskResources | None = None,
    progress: bool = True,
    before_predict: Callable[[str], None] | None = None,
    retry_failed: bool = False,
) -> CorpusResult:
    """Predict and smooth every video of a corpus; resumable, one bad video fails alone.

    Args:
        ensemble_dir: an ensemble folder (``lpray ensemble``) or a single model directory.
        videos: paths, globs or URLs (``s3://``, ``gs://``, ``file://``); remote videos are
            downloaded inside the tasks and workers.
        out: the output folder (local or URL).
        settings: prediction, smoothing and output settings (member names and view groups are
            filled in from the ensemble).
        resources: workers, per-task resources and retries.
        progress: show a progress bar over finished videos.
        before_predict: called inside every worker call with the video path before any work
            (instrumentation and fault-injection tests).
        retry_failed: also retry videos whose unchanged file failed as unusable before.

    Returns:
        A :class:`CorpusResult`; ``summary.csv``/``.parquet`` and ``manifest.json`` are written
        under ``out``.
    """
    from lpray.raywork import ensure_ray

    started = time.perf_counter()
    source = str(ensemble_dir)
    local_root = local_copy(source)  # an ensemble on an object store: read here from a copy
    members = trained_members(local_root)
    model_dirs = [_member_location(source, local_root, m.model_dir) for m in members]
    settings = settings or TrackSettings()
    groups = settings.view_groups or model_view_groups(members[0].model_dir)
    settings = replace(settings, members=[m.name for m in members], view_groups=groups)
    resources = resources or TaskResources()
    out = _absolute(str(out))
    jobs = plan_jobs([_absolute(v) for v in expand(list(videos))], out)
    finished = finished_jobs(jobs, settings.members)
    known_bad = {} if retry_failed else known_bad_inputs(jobs, settings.members)
    records: dict[str, dict[str, Any]] = {**known_bad, **finished}
    todo = [job for job in jobs if job.key not in records]
    run = {
        "ensemble": _absolute(str(ensemble_dir)),
        "members": settings.members,
        "smooth_param": settings.smooth_param,
        "multiview": bool(settings.view_groups),
        "resources": dict(vars(resources)),
    }
    pending = {"status": "pending"}
    write_corpus_manifest(
        out, run, [records.get(j.key, {"video": j.key, "path": j.path, **pending}) for j in jobs]
    )
    launched = workers = 0
    if todo:
        ensure_ray()
        run["ray_ready_at"] = time.time()
        gpus = resources.gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        resources = replace(resources, gpus=gpus)
        workers = worker_count(resources, gpus, len(todo))
        run["resources"] = {**vars(resources), "workers": workers}
        dispatch = _Dispatch(todo, settings, resources, model_dirs, gpus, before_predict)
        dispatch.start_workers(workers)
        try:
            for job, record, error in dispatch.run(progress):
                if error is not None:
                    bad_input = isinstance(error, VideoError)
                    record = write_failed(job, describe_error(error), bad_input, settings.members)
                records[job.key] = record
        finally:
            dispatch.stop_workers()
        launched = dispatch.launched
    rows = [records[job.key] for job in jobs]
    failed = [r["video"] for r in rows if r["status"] != "done"]
    write_summary(out, rows)
    write_corpus_manifest(out, run, rows)
    skipped = len(jobs) - len(todo)
    return CorpusResult(
        out, rows, launched, skipped, time.perf_counter() - started, failed, workers
    )

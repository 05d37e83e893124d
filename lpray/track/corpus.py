"""Tracking a video corpus with an ensemble on Ray: ``lpray track ENSEMBLE_DIR VIDEOS... --out``.

Per video, one prediction task per ensemble member (each may take a GPU) and one EKS task that
takes the members' result refs as arguments: Ray starts the EKS task when the last member of
that video finishes, so smoothing of early videos overlaps prediction of later ones, and no
prediction passes through the driver. Prediction tasks are spread over the cluster's nodes.

Nothing is lost (see :mod:`lpray.track.manifest` for the layout):

- a rerun skips every video with a ``done.json`` from the same members, launching no task;
- a video that fails (corrupt, unreadable, too short) is recorded with its error, in
  ``failed.json``, the summary and the manifest, while the others finish; a rerun retries it,
  except a video whose file is unusable (a :class:`~lpray.data.video.VideoError`) and unchanged
  since (``retry_failed`` forces it);
- a task whose worker process or node dies is retried by Ray (``max_retries``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from lpray.data.video import VideoError
from lpray.ensemble.manifest import TrainedMember, trained_members
from lpray.ensemble.raywork import as_completed, describe_error, gpus_or_default, task_options
from lpray.io.storage import expand, is_local, local_path
from lpray.track.manifest import (
    VideoJob,
    finished_jobs,
    known_bad_inputs,
    plan_jobs,
    write_corpus_manifest,
    write_failed,
    write_summary,
)
from lpray.track.tasks import TrackSettings, predict_member, smooth_video


@dataclass(frozen=True)
class TaskResources:
    """Resources per task.

    Attributes:
        cpus: CPUs of every task (decoding threads and, without GPUs, the network).
        gpus: GPUs of each prediction task (fractions pack several onto one GPU). None: half a
            GPU when the cluster has GPUs (two tasks per GPU: one decodes while the other
            computes), else none.
        max_retries: Ray retries of a task whose worker or node died.
        spread: spread prediction tasks over nodes (``SPREAD``) instead of packing them.
    """

    cpus: float = 1.0
    gpus: float | None = None
    max_retries: int = 3
    spread: bool = True


@dataclass
class CorpusResult:
    """What a call to :func:`track_corpus` did."""

    out: str
    rows: list[dict[str, Any]]  # one per video, input order: done.json or failure records
    launched_tasks: int  # Ray tasks started by this call (0 on a rerun of a finished corpus)
    skipped: int  # videos not run: already finished, or known-bad files unchanged since
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[str]:
        return [r["video"] for r in self.rows if r["status"] == "done"]


def model_view_groups(model_dir: Path) -> list[list[str]]:
    """The view groups a model was trained with: its config's, else its synthetic project's.

    A non-empty result makes tracking use the multi-view EKS.
    """
    from lpray.config import load_config
    from lpray.data.synthetic import load_synthetic_project

    cfg = load_config(model_dir / "config.yaml")
    if cfg.data.view_groups is not None:
        return [list(g) for g in cfg.data.view_groups]
    root = Path(cfg.data.synthetic_dir if cfg.data.root == "synthetic" else cfg.data.root)
    if (root / "project.yaml").is_file():
        return load_synthetic_project(root).view_groups
    return []


def _absolute(path: str) -> str:
    """Local paths made absolute (workers do not share the driver's working directory)."""
    return str(local_path(path).expanduser().resolve()) if is_local(path) else path


def _launch(
    jobs: list[VideoJob],
    members: list[TrainedMember],
    settings: TrackSettings,
    resources: TaskResources,
    before_predict: Callable[[str], None] | None,
) -> dict[ray.ObjectRef, VideoJob]:
    """Start every job's member predictions and its EKS task; returns EKS ref -> job."""
    predict_options = task_options(
        resources.cpus,
        resources.gpus,
        resources.max_retries,
        **({"scheduling_strategy": "SPREAD"} if resources.spread else {}),
    )
    predict = ray.remote(predict_member).options(**predict_options)
    smooth = ray.remote(smooth_video).options(
        **task_options(resources.cpus, 0.0, resources.max_retries)
    )
    settings_ref = ray.put(settings)
    refs = {}
    for job in jobs:
        member_refs = [predict.remote(job, m, settings_ref, before_predict) for m in members]
        refs[smooth.remote(job, settings_ref, *member_refs)] = job
    return refs


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
            downloaded inside the tasks.
        out: the output folder (local or URL).
        settings: smoothing and output settings (member names and view groups are filled in
            from the ensemble).
        resources: per-task resources and retries.
        progress: show a progress bar over finished videos.
        before_predict: called inside every prediction task with the video path before any
            work (instrumentation and fault-injection tests).
        retry_failed: also retry videos whose unchanged file failed as unusable before.

    Returns:
        A :class:`CorpusResult`; ``summary.csv``/``.parquet`` and ``manifest.json`` are written
        under ``out``.
    """
    from lpray.train.distributed import ensure_ray

    started = time.perf_counter()
    members = trained_members(ensemble_dir)
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
    if todo:
        ensure_ray()
        resources = replace(resources, gpus=gpus_or_default(resources.gpus, 0.5))
        run["resources"] = dict(vars(resources))
        refs = _launch(todo, members, settings, resources, before_predict)
        for job, record, error in as_completed(refs, progress, desc="videos"):
            if error is not None:
                bad_input = isinstance(error, VideoError)
                record = write_failed(job, describe_error(error), bad_input, settings.members)
            records[job.key] = record
    rows = [records[job.key] for job in jobs]
    failed = [r["video"] for r in rows if r["status"] != "done"]
    write_summary(out, rows)
    write_corpus_manifest(out, run, rows)
    launched = len(todo) * (len(members) + 1)
    skipped = len(jobs) - len(todo)
    return CorpusResult(out, rows, launched, skipped, time.perf_counter() - started, failed)

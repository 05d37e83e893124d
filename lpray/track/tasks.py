"""The work of corpus tracking, one video at a time: what each Ray task runs.

Two kinds of task per video: :func:`predict_member` (one per ensemble member; GPU where given)
and :func:`smooth_video` (EKS over the members' results, then the labeled outputs and, last,
``done.json``). They are plain functions so they can be tested and reused without Ray;
:mod:`lpray.track.corpus` wraps them in ``ray.remote``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lpray.ensemble.manifest import TrainedMember
from lpray.ensemble.raywork import limit_torch_threads, node_id
from lpray.io.storage import filesystem, is_local, local_path
from lpray.io.tables import arrays_to_table, write_pose_csv, write_pose_parquet
from lpray.track.manifest import VideoJob, write_done

OVERLAYS = ("strip", "video", "both", "none")


@dataclass(frozen=True)
class TrackSettings:
    """How every video is tracked.

    Attributes:
        smooth_param: EKS smoothing parameter s for every keypoint; None fits it per keypoint.
        chunk_size: frames per forward pass.
        backend: video reader (``auto``, ``pyav``, ``dali``).
        overlay: ``strip`` (PNG of sample frames), ``video`` (labeled mp4), ``both`` or ``none``.
        strip_frames: frames in the PNG strip.
        view_groups: multi-view body parts; non-empty selects the multi-view EKS.
        members: the ensemble's member names, recorded in ``done.json`` (a video finished by
            other members is redone).
    """

    smooth_param: float | None = None
    chunk_size: int = 64
    backend: str = "auto"
    overlay: str = "strip"
    strip_frames: int = 6
    view_groups: list[list[str]] = field(default_factory=list)
    members: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.overlay not in OVERLAYS:
            raise ValueError(f"overlay must be one of {list(OVERLAYS)}, got {self.overlay!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk size must be >= 1, got {self.chunk_size}")
        if self.smooth_param is not None and not self.smooth_param > 0:
            raise ValueError(f"smoothing parameter must be > 0, got {self.smooth_param}")


@contextlib.contextmanager
def local_video(path: str) -> Iterator[str]:
    """A local file for ``path``: itself when local, else a download removed afterwards.

    Decoders (PyAV, DALI) need a seekable local file; object stores are not one.
    """
    if is_local(path):
        yield str(local_path(path))
        return
    fs, inner = filesystem(path)
    with tempfile.TemporaryDirectory(prefix="lpray-video-") as tmp:
        target = os.path.join(tmp, os.path.basename(inner) or "video")
        fs.get(inner, target)
        yield target


def predict_member(
    job: VideoJob,
    member: TrainedMember,
    settings: TrackSettings,
    before: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Predict every frame of one video with one member; write its tables.

    Args:
        job: the video.
        member: the ensemble member.
        settings: chunk size and reader.
        before: called with the video path first (instrumentation, fault-injection tests).

    Returns:
        ``xy`` (T, K, 2), ``confidence`` (T, K), ``keypoints``, ``seconds``, ``node_id``.

    Raises:
        VideoError: the video is missing, corrupt or unreadable (checked before any model work).
    """
    from lpray.data.video import validate_video
    from lpray.track.predict import load_trained, predict_video_arrays

    if before is not None:
        before(job.path)
    limit_torch_threads()
    started = time.perf_counter()
    with local_video(job.path) as path:
        validate_video(path)
        trained = load_trained(member.model_dir)
        xy, confidence = predict_video_arrays(trained, path, settings.chunk_size, settings.backend)
    table = arrays_to_table(xy, trained.keypoint_names, confidence, scorer=member.name)
    write_pose_csv(table, job.member_table(member.index, "csv"))
    write_pose_parquet(table, job.member_table(member.index, "parquet"))
    return {
        "member": member.name,
        "index": member.index,
        "xy": xy,
        "confidence": confidence,
        "keypoints": trained.keypoint_names,
        "seconds": time.perf_counter() - started,
        "node_id": node_id(),
    }


def _smooth(
    results: list[dict[str, Any]], settings: TrackSettings
) -> tuple[pd.DataFrame, dict[str, float]]:
    """EKS over the members' predictions (multi-view when the model has view groups)."""
    from lpray.smooth.api import smooth_ensemble, smooth_ensemble_multiview

    tables = [arrays_to_table(r["xy"], r["keypoints"], r["confidence"]) for r in results]
    sources = [r["member"] for r in results]
    if settings.view_groups:
        return smooth_ensemble_multiview(
            tables, settings.view_groups, settings.smooth_param, sources=sources
        )
    return smooth_ensemble(tables, settings.smooth_param, sources=sources)


def _column_mean(table: pd.DataFrame, coords: tuple[str, ...]) -> float:
    values = table.loc[:, table.columns.get_level_values(2).isin(coords)].to_numpy(dtype=float)
    return float(np.nanmean(values)) if values.size else float("nan")


def _write_overlays(job: VideoJob, xy: np.ndarray, settings: TrackSettings) -> list[str]:
    from lpray.report.overlay import write_frame_strip, write_labeled_video

    written = []
    if settings.overlay == "none":
        return written
    with local_video(job.path) as path:
        if settings.overlay in ("strip", "both"):
            write_frame_strip(path, xy, job.file(".labeled.png"), settings.strip_frames)
            written.append(job.file(".labeled.png"))
        if settings.overlay in ("video", "both"):
            write_labeled_video(path, xy, job.file(".labeled.mp4"))
            written.append(job.file(".labeled.mp4"))
    return written


def smooth_video(
    job: VideoJob, settings: TrackSettings, *results: dict[str, Any]
) -> dict[str, Any]:
    """EKS over one video's member predictions; write its tables, overlays and ``done.json``.

    Args:
        job: the video.
        settings: smoothing and overlay settings.
        *results: the :func:`predict_member` results of every member (Ray passes the values of
            the prediction tasks' object refs here, so this runs only after they all succeed).

    Returns:
        The video's ``done.json`` record (also its row in the corpus summary).
    """
    from lpray.io.tables import table_to_arrays

    started = time.perf_counter()
    table, params = _smooth(list(results), settings)
    write_pose_csv(table, job.file(".eks.csv"))
    write_pose_parquet(table, job.file(".eks.parquet"))
    xy, _ = table_to_arrays(table)
    files = [job.file(".eks.csv"), job.file(".eks.parquet")]
    files += _write_overlays(job, xy, settings)
    smooth_seconds = time.perf_counter() - started
    predict_seconds = sum(r["seconds"] for r in results)
    here = node_id()
    predict_nodes = [r["node_id"] for r in results]
    record = {
        "video": job.key,
        "path": job.path,
        "status": "done",
        "frames": int(len(table)),
        "mean_confidence": _column_mean(table, ("likelihood",)),
        "mean_posterior_var": _column_mean(table, ("x_posterior_var", "y_posterior_var")),
        "seconds": predict_seconds + smooth_seconds,
        "predict_seconds": predict_seconds,
        "smooth_seconds": smooth_seconds,
        "error": None,
        "node_ids": ";".join(sorted(set(predict_nodes + [here]))),
        "predict_nodes": predict_nodes,
        "smooth_node": here,
        "members": settings.members,
        "smooth_param": params,
        "multiview": bool(settings.view_groups),
        "files": files
        + [job.member_table(r["index"], ext) for r in results for ext in ("csv", "parquet")],
    }
    write_done(job, record)
    return record

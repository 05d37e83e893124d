"""A tracked corpus (the output folder of ``lpray track``), read one video at a time.

Only finished videos (those with ``done.json``) are read; the member tables and the EKS table come
from their parquet copies (the CSVs when a parquet copy is missing). ``<video>.metrics.csv``
(per-frame unsupervised-loss metrics, columns ``<metric>|<keypoint>``) is used when present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lpray.errors import UserError
from lpray.io.storage import exists, filesystem, join
from lpray.io.tables import keypoint_names, read_pose_csv, read_pose_parquet, table_to_arrays

log = logging.getLogger(__name__)


class TrackedCorpusError(UserError, ValueError):
    """A folder that is not a usable ``lpray track`` output; the message names it."""


@dataclass(frozen=True)
class TrackedRecord:
    """One finished video of the corpus, as its ``done.json`` describes it."""

    key: str  # the video's output folder name
    video: str  # the video file (local path or URL) the tracking read
    folder: str  # TRACK_DIR/<key>
    frames: int
    members: list[str]


@dataclass
class TrackedVideo:
    """Everything scoring needs of one tracked video (its arrays, not its frames).

    Attributes:
        record: the video's entry.
        keypoints: keypoint names, in table order.
        members_xy: ``(M, T, K, 2)`` each member's keypoints, frame pixels.
        members_confidence: ``(M, T, K)`` each member's confidence.
        eks_xy: ``(T, K, 2)`` the EKS-smoothed keypoints.
        posterior_var: ``(T, K)`` EKS posterior variance, x + y (pixels^2).
        metrics: ``<video>.metrics.csv`` as a table, or None when the folder has none.
    """

    record: TrackedRecord
    keypoints: list[str]
    members_xy: np.ndarray
    members_confidence: np.ndarray
    eks_xy: np.ndarray
    posterior_var: np.ndarray
    metrics: pd.DataFrame | None


def finished_videos(track_dir: str) -> list[TrackedRecord]:
    """The finished videos of a tracked corpus, sorted by key.

    Raises:
        TrackedCorpusError: ``track_dir`` holds no finished video.
    """
    fs, inner = filesystem(track_dir)
    fs.invalidate_cache()
    paths = sorted(fs.glob(join(inner, "*", "done.json")))
    records = []
    for path, raw in (fs.cat(paths) if paths else {}).items():
        try:
            done = json.loads(raw)
        except ValueError as err:
            raise TrackedCorpusError(f"{path}: unreadable done.json ({err})") from err
        key = path.rstrip("/").split("/")[-2]
        if done.get("status") != "done" or not done.get("members"):
            continue
        records.append(
            TrackedRecord(
                key=key,
                video=str(done["path"]),
                folder=join(track_dir, key),
                frames=int(done["frames"]),
                members=list(done["members"]),
            )
        )
    if not records:
        raise TrackedCorpusError(
            f"{track_dir}: no finished video (no <video>/done.json); point select-frames at the "
            "--out folder of `lpray track`"
        )
    return sorted(records, key=lambda r: r.key)


def _table(folder: str, stem: str) -> pd.DataFrame:
    parquet, csv = join(folder, f"{stem}.parquet"), join(folder, f"{stem}.csv")
    if exists(parquet):
        return read_pose_parquet(parquet)
    if exists(csv):
        return read_pose_csv(csv)
    raise TrackedCorpusError(f"{folder}: {stem}.parquet (or .csv) is missing; track it again")


def read_tracked_video(record: TrackedRecord) -> TrackedVideo:
    """Read one finished video's member tables, EKS table and metrics.

    Raises:
        TrackedCorpusError: a table is missing or the tables disagree on frames or keypoints.
    """
    eks = _table(record.folder, f"{record.key}.eks")
    names = keypoint_names(eks)
    eks_xy, _ = table_to_arrays(eks)
    coords = eks.columns.get_level_values(2)
    parts = eks.columns.get_level_values(1)
    values = eks.to_numpy(dtype=float)
    variance = np.zeros(eks_xy.shape[:2])
    for axis in ("x", "y"):
        for k, name in enumerate(names):
            column = np.flatnonzero((parts == name) & (coords == f"{axis}_posterior_var"))
            variance[:, k] += values[:, column[0]] if len(column) else np.nan
    xys, confidences = [], []
    for index in range(len(record.members)):
        table = _table(record.folder, f"{record.key}.rng={index}")
        if keypoint_names(table) != names or len(table) != len(eks):
            raise TrackedCorpusError(
                f"{record.folder}: member table rng={index} has {len(table)} frames and keypoints "
                f"{keypoint_names(table)}, the EKS table {len(eks)} and {names}; track it again"
            )
        xy, confidence = table_to_arrays(table)
        xys.append(xy)
        confidences.append(confidence if confidence is not None else np.ones(xy.shape[:2]))
    metrics_path = join(record.folder, f"{record.key}.metrics.csv")
    metrics = None
    if exists(metrics_path):
        fs, inner = filesystem(metrics_path)
        with fs.open(inner, "r") as handle:
            metrics = pd.read_csv(handle, index_col=0)
        if len(metrics) != len(eks):
            log.warning("%s: %d rows for %d frames; ignored", metrics_path, len(metrics), len(eks))
            metrics = None
    return TrackedVideo(
        record, names, np.stack(xys), np.stack(confidences), eks_xy, variance, metrics
    )


def iter_tracked(records: list[TrackedRecord]) -> Iterator[TrackedVideo]:
    """Each video's arrays in turn (one video in memory at a time)."""
    for record in records:
        yield read_tracked_video(record)

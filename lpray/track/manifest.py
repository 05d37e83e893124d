"""Where corpus tracking writes, and how it knows what is finished.

Layout under ``OUT`` (a local folder or any fsspec URL)::

    OUT/<video>/<video>.rng=<k>.csv|.parquet   member k's predictions
    OUT/<video>/<video>.eks.csv|.parquet       the EKS-smoothed predictions
    OUT/<video>/<video>.labeled.png            sample frames with the smoothed keypoints
    OUT/<video>/<video>.labeled.mp4            the whole video, labeled (optional)
    OUT/<video>/done.json                      written LAST: the video is finished
    OUT/<video>/failed.json                    the error of the latest failed attempt
    OUT/summary.csv|.parquet                   one row per video
    OUT/manifest.json                          the run: ensemble, members, settings, statuses

``done.json`` is the only completion record: every other file of a video is written before it,
each atomically, so a video with ``done.json`` is complete and one without it is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd

from lpray.io.storage import atomic_write, filesystem, join

DONE = "done.json"
FAILED = "failed.json"
SUMMARY_COLUMNS = (
    "video",
    "path",
    "status",
    "frames",
    "mean_confidence",
    "mean_posterior_var",
    "seconds",
    "error",
    "node_ids",
)


def video_stem(path: str) -> str:
    """File name without its last extension (``a/b/mouse.v2.mp4`` -> ``mouse.v2``)."""
    name = PurePosixPath(path.split("://", 1)[-1]).name
    return name.rsplit(".", 1)[0] if "." in name else name


@dataclass(frozen=True)
class VideoJob:
    """One video of the corpus and its output folder.

    Attributes:
        key: the output folder name (the video's stem, made unique in the corpus).
        path: the input video, as expanded (local path or URL).
        out: the corpus output folder (absolute path or URL).
    """

    key: str
    path: str
    out: str

    @property
    def folder(self) -> str:
        return join(self.out, self.key)

    def file(self, suffix: str) -> str:
        """``OUT/<key>/<key><suffix>``, e.g. ``file(".eks.csv")``."""
        return join(self.folder, f"{self.key}{suffix}")

    @property
    def done_path(self) -> str:
        return join(self.folder, DONE)

    @property
    def failed_path(self) -> str:
        return join(self.folder, FAILED)


def plan_jobs(videos: list[str], out: str) -> list[VideoJob]:
    """One job per video; a stem shared by several videos gets a short hash of the path.

    The names depend only on the list of paths, so a rerun over the same corpus finds the same
    folders.
    """
    counts = Counter(video_stem(v) for v in videos)
    jobs = []
    for video in videos:
        stem = video_stem(video)
        if counts[stem] > 1:
            stem = f"{stem}-{hashlib.sha1(video.encode()).hexdigest()[:8]}"
        jobs.append(VideoJob(stem, video, out))
    return jobs


def _write_json(path: str, record: dict[str, Any]) -> None:
    with atomic_write(path, "w") as handle:
        json.dump(record, handle, indent=2, default=float)


def write_done(job: VideoJob, record: dict[str, Any]) -> None:
    """Mark the video finished (call after all its other outputs are written)."""
    _write_json(job.done_path, {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def input_fingerprint(path: str) -> str:
    """Size and modification stamp of an input file (local or object store).

    A failure caused by the file itself is only worth retrying once the file has changed.
    """
    fs, inner = filesystem(path)
    try:
        info = fs.info(inner)
    except OSError:
        return "missing"
    stamp = next(
        (info[k] for k in ("mtime", "LastModified", "updated", "ETag", "etag") if k in info), ""
    )
    return f"{info.get('size')}:{stamp}"


def write_failed(
    job: VideoJob, error: str, input_error: bool, members: list[str]
) -> dict[str, Any]:
    """Record a failed attempt; the video stays unfinished.

    Args:
        job: the video.
        error: one-line description.
        input_error: the video file itself is unusable (corrupt, unreadable, variable frame
            rate); a rerun skips it until the file changes. Other failures are retried.
        members: the ensemble's member names.
    """
    record = {
        "video": job.key,
        "path": job.path,
        "status": "failed",
        "error": error,
        "input_error": input_error,
        "fingerprint": input_fingerprint(job.path) if input_error else None,
        "members": members,
    }
    _write_json(job.failed_path, record)
    return record


def read_records(jobs: list[VideoJob], name: str) -> dict[str, dict[str, Any]]:
    """Every job's ``OUT/<key>/<name>`` record that exists and parses, by job key.

    One listing and one batched read for the whole corpus: on object stores a request per video
    would dominate a rerun over thousands of finished videos.
    """
    if not jobs:
        return {}
    fs, inner = filesystem(jobs[0].out)
    fs.invalidate_cache()  # the records were written by workers, not through this listing cache
    wanted = {join(inner, job.key, name): job.key for job in jobs}
    present = [p for p in fs.glob(join(inner, "*", name)) if p in wanted]
    records = {}
    for path, raw in (fs.cat(present) if present else {}).items():
        try:
            records[wanted[path]] = json.loads(raw)
        except ValueError:
            continue  # unreadable: as if absent
    return records


def finished_jobs(jobs: list[VideoJob], members: list[str]) -> dict[str, dict[str, Any]]:
    """``done.json`` of every job finished by these members (others are redone)."""
    return {k: r for k, r in read_records(jobs, DONE).items() if r.get("members") == members}


def known_bad_inputs(jobs: list[VideoJob], members: list[str]) -> dict[str, dict[str, Any]]:
    """``failed.json`` of every job whose file was unusable and has not changed since."""
    return {
        key: record
        for key, record in read_records(jobs, FAILED).items()
        if record.get("input_error")
        and record.get("members") == members
        and record.get("fingerprint") == input_fingerprint(record["path"])
    }


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """The summary table's row for one video's done or failed record."""
    return {column: record.get(column) for column in SUMMARY_COLUMNS}


def write_summary(out: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Write ``summary.csv`` and ``summary.parquet`` (one row per video, input order)."""
    table = pd.DataFrame([summary_row(r) for r in rows], columns=list(SUMMARY_COLUMNS))
    with atomic_write(join(out, "summary.csv"), "w") as handle:
        table.to_csv(handle, index=False)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    with atomic_write(join(out, "summary.parquet"), "wb") as handle:
        handle.write(buffer.getvalue())
    return table


def write_corpus_manifest(out: str, run: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write ``manifest.json``: the run's settings and every video's status."""
    manifest = {
        "format": "lpray-track",
        "version": 1,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **run,
        "n_videos": len(rows),
        "n_done": sum(r.get("status") == "done" for r in rows),
        "n_failed": sum(r.get("status") == "failed" for r in rows),
        "videos": [
            {k: r.get(k) for k in ("video", "path", "status", "error") if r.get(k) is not None}
            for r in rows
        ],
    }
    _write_json(join(out, "manifest.json"), manifest)

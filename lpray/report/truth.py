"""Errors against the synthetic dataset's exact truth on the unseen test videos.

The synthetic project knows every keypoint on every frame of its test videos (``truth/<stem>.csv``,
never labeled, never trained on). Scoring predictions against it answers what validation frames
cannot: is a semi-supervised network better on video nobody labeled, and does the EKS output of an
ensemble beat its members? The error of one set of predictions on one video is the mean Euclidean
distance, in frame pixels, over every frame and every keypoint the truth marks visible (hidden
keypoints have no position to be scored against).

Everything here reads through :mod:`lpray.io.storage` / :mod:`lpray.io.tables`, so run folders in
a bucket are scored the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from lpray.data.synthetic import load_truth
from lpray.io.storage import exists, filesystem, join, local_file
from lpray.io.tables import keypoint_names, read_pose_csv, table_to_arrays
from lpray.track.manifest import video_stem

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.ckpt"  # a Ray Train epoch checkpoint's file (lpray.train.distributed)


@dataclass(frozen=True)
class VideoTruth:
    """One unseen video and its exact keypoints."""

    stem: str
    video: str  # the video file (path or URL)
    xy: np.ndarray  # (T, K, 2) frame pixels
    visible: np.ndarray  # (T, K) bool
    names: tuple[str, ...]


def project_truths(project_root: str, videos: Sequence[str]) -> dict[str, VideoTruth]:
    """The truth of each of ``videos`` that is one of the synthetic project's test videos.

    Returns an empty dict for a project without ground truth (real data): nothing to score.
    """
    import yaml

    meta_path = join(project_root, "project.yaml")
    if not exists(meta_path):
        return {}
    fs, inner = filesystem(meta_path)
    with fs.open(inner, "r") as handle:
        meta = yaml.safe_load(handle)
    if not isinstance(meta, dict) or meta.get("format") != "lpray-synthetic":
        return {}
    known = {video_stem(p): p for p in meta.get("test_videos", [])}
    truths = {}
    for video in videos:
        stem = video_stem(video)
        # a test video of this project, not a user's video that happens to share its name
        if stem in known and str(video).rstrip("/").endswith(known[stem]):
            xy, visible = load_truth(join(project_root, meta["truth"][stem]))
            truths[stem] = VideoTruth(stem, video, xy, visible, tuple(meta["keypoint_names"]))
    return truths


def pixel_error(xy: np.ndarray, names: Sequence[str], truth: VideoTruth) -> float:
    """Mean distance (px) to the truth over every frame and visible keypoint.

    ``xy`` is (T, K, 2) for keypoints ``names``; only keypoints the truth also has are scored.
    """
    if len(xy) != len(truth.xy):
        raise ValueError(
            f"{truth.video}: {len(xy)} predicted frames but the truth has {len(truth.xy)}"
        )
    index = {n: i for i, n in enumerate(truth.names)}
    pairs = [(i, index[n]) for i, n in enumerate(names) if n in index]
    if not pairs:
        raise ValueError(f"{truth.video}: no predicted keypoint is in the truth table")
    mine, theirs = (list(p) for p in zip(*pairs))
    errors = np.linalg.norm(xy[:, mine] - truth.xy[:, theirs], axis=-1)
    return float(errors[truth.visible[:, theirs]].mean())


def table_error(path: str, truth: VideoTruth) -> float:
    """:func:`pixel_error` of a prediction table (``lpray predict`` / ``lpray track`` CSV)."""
    table = read_pose_csv(path)
    xy, _ = table_to_arrays(table)
    return pixel_error(xy, keypoint_names(table), truth)


def mean_error(errors: Mapping[str, float]) -> float:
    """One number over several videos (their plain mean; one video: its error)."""
    return float(np.mean(list(errors.values()))) if errors else float("nan")


# ----------------------------------------------------------------------------- ensembles


def ensemble_errors(
    track_dir: str,
    members: Sequence[str],
    truths: Mapping[str, VideoTruth],
    keys: Mapping[str, str],
) -> pd.DataFrame:
    """Each member's and the EKS output's error on the tracked videos, plus the members' median.

    Args:
        track_dir: ``lpray track``'s output folder (``<key>/<key>.rng=<k>.csv``, ``.eks.csv``).
        members: the ensemble's member names, in the order the tracker numbered them.
        truths: truth by video stem.
        keys: the tracker's output folder name of each video stem (usually the stem itself).

    Returns:
        Rows ``member-0 .. member-n``, ``member median``, ``EKS``; column ``video_error_px`` (the
        mean over videos) and one ``<stem>_px`` column per video when there are several.
    """
    rows: dict[str, dict[str, float]] = {}
    for stem, truth in truths.items():
        key = keys[stem]
        for k, member in enumerate(members):
            path = join(track_dir, key, f"{key}.rng={k}.csv")
            if exists(path):
                rows.setdefault(member, {})[stem] = table_error(path, truth)
        rows.setdefault("EKS", {})[stem] = table_error(
            join(track_dir, key, f"{key}.eks.csv"), truth
        )
    member_rows = [r for name, r in rows.items() if name != "EKS"]
    if member_rows:
        rows["member median"] = {
            stem: float(np.median([r[stem] for r in member_rows if stem in r])) for stem in truths
        }
    order = [m for m in members if m in rows] + [n for n in ("member median", "EKS") if n in rows]
    frame = pd.DataFrame(
        {"video_error_px": [mean_error(rows[n]) for n in order]},
        index=pd.Index(order, name="predictions"),
    )
    if len(truths) > 1:
        for stem in truths:
            frame[f"{stem}_px"] = [rows[n].get(stem, np.nan) for n in order]
    return frame


# ----------------------------------------------------------------------------- sweep trials


def trial_checkpoint(train_dir: str, trial_id: str, best_epoch: int | None) -> str | None:
    """The kept Ray Train checkpoint of a trial: its best epoch's, else its latest one.

    ``training.keep_checkpoints >= 2`` keeps the best epoch's checkpoint; with 1 only the
    latest survives, which is then what gets scored.
    """
    run = join(train_dir, trial_id)
    if not exists(run):
        return None
    fs, inner = filesystem(run)
    epochs = sorted(
        PurePosixPath(p).name
        for p in fs.ls(inner, detail=False)
        if PurePosixPath(p).name.startswith("epoch_")
    )
    if not epochs:
        return None
    wanted = f"epoch_{int(best_epoch):05d}" if best_epoch is not None else None
    chosen = wanted if wanted in epochs else epochs[-1]
    path = join(run, chosen, CHECKPOINT_NAME)
    return path if exists(path) else None


def checkpoint_errors(
    checkpoint: str, truths: Mapping[str, VideoTruth], chunk_size: int | None = None
) -> dict[str, float]:
    """Predict each truth video with one checkpoint (on CPU) and score it: stem -> px."""
    import torch

    from lpray.inference.network import network_from_checkpoint
    from lpray.inference.video import predict_video_arrays

    with local_file(checkpoint) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    network = network_from_checkpoint(state, torch.device("cpu"))
    errors = {}
    for stem, truth in truths.items():
        xy, _ = predict_video_arrays(network, truth.video, chunk_size=chunk_size)
        errors[stem] = pixel_error(xy, network.keypoint_names, truth)
    return errors


def trial_errors(
    train_dir: str,
    trials: pd.DataFrame,
    truths: Mapping[str, VideoTruth],
    chunk_size: int | None = None,
) -> pd.Series:
    """Each sweep trial's error on the truth videos (mean over videos), by ``trial_id``.

    ``trials`` needs ``trial_id`` and ``best_epoch`` (the sweep's trials table). A trial without a
    kept checkpoint (it failed before its first epoch) gets NaN.
    """
    values = {}
    for trial_id, best_epoch in zip(trials["trial_id"], trials["best_epoch"]):
        epoch = None if pd.isna(best_epoch) else int(best_epoch)
        checkpoint = trial_checkpoint(train_dir, str(trial_id), epoch)
        if checkpoint is None:
            logger.warning("sweep trial %s: no checkpoint kept; not scored on truth", trial_id)
            values[trial_id] = float("nan")
            continue
        values[trial_id] = mean_error(checkpoint_errors(checkpoint, truths, chunk_size))
    return pd.Series(values, name="video_error_px", dtype=float)

"""``lpray select-frames TRACK_DIR --n N --out DIR``: the frames to label next, as a labeling folder.

Two passes over the corpus, one video in memory at a time:

1. each video's tables are read and every frame scored (:mod:`lpray.select.scoring`); the best
   frames at least ``min_gap`` apart are kept as the video's candidates (a few times its share
   of the N picks) with what the page and the stub need of them; the rest is dropped;
2. the shares are fixed (:mod:`lpray.select.picking`), and each video with picks is decoded for
   its candidates' thumbnails (k-means diversity) and then for its picks (PNGs and overlays).

Everything is written to a local staging folder and moved (or uploaded) to ``OUT`` at the end,
so a failed run leaves an existing ``OUT`` as it was. ``OUT`` holds::

    CollectedData.csv                   the picks, keypoints prefilled with the EKS guess
                                        (scorer ``lpray-eks-guess``): open it in the labeler
    labeled-data/<video>/img<t>.png     the frames, as decoded (and, with ``context_frames``,
                                        their neighbours t-N..t+N, which are not rows)
    labeled-data/<video>/CollectedData_<scorer>.h5 (.csv)
                                        the same guess per video, as DeepLabCut's labeler
                                        reads a video's labels
    eks_guess.csv                       the guess as written (never edited): merge-labels
                                        tells corrected rows from untouched ones by it
    selection.csv                       one row per pick: video, frame, score, signals, why
    selection.html                      the page: picks with the members' predictions, and why
    selection.json                      settings, corpus, signals used; written last
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lpray.errors import UserError
from lpray.io.storage import (
    atomic_write,
    exists,
    filesystem,
    is_local,
    join,
    local_file,
    local_path,
    replace_folder,
)
from lpray.io.tables import write_pose_csv
from lpray.projects import dlc
from lpray.select import extraction, page, picking, scoring
from lpray.select.tracked import TrackedCorpusError, finished_videos, iter_tracked
from lpray.viz.overlay import keypoint_colors

log = logging.getLogger(__name__)

COMPLETE = "selection.json"
GUESS_FILE = "eks_guess.csv"  # the stub as written, for merge-labels to compare edits against


class SelectSettingsError(UserError, ValueError):
    """A select-frames setting out of range; the message names the option."""


class SelectionOutputError(UserError, FileExistsError):
    """The output folder already holds a labeling folder (a labeler's work is never replaced
    without ``--overwrite``)."""


@dataclass(frozen=True)
class SelectSettings:
    """How frames are picked.

    Attributes:
        n: frames to pick over the whole corpus.
        min_gap: picks of one video are at least this many frames apart.
        pool_factor: candidates per pick that k-means chooses among (1: no diversity step).
        weights: weight of each signal in the score.
        seed: k-means seed.
        ensemble: the ensemble (or a member) whose PCA scores ``pca_error`` when a video has no
            metrics file; default: the one ``TRACK_DIR/manifest.json`` names, when reachable.
        overwrite: replace an existing labeling folder at ``OUT``.
        context_frames: also extract the frames ``t-N..t+N`` around each pick (clamped to the
            video), named as Lightning Pose's context models look for them; not labeled rows.
        dlc_scorer: the scorer name of the per-video DeepLabCut label files
            (``CollectedData_<scorer>.h5``); DeepLabCut uses its config's ``scorer``.
    """

    n: int
    min_gap: int = 15
    pool_factor: int = 3
    weights: scoring.ScoreWeights = field(default_factory=scoring.ScoreWeights)
    seed: int = 0
    ensemble: str | None = None
    overwrite: bool = False
    context_frames: int = 0
    dlc_scorer: str = extraction.GUESS_SCORER

    def __post_init__(self) -> None:
        if self.n < 1:
            raise SelectSettingsError(f"--n must be >= 1 (frames to pick), got {self.n}")
        if self.min_gap < 1:
            raise SelectSettingsError(f"--min-gap must be >= 1 frame, got {self.min_gap}")
        if self.pool_factor < 1:
            raise SelectSettingsError(f"--pool-factor must be >= 1, got {self.pool_factor}")
        if self.context_frames < 0:
            raise SelectSettingsError(f"--context-frames must be >= 0, got {self.context_frames}")
        if not self.dlc_scorer or any(c in self.dlc_scorer for c in "/\\"):
            raise SelectSettingsError(
                f"--dlc-scorer {self.dlc_scorer!r}: give a scorer name (DeepLabCut's config.yaml "
                "`scorer`) without slashes"
            )


@dataclass
class Pick:
    """One candidate frame (and, once chosen, one pick)."""

    key: str
    video: str
    frame: int
    score: float
    reasons: list[dict]
    eks_xy: np.ndarray  # (K, 2)
    members_xy: np.ndarray  # (M, K, 2)
    signals: dict[str, float]  # the frame's raw value of every signal

    @property
    def image(self) -> str:
        return extraction.image_name(self.key, self.frame)


@dataclass
class SelectResult:
    """What :func:`select_frames` wrote."""

    out: str
    picks: list[Pick]
    keypoints: list[str]
    videos: dict[str, int]  # picks per video
    seconds: float


def _check_out(out: str, overwrite: bool) -> None:
    if overwrite:
        return
    for name in ("CollectedData.csv", COMPLETE):
        if exists(join(out, name)):
            raise SelectionOutputError(
                f"{join(out, name)} exists: {out} already holds a labeling folder (perhaps with "
                "corrected labels); choose another --out or pass --overwrite to replace it"
            )
    if is_local(out) and local_path(out).is_file():
        raise SelectionOutputError(f"{out} is a file; --out must be a folder")
    if is_local(out) and local_path(out).is_dir() and any(local_path(out).iterdir()):
        raise SelectionOutputError(
            f"{out} exists and is not empty; choose a new or empty --out, or pass --overwrite"
        )


class _PCAs:
    """The ensemble's pose PCAs, loaded on first need (only for videos without metrics)."""

    def __init__(self, track_dir: str, ensemble: str | None) -> None:
        self.track_dir, self.ensemble = track_dir, ensemble
        self.value: dict | None = None

    def get(self) -> dict:
        if self.value is None:
            self.value = {}
            try:
                from lpray.ensemble.manifest import trained_members
                from lpray.io.storage import local_copy

                source = self.ensemble
                if source is None:
                    fs, inner = filesystem(join(self.track_dir, "manifest.json"))
                    source = json.loads(fs.cat(inner))["ensemble"]
                member = trained_members(local_copy(source))[0]
                self.value = scoring.load_pcas(member.model_dir)
            except (OSError, ValueError, KeyError, UserError) as err:
                log.info("no pose PCA for the pca_error signal (%s)", err)
        return self.value


def _candidates(track_dir: str, settings: SelectSettings, records: list) -> tuple:
    """Pass 1: every video's candidates (best first), its median spread, the keypoints."""
    upper = [s + 1 for s in picking.shares([r.frames for r in records], settings.n)]
    pcas = _PCAs(track_dir, settings.ensemble)
    pools: dict[str, list[Pick]] = {}
    spread: dict[str, float] = {}
    used: dict[str, list[str]] = {}
    keypoints: list[str] | None = None
    for record, video, cap in zip(records, iter_tracked(records), upper):
        if keypoints is None:
            keypoints = video.keypoints
        elif video.keypoints != keypoints:
            raise TrackedCorpusError(
                f"{record.folder}: keypoints {video.keypoints} differ from the corpus's "
                f"{keypoints}; select frames from one model's tracks at a time"
            )
        need_pca = video.metrics is None or not any(
            str(c).startswith("pca") for c in video.metrics.columns
        )
        scores = scoring.score_frames(video, settings.weights, pcas.get() if need_pca else None)
        chosen = picking.suppress(scores.score, settings.min_gap, settings.pool_factor * cap)
        pools[record.key] = [
            Pick(
                record.key,
                record.video,
                int(t),
                float(scores.score[t]),
                scores.reasons(int(t), video.keypoints),
                video.eks_xy[t].copy(),
                video.members_xy[:, t].copy(),
                {s: float(v[t]) for s, v in scores.raw.items()},
            )
            for t in chosen
        ]
        spread[record.key] = float(np.nanmedian(scores.raw["ensemble_std"]))
        used[record.key] = scores.used
        log.debug("%s: %d candidates, signals %s", record.key, len(chosen), scores.used)
    return pools, spread, used, keypoints


def _choose(video: str, pool: list[Pick], count: int, settings: SelectSettings) -> list[Pick]:
    """Pass 2 for one video: k-means on the candidates' thumbnails, best of each cluster."""
    if count >= len(pool):
        return pool
    thumbs = {
        t: extraction.thumbnail(f)
        for t, f in extraction.decode_frames(video, [p.frame for p in pool])
    }
    points = np.stack([thumbs[p.frame] for p in pool])
    scores = np.array([p.score for p in pool])
    return [pool[i] for i in picking.diverse(scores, points, count, settings.seed)]


def _extract(
    pool: list[Pick],
    count: int,
    frames: int,
    settings: SelectSettings,
    staging: Path,
    colors: np.ndarray,
) -> list[tuple[Pick, bytes]]:
    """Choose one video's picks and write their PNGs (and their context frames' PNGs, for a
    video of ``frames`` frames); returns each pick with its page overlay."""
    out = []
    key = pool[0].key
    with local_file(pool[0].video) as video:  # one download of a remote video for both passes
        chosen = {p.frame: p for p in _choose(video, pool, count, settings)}
        wanted = extraction.context_frames(list(chosen), settings.context_frames, frames)
        for t, frame in extraction.decode_frames(video, wanted):
            extraction.write_png(frame, str(staging / extraction.image_name(key, t)))
            pick = chosen.get(t)
            if pick is not None:
                out.append((pick, page.overlay(frame, pick.members_xy, pick.eks_xy, colors)))
    return out


def _publish(staging: Path, out: str, overwrite: bool) -> None:
    """Move the finished staging folder to ``out`` (upload it when ``out`` is a URL)."""
    if not is_local(out):
        fs, inner = filesystem(out)
        if overwrite and fs.exists(inner):
            fs.rm(inner, recursive=True)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        # selection.json last: a folder that has it is complete
        for path in sorted(files, key=lambda p: p.name == COMPLETE):
            fs.put_file(str(path), join(inner, path.relative_to(staging).as_posix()))
        return
    target = local_path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_out(out, overwrite)  # again: it may have filled up while the frames were extracted
    replace_folder(staging, target)


def select_frames(track_dir: str, out: str, settings: SelectSettings) -> SelectResult:
    """Pick ``settings.n`` frames of a tracked corpus to label and write the labeling folder.

    Args:
        track_dir: the ``--out`` folder of ``lpray track`` (local or URL).
        out: the labeling folder to write (local or URL).
        settings: how to pick.

    Raises:
        TrackedCorpusError: ``track_dir`` holds no finished video, or its tables are broken.
        SelectionOutputError: ``out`` already holds a labeling folder (without ``overwrite``).
        VideoError: a tracked video cannot be read any more (moved, deleted, corrupt).
    """
    started = time.perf_counter()
    track_dir, out = str(track_dir).rstrip("/"), str(out).rstrip("/")
    _check_out(out, settings.overwrite)
    records = finished_videos(track_dir)
    for record in records:
        if not exists(record.video):
            raise TrackedCorpusError(
                f"{record.folder}/done.json: its video {record.video} is gone; select-frames "
                "decodes the picked frames from it (restore it, or track it where it is now)"
            )
    pools, spread, used, keypoints = _candidates(track_dir, settings, records)
    keys = [r.key for r in records]
    wanted = picking.shares([r.frames for r in records], settings.n, [spread[k] for k in keys])
    counts = picking.rebalance(wanted, [len(pools[k]) for k in keys])
    if sum(counts) < settings.n:
        log.warning(
            "only %d frames are %d or more frames apart in the corpus; picking %d, not %d",
            sum(counts),
            settings.min_gap,
            sum(counts),
            settings.n,
        )
    local_parent = local_path(out).parent if is_local(out) else None
    if local_parent is not None:
        local_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lpray-select-", dir=local_parent))
    try:
        picks: list[Pick] = []
        views: list[tuple[Pick, bytes]] = []
        colors = keypoint_colors(len(keypoints))
        for record, count in zip(records, counts):
            if count == 0:
                continue
            pool = pools[record.key]
            extracted = _extract(pool, count, record.frames, settings, staging, colors)
            views.extend(extracted)
            picks.extend(pick for pick, _ in extracted)
        picks.sort(key=lambda p: (-p.score, p.key, p.frame))
        _write_tables(staging, picks, keypoints, settings.dlc_scorer)
        order = {id(p): rank for rank, p in enumerate(picks, 1)}
        summary = {
            "track_dir": track_dir,
            "videos": len(records),
            "frames scored": sum(r.frames for r in records),
            "picks": len(picks),
            "min_gap": settings.min_gap,
            "signals": ", ".join(sorted({s for u in used.values() for s in u})),
            "guess_scorer": extraction.GUESS_SCORER,
        }
        views.sort(key=lambda v: order[id(v[0])])
        page.write_page(
            str(staging / "selection.html"),
            [
                page.PickView(
                    order[id(p)],
                    p.image,
                    p.key,
                    p.frame,
                    p.score,
                    [scoring.describe(r) for r in p.reasons],
                    png,
                )
                for p, png in views
            ],
            keypoints,
            summary,
        )
        record = {
            "format": "lpray-select-frames",
            "version": 1,
            "track_dir": track_dir,
            "settings": {**asdict(settings), "weights": asdict(settings.weights)},
            "keypoints": keypoints,
            "guess_scorer": extraction.GUESS_SCORER,
            "videos": {
                k: {
                    "frames": r.frames,
                    "picks": c,
                    "signals": used[k],
                    "median_ensemble_std": spread[k],
                }
                for k, r, c in zip(keys, records, counts)
            },
            "picks": [{"image": p.image, "video": p.key, "frame": p.frame} for p in picks],
            "seconds": time.perf_counter() - started,
        }
        with atomic_write(str(staging / COMPLETE), "w") as handle:
            json.dump(record, handle, indent=2, default=float)
        _publish(staging, out, settings.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SelectResult(
        out, picks, keypoints, dict(zip(keys, counts)), time.perf_counter() - started
    )


def _write_tables(staging: Path, picks: list[Pick], keypoints: list[str], dlc_scorer: str) -> None:
    """``CollectedData.csv`` (the stub, by image path), the same stub as DeepLabCut's per-video
    label files, and ``selection.csv`` (by rank)."""
    by_image = sorted(picks, key=lambda p: p.image)
    stub = extraction.labels_stub(
        [p.image for p in by_image],
        np.stack([p.eks_xy for p in by_image]) if by_image else np.zeros((0, len(keypoints), 2)),
        keypoints,
    )
    write_pose_csv(stub, str(staging / "CollectedData.csv"))
    write_pose_csv(stub, str(staging / GUESS_FILE))
    if len(stub):
        dlc.write_labels(stub, str(staging), dlc_scorer)
    rows = []
    for rank, p in enumerate(picks, 1):
        row = {"rank": rank, "image": p.image, "video": p.key, "frame": p.frame, "score": p.score}
        row.update({s: p.signals.get(s, np.nan) for s in scoring.SIGNALS})
        row["why"] = "; ".join(scoring.describe(r) for r in p.reasons)
        row["video_path"] = p.video
        rows.append(row)
    table = pd.DataFrame(
        rows,
        columns=["rank", "image", "video", "frame", "score", *scoring.SIGNALS, "why", "video_path"],
    )
    with atomic_write(str(staging / "selection.csv"), "w") as handle:
        table.to_csv(handle, index=False)

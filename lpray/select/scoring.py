"""The score of every frame of a tracked video: how much the next model would learn from it.

Five signals, each first per keypoint, then reduced to the frame by the maximum over keypoints
(one wrong keypoint makes a frame worth labeling):

==================  =============================================================================
``ensemble_std``    the members' spread: sqrt(var_x + var_y) over the members, pixels
``posterior_std``   EKS posterior standard deviation, sqrt(x_posterior_var + y_posterior_var), px
``temporal_norm``   frame-to-frame jump (Lightning Pose's temporal loss), px: ``temporal_norm|*``
                    columns of ``<video>.metrics.csv``, else each member's own, averaged
``pca_error``       pose-PCA reprojection error, px: ``pca_*|*`` columns of the metrics file, else
                    each member's under the ensemble's PCA (when its checkpoint is reachable)
``low_confidence``  1 - the members' mean heatmap confidence
==================  =============================================================================

The signals have different units and tails (a spread in pixels, a confidence in [0, 1]), so they
are combined by rank: within each video every signal becomes its percentile (ties share their
mean rank; a frame without the signal, e.g. the first frame's jump, ranks lowest), and the score
is the weighted mean of the percentiles (:class:`ScoreWeights`, all 1 by default). A signal the
video lacks or that is constant over it carries no ranking and is left out. Ranks make one
outlying value (a member's wild frame) count no more than any top frame, and make the score of a
video independent of its resolution; how picks are shared between videos is
:mod:`lpray.select.picking`'s job.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lpray.metrics import temporal_norm
from lpray.select.tracked import TrackedVideo

log = logging.getLogger(__name__)

SIGNALS = ("ensemble_std", "posterior_std", "temporal_norm", "pca_error", "low_confidence")
UNITS = {
    "ensemble_std": "px",
    "posterior_std": "px",
    "temporal_norm": "px",
    "pca_error": "px",
    "low_confidence": "",
}
LABELS = {
    "ensemble_std": "ensemble spread",
    "posterior_std": "EKS posterior sd",
    "temporal_norm": "jump",
    "pca_error": "PCA error",
    "low_confidence": "1 - confidence",
}


@dataclass(frozen=True)
class ScoreWeights:
    """Weight of each signal's percentile in the score (0 leaves a signal out)."""

    ensemble_std: float = 1.0
    posterior_std: float = 1.0
    temporal_norm: float = 1.0
    pca_error: float = 1.0
    low_confidence: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"score weight {name} must be a number >= 0, got {value}")
        if not any(asdict(self).values()):
            raise ValueError(f"at least one score weight must be > 0 (signals: {SIGNALS})")

    @classmethod
    def parse(cls, text: str | None) -> ScoreWeights:
        """``"ensemble_std=2,low_confidence=0"`` (unnamed signals keep weight 1)."""
        if not text:
            return cls()
        values: dict[str, float] = {}
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep or name not in SIGNALS:
                raise ValueError(
                    f"--weights: {part!r} is not SIGNAL=NUMBER with SIGNAL one of {list(SIGNALS)}"
                )
            try:
                values[name] = float(value)
            except ValueError as err:
                raise ValueError(f"--weights: {part!r}: {value!r} is not a number") from err
        return cls(**values)


@dataclass
class FrameScores:
    """One video's per-frame score and what it is made of.

    Attributes:
        score: ``(T,)`` the weighted mean percentile, in [0, 1].
        raw: signal -> ``(T,)`` the frame's value (maximum over keypoints), natural units.
        percentile: signal -> ``(T,)`` the frame's percentile of ``raw`` in its video.
        worst: signal -> ``(T,)`` index of the keypoint that gave the maximum.
        used: the signals in the score.
    """

    score: np.ndarray
    raw: dict[str, np.ndarray]
    percentile: dict[str, np.ndarray]
    worst: dict[str, np.ndarray]
    used: list[str]

    def reasons(self, t: int, keypoints: list[str], top: int = 3) -> list[dict[str, object]]:
        """The signals that ranked frame ``t`` highest, best first (why it was picked)."""
        order = sorted(self.used, key=lambda s: -self.percentile[s][t])[:top]
        return [
            {
                "signal": s,
                "value": float(self.raw[s][t]),
                "percentile": float(self.percentile[s][t]),
                "keypoint": keypoints[int(self.worst[s][t])] if self.worst[s][t] >= 0 else None,
            }
            for s in order
        ]


def describe(reason: dict[str, object]) -> str:
    """``"ensemble spread 7.31 px at nose (>= 99.5% of its video's frames)"``."""
    s = str(reason["signal"])
    unit = f" {UNITS[s]}" if UNITS[s] else ""
    where = f" at {reason['keypoint']}" if reason.get("keypoint") else ""
    share = 100 * float(reason["percentile"])
    return f"{LABELS[s]} {reason['value']:.3g}{unit}{where} (>= {share:.1f}% of its video's frames)"


def load_pcas(model_dir: str | Path) -> dict:
    """The pose PCAs stored in a member's checkpoint (empty when it has none)."""
    import torch

    from lpray.inference.network import checkpoint_path
    from lpray.losses.pca import PosePCA
    from lpray.losses.registry import states_from_dict

    state = torch.load(checkpoint_path(Path(model_dir)), map_location="cpu", weights_only=True)
    states = states_from_dict(state.get("lpray_pcas", {}))  # every loss's state; keep the PCAs
    return {name: s for name, s in states.items() if isinstance(s, PosePCA)}


def _metric_columns(video: TrackedVideo, prefix: str) -> np.ndarray | None:
    """``(T, K)`` maximum over the metrics file's ``<prefix>*|<keypoint>`` columns, or None."""
    if video.metrics is None:
        return None
    out = np.full(video.eks_xy.shape[:2], np.nan)
    found = False
    for column in video.metrics.columns:
        metric, sep, name = str(column).partition("|")
        if sep and metric.startswith(prefix) and name in video.keypoints:
            k = video.keypoints.index(name)
            values = video.metrics[column].to_numpy(dtype=float)
            out[:, k] = np.fmax(out[:, k], values)
            found = True
    return out if found else None


def _pca_error(video: TrackedVideo, pcas: dict) -> np.ndarray | None:
    """Each member's PCA reprojection error, averaged over the members, ``(T, K)``."""
    if not pcas:
        return None
    import torch

    from lpray.losses.pca import pca_reprojection_error

    out = np.full(video.eks_xy.shape[:2], np.nan)
    points = torch.as_tensor(video.members_xy, dtype=torch.float32)
    for pca in pcas.values():
        if max(pca.keypoint_indices) >= points.shape[-2]:
            continue
        with torch.no_grad():
            errors = pca_reprojection_error(pca, points).numpy().mean(axis=0)
        for column, k in enumerate(pca.keypoint_indices):
            out[:, k] = np.fmax(out[:, k], errors[:, column])
    return out


def keypoint_signals(video: TrackedVideo, pcas: dict | None = None) -> dict[str, np.ndarray]:
    """Every available signal per frame and keypoint, ``(T, K)`` each (see the module doc)."""
    with warnings.catch_warnings():
        # all-NaN frames (a keypoint no member found, the first frame's jump) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.sqrt(np.nansum(np.nanvar(video.members_xy, axis=0), axis=-1))
        signals = {
            "ensemble_std": spread,
            "posterior_std": np.sqrt(video.posterior_var),
            "low_confidence": 1.0 - np.nanmean(video.members_confidence, axis=0),
        }
        jumps = _metric_columns(video, "temporal_norm")
        if jumps is None:
            jumps = np.nanmean(np.stack([temporal_norm(xy) for xy in video.members_xy]), axis=0)
        signals["temporal_norm"] = jumps
        pca = _metric_columns(video, "pca")
        signals["pca_error"] = pca if pca is not None else _pca_error(video, pcas or {})
    return {name: value for name, value in signals.items() if value is not None}


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's mean rank over the array divided by its length, in (0, 1]; NaN ranks 0."""
    from scipy.stats import rankdata

    out = np.zeros(len(values))
    present = np.isfinite(values)
    if present.any():
        # the missing values sit below every present one: ranks count from above them
        missing = len(values) - int(present.sum())
        out[present] = (rankdata(values[present]) + missing) / len(values)
    return out


def score_frames(
    video: TrackedVideo, weights: ScoreWeights | None = None, pcas: dict | None = None
) -> FrameScores:
    """Score every frame of one tracked video (see the module doc)."""
    weights = weights or ScoreWeights()
    raw, worst, percentile = {}, {}, {}
    for name, values in keypoint_signals(video, pcas).items():
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            frame_max = np.where(
                finite.any(axis=1), np.nanmax(np.where(finite, values, -np.inf), 1), np.nan
            )
        raw[name] = frame_max
        worst[name] = np.where(
            finite.any(axis=1), np.argmax(np.where(finite, values, -np.inf), 1), -1
        )
        percentile[name] = percentile_ranks(frame_max)
    used = [
        s
        for s in SIGNALS
        if s in raw
        and getattr(weights, s) > 0
        and np.isfinite(raw[s]).sum() > 1
        and np.nanmax(raw[s]) > np.nanmin(raw[s])
    ]
    if not used:
        log.warning("%s: no signal varies over the video; every frame scores 0", video.record.key)
        score = np.zeros(len(video.eks_xy))
    else:
        total = sum(getattr(weights, s) for s in used)
        score = sum(getattr(weights, s) * percentile[s] for s in used) / total
    return FrameScores(np.asarray(score, float), raw, percentile, worst, used)

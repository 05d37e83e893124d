"""Per-frame ensemble statistics: the observation and its noise that the Kalman smoother uses.

EKS treats the ensemble as one noisy sensor: its centre (the members' median, robust to one bad
network) is the observation, and the members' disagreement, inflated where they are unsure (low
mean confidence), is the observation variance. These are exactly the reference package's rules, so
that smoothed outputs agree with it; only frames it cannot handle (members missing) differ, as
documented on :func:`ensemble_stats`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# Observation variance given where the members' spread is undefined (the reference's value).
UNDEFINED_VARIANCE = 1000.0
# Floor on the confidence of a lone member, so that 1 / confidence stays finite.
MIN_CONFIDENCE = 1e-5


@dataclass(frozen=True)
class EnsembleStats:
    """Ensemble summary per frame and keypoint.

    Attributes:
        centre: ``(T, K, 2)`` median of the members' x and y; NaN where no member predicted.
        variance: ``(T, K, 2)`` observation variance r_t (members' variance / mean confidence).
        likelihood: ``(T, K)`` mean confidence c_t of the members.
    """

    centre: np.ndarray
    variance: np.ndarray
    likelihood: np.ndarray


def _nan_median(values: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; the plain median when nothing is missing (much faster)."""
    if not np.isnan(values).any():
        return np.median(values, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, on purpose
        return np.nanmedian(values, axis=0)


def _nan_mean_var(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, population variance (ddof 0) and count over axis 0, ignoring NaN."""
    present = np.isfinite(values)
    count = present.sum(axis=0)
    filled = np.where(present, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        var = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0) / count
    return mean, var, count


def ensemble_stats(xy: np.ndarray, likelihood: np.ndarray) -> EnsembleStats:
    """Summarise ensemble members frame by frame.

    The rules are the reference's (ensemble-kalman-smoother 4.6.2): centre = nanmedian of the
    members; c_t = mean member confidence; r_t = nanvar(members, ddof 0) / c_t; an undefined
    variance becomes 1000; an ensemble of one member gets r_t = 1 / max(c_t, 1e-5).

    Where members are missing (NaN) lpray departs from the reference on purpose: c_t averages the
    confidences that exist (the reference's plain mean turns the frame's variance into 1000), and a
    frame seen by only one member uses the one-member rule rather than a variance of 0 (which
    would make the smoother trust that lone member absolutely). Frames no member sees keep a NaN
    centre; the smoother skips them.

    Args:
        xy: ``(M, T, K, 2)`` member coordinates.
        likelihood: ``(M, T, K)`` member confidences.

    Returns:
        The :class:`EnsembleStats`.
    """
    n_members = xy.shape[0]
    centre = _nan_median(xy)
    _, spread, count = _nan_mean_var(xy)
    confidence, _, _ = _nan_mean_var(likelihood)
    confidence_xy = confidence[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        lone = 1.0 / np.maximum(confidence_xy, MIN_CONFIDENCE)
        variance = np.where((count <= 1) | (n_members == 1), lone, spread / confidence_xy)
    variance = np.where(count == 0, UNDEFINED_VARIANCE, variance)
    # NaN (e.g. confidence missing, 0/0) -> the reference's 1000; +inf (confidence 0) stays huge.
    variance = np.nan_to_num(variance, nan=UNDEFINED_VARIANCE)
    return EnsembleStats(centre=centre, variance=variance, likelihood=confidence)

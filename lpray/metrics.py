"""Pose metrics, all in frame pixels: pixel error, temporal norm, PCA reprojection error."""

from __future__ import annotations

import numpy as np


def pixel_error(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Euclidean error (N, K) between (N, K, 2) arrays; NaN where the truth is missing."""
    return np.linalg.norm(np.asarray(predicted, float) - np.asarray(truth, float), axis=-1)


def temporal_norm(predicted: np.ndarray) -> np.ndarray:
    """Frame-to-frame displacement (T, K); the first frame is NaN."""
    predicted = np.asarray(predicted, float)
    out = np.full(predicted.shape[:2], np.nan)
    out[1:] = np.linalg.norm(np.diff(predicted, axis=0), axis=-1)
    return out


def summarize_errors(errors: np.ndarray, names: list[str]) -> tuple[float, dict[str, float]]:
    """Mean over all present entries and per keypoint (NaN-aware)."""
    with np.errstate(invalid="ignore"):
        per_keypoint = {
            n: float(np.nanmean(errors[:, k])) if np.isfinite(errors[:, k]).any() else float("nan")
            for k, n in enumerate(names)
        }
    finite = errors[np.isfinite(errors)]
    return (float(finite.mean()) if finite.size else float("nan")), per_keypoint

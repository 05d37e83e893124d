"""Single-view EKS: every keypoint coordinate is its own random walk observed by the ensemble.

Pipeline (the reference's model): centre each coordinate's ensemble track on its mean over frames,
put a zero-mean prior on the first state with the variance of the centred track, choose s per
keypoint by maximum likelihood unless given, run the batched smoother over keypoints x 2
coordinates, and add the mean back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from lpray.smooth.ensemble import EnsembleStats
from lpray.smooth.fit import fit_random_walk_s
from lpray.smooth.kalman import smooth_random_walks


@dataclass(frozen=True)
class Smoothed:
    """Smoother output per frame and keypoint.

    Attributes:
        mean: ``(T, K, 2)`` smoothed x, y in the input's pixel coordinates.
        variance: ``(T, K, 2)`` posterior variance of x, y (without observation noise).
        smooth_param: ``(K,)`` s used per keypoint (NaN where the keypoint was never observed).
        unobserved: ``(K,)`` true for keypoints without a single observed frame (output NaN).
    """

    mean: np.ndarray
    variance: np.ndarray
    smooth_param: np.ndarray
    unobserved: np.ndarray


def centre_tracks(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre ``(..., T)`` tracks on their mean over observed frames.

    Returns:
        ``(centred, mean, prior_variance)``: the prior variance of z_0 is the variance of the
        centred track, as in the reference.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tracks are handled by callers
        mean = np.nanmean(y, axis=-1)
        centred = y - mean[..., None]
        prior_variance = np.nanvar(centred, axis=-1)
    return centred, mean, prior_variance


def smooth_single_view(
    stats: EnsembleStats,
    smooth_param: np.ndarray,
    fit_frames: np.ndarray | None = None,
) -> Smoothed:
    """Run the single-view EKS on ensemble statistics.

    Args:
        stats: the ensemble's per-frame centre, variance and likelihood.
        smooth_param: ``(K,)`` s per keypoint; NaN entries are fitted by maximum likelihood.
        fit_frames: frame indices the parameter search uses (default all).

    Returns:
        The :class:`Smoothed` tracks.
    """
    n_frames, n_keypoints, _ = stats.centre.shape
    y = np.moveaxis(stats.centre, 0, -1)  # (K, 2, T)
    r = np.moveaxis(stats.variance, 0, -1)
    unobserved = np.isnan(y).all(axis=-1).any(axis=-1)
    live = np.flatnonzero(~unobserved)
    centred, mean, prior_variance = centre_tracks(y[live])
    s = np.asarray(smooth_param, dtype=float)[live].copy()
    to_fit = np.isnan(s)
    if to_fit.any():
        s[to_fit] = fit_random_walk_s(
            centred[to_fit], r[live][to_fit], prior_variance[to_fit], fit_frames
        )
    post_mean, post_var = smooth_random_walks(
        centred.reshape(-1, n_frames),
        r[live].reshape(-1, n_frames),
        np.repeat(s, 2),
        prior_variance.reshape(-1),
    )
    out_mean = np.full((n_keypoints, 2, n_frames), np.nan)
    out_var = np.full((n_keypoints, 2, n_frames), np.nan)
    out_mean[live] = post_mean.reshape(len(live), 2, n_frames) + mean[..., None]
    out_var[live] = post_var.reshape(len(live), 2, n_frames)
    s_all = np.full(n_keypoints, np.nan)
    s_all[live] = s
    return Smoothed(
        mean=np.moveaxis(out_mean, -1, 0),
        variance=np.moveaxis(out_var, -1, 0),
        smooth_param=s_all,
        unobserved=unobserved,
    )

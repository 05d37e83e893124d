"""Multi-view EKS for mirror-style data: one body part, seen in several views, one 3-D latent.

A body part seen in V views gives 2V coordinates per frame that are not independent: they are
(nearly) linear functions of its 3-D position. Following the reference's multi-camera smoother
(linear path), per body part:

1. the views' ensemble centres are stacked into y_t in R^{2V} and centred on their mean over the
   "good" frames (every view observed and the largest ensemble variance at or below its median);
2. a PCA of the good frames gives the loading matrix C (2V x 3);
3. the latent follows a 3-D random walk whose covariance shape Q is that of the good frames'
   latent increments (normalised to a largest entry of 1), scaled by s; z_0 ~ N(0, diag of the
   good latents' variances);
4. y_t = C z_t + noise with the ensemble variances on the diagonal; s per body part by maximum
   likelihood (constant noise = median variance, as in the single view) unless given.

Outputs are C m_t + mean per view coordinate; the posterior variance is diag(C V_t C^T), the
uncertainty of the smoothed position itself (the reference's multi-camera output adds the ensemble
variance on top; lpray reports the same quantity as in the single view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpray.smooth.ensemble import EnsembleStats
from lpray.smooth.fit import constant_observation_variance, minimise_over_log_s
from lpray.smooth.latent_kalman import latent_walk_nll, smooth_latent_walks
from lpray.smooth.singleview import Smoothed

LATENT_DIM = 3
# Percentage of frames (lowest ensemble variance) the PCA is fitted on, as in the reference.
PCA_KEEP_PERCENT = 50.0


@dataclass(frozen=True)
class LatentModel:
    """The linear-Gaussian model of every body part, padded to a common observation size O.

    Attributes:
        y: ``(G, T, O)`` centred observations (NaN = none, and padding).
        r: ``(G, T, O)`` observation variances.
        offset: ``(G, O)`` the means removed from y.
        loading: ``(G, O, D)`` PCA loading matrices C (zero rows for padding).
        process: ``(G, D, D)`` normalised process covariances Q.
        prior: ``(G, D, D)`` prior covariances of z_0.
    """

    y: np.ndarray
    r: np.ndarray
    offset: np.ndarray
    loading: np.ndarray
    process: np.ndarray
    prior: np.ndarray


def _good_frames(y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Frames with every view observed and max ensemble variance at or below its median."""
    complete = np.isfinite(y).all(axis=1)
    worst = r.max(axis=1)
    threshold = np.percentile(worst[complete], PCA_KEEP_PERCENT)
    return complete & (worst <= threshold)


def _group_model(y: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
    """PCA latent model of one body part from its ``(T, 2V)`` observations and variances."""
    good = _good_frames(y, r)
    offset = y[good].mean(axis=0)
    centred_good = y[good] - offset
    _, _, vt = np.linalg.svd(centred_good, full_matrices=False)
    loading = vt[:LATENT_DIM].T
    latents = centred_good @ loading
    prior = np.diag(latents.var(axis=0))
    steps = np.diff(latents, axis=0)
    cov = np.atleast_2d(np.cov(steps.T)) if len(steps) > LATENT_DIM else np.eye(LATENT_DIM)
    scale = np.abs(cov).max()
    process = cov / scale if np.isfinite(scale) and scale > 0 else np.eye(LATENT_DIM)
    return y - offset, offset, loading, process, prior


def _observable(y: np.ndarray) -> bool:
    """A body part needs enough frames with every view observed to fit its PCA."""
    return int(np.isfinite(y).all(axis=1).sum()) > 2 * LATENT_DIM


def build_latent_models(
    stats: EnsembleStats, groups: list[list[int]]
) -> tuple[LatentModel, np.ndarray]:
    """Per-body-part latent models, padded and stacked; and which groups could be built.

    Args:
        stats: ensemble statistics of all keypoints.
        groups: per body part, the keypoint indices of its views (at least 2 each).

    Returns:
        ``(model, ok)``: ``ok[g]`` is false where body part g has too few frames seen in every
        view to fit a PCA (its rows of the model are placeholders, its outputs NaN).
    """
    n_frames = stats.centre.shape[0]
    width = 2 * max(len(g) for g in groups)
    n_groups = len(groups)
    y = np.full((n_groups, n_frames, width), np.nan)
    r = np.ones((n_groups, n_frames, width))
    offset = np.zeros((n_groups, width))
    loading = np.zeros((n_groups, width, LATENT_DIM))
    process = np.tile(np.eye(LATENT_DIM), (n_groups, 1, 1))
    prior = np.tile(np.eye(LATENT_DIM), (n_groups, 1, 1))
    ok = np.zeros(n_groups, dtype=bool)
    for g, members in enumerate(groups):
        obs = stats.centre[:, members, :].reshape(n_frames, -1)
        var = stats.variance[:, members, :].reshape(n_frames, -1)
        if not _observable(obs):
            continue
        ok[g] = True
        size = obs.shape[1]
        y[g, :, :size], offset[g, :size], loading[g, :size], process[g], prior[g] = _group_model(
            obs, var
        )
        r[g, :, :size] = var
    return LatentModel(y, r, offset, loading, process, prior), ok


def _fit_group_s(model: LatentModel, g: int, frames: np.ndarray | None) -> float:
    """Maximum-likelihood s of one body part (constant noise = median ensemble variance)."""
    y = model.y[g] if frames is None else model.y[g][frames]
    r = model.r[g] if frames is None else model.r[g][frames]
    r_const = np.nan_to_num(constant_observation_variance(y.T, r.T), nan=1.0)
    args = (y[None], r_const[None], model.loading[g : g + 1], model.process[g : g + 1])
    prior = model.prior[g : g + 1]

    def objective(s: float) -> float:
        return float(latent_walk_nll(*args, np.array([s]), prior)[0])

    return minimise_over_log_s(objective)


def smooth_multiview(
    stats: EnsembleStats,
    groups: list[list[int]],
    smooth_param: np.ndarray,
    fit_frames: np.ndarray | None = None,
) -> Smoothed:
    """Run the multi-view EKS for the keypoints in ``groups``.

    Args:
        stats: ensemble statistics of all K keypoints.
        groups: per body part, the keypoint indices of its views.
        smooth_param: ``(G,)`` s per body part; NaN entries are fitted.
        fit_frames: frame indices the parameter search uses (default all).

    Returns:
        :class:`Smoothed` over all K keypoints: keypoints outside ``groups`` are NaN, and
        ``smooth_param`` / ``unobserved`` are given per keypoint (a body part's value on each of
        its views).
    """
    n_frames, n_keypoints, _ = stats.centre.shape
    model, ok = build_latent_models(stats, groups)
    s = np.asarray(smooth_param, dtype=float).copy()
    for g in np.flatnonzero(ok & np.isnan(s)):
        s[g] = _fit_group_s(model, g, fit_frames)
    s_run = np.where(ok, s, 1.0)  # placeholders for unbuildable groups, discarded below
    means, covs = smooth_latent_walks(
        model.y, model.r, model.loading, model.process, s_run, model.prior
    )
    fitted = np.einsum("god,gtd->gto", model.loading, means) + model.offset[:, None, :]
    variance = np.einsum("god,gtde,goe->gto", model.loading, covs, model.loading)
    out_mean = np.full((n_frames, n_keypoints, 2), np.nan)
    out_var = np.full((n_frames, n_keypoints, 2), np.nan)
    s_keypoint = np.full(n_keypoints, np.nan)
    unobserved = np.zeros(n_keypoints, dtype=bool)
    for g, members in enumerate(groups):
        s_keypoint[members] = s[g] if ok[g] else np.nan
        unobserved[members] = not ok[g]
        if ok[g]:
            size = 2 * len(members)
            out_mean[:, members] = fitted[g, :, :size].reshape(n_frames, len(members), 2)
            out_var[:, members] = variance[g, :, :size].reshape(n_frames, len(members), 2)
    return Smoothed(out_mean, out_var, s_keypoint, unobserved)

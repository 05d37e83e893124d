"""Batched scalar random-walk Kalman filter, RTS smoother and marginal likelihood.

The single-view EKS is, per keypoint and coordinate, the scalar model

    z_0 ~ N(0, p0),   z_t = z_(t-1) + w_t,  w_t ~ N(0, s),   y_t = z_t + v_t,  v_t ~ N(0, r_t)

so a whole video is a batch of B = keypoints x 2 independent scalar problems. The recursions are
sequential in time, which NumPy cannot express without a Python loop per frame; they are compiled
with numba instead (``cache=True``: compiled once per machine, then loaded from ``__pycache__``).
Measured on one core (see ``bench/eks.py``): the compiled smoother runs 100k frames x 8 series in
a few milliseconds, several times faster than a banded solve of the same posterior with
``scipy.linalg.solveh_banded`` (which moreover gives no variances), and the likelihood, evaluated
~25 times per keypoint by the parameter search, costs the same as one filter pass.

A NaN observation means "no observation at this frame": the update is skipped and the state is
carried by the random walk, so a frame that every member missed never poisons the keypoint.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# Smallest observation variance the filter accepts (the reference's clip).
MIN_OBSERVATION_VARIANCE = 1e-12


@numba.njit(cache=True)
def _filter(y, r, s, p0):  # pragma: no cover - compiled
    """Forward pass: filtered means and variances, shape (B, T) each."""
    n_series, n_frames = y.shape
    means = np.empty((n_series, n_frames))
    variances = np.empty((n_series, n_frames))
    for b in range(n_series):
        m = 0.0
        p = p0[b]
        for t in range(n_frames):
            if t > 0:
                p += s[b]
            obs = y[b, t]
            if not math.isnan(obs):
                noise = max(r[b, t], MIN_OBSERVATION_VARIANCE)
                total = p + noise
                m += (p / total) * (obs - m)
                p *= noise / total  # = p r / (p + r), without overflow for huge r
            means[b, t] = m
            variances[b, t] = p
    return means, variances


@numba.njit(cache=True)
def _smooth(means, variances, s):  # pragma: no cover - compiled
    """Backward (Rauch-Tung-Striebel) pass over filtered moments, in place."""
    n_series, n_frames = means.shape
    for b in range(n_series):
        for t in range(n_frames - 2, -1, -1):
            p_filt = variances[b, t]
            p_pred = p_filt + s[b]
            gain = p_filt / p_pred
            means[b, t] += gain * (means[b, t + 1] - means[b, t])
            variances[b, t] = p_filt + gain * gain * (variances[b, t + 1] - p_pred)
    return means, variances


@numba.njit(cache=True)
def _negative_log_likelihood(y, r_const, s, p0):  # pragma: no cover - compiled
    """Filter negative log marginal likelihood per series, constant observation variance."""
    n_series, n_frames = y.shape
    out = np.zeros(n_series)
    half_log_two_pi = 0.5 * math.log(2.0 * math.pi)
    for b in range(n_series):
        m = 0.0
        p = p0[b]
        noise = max(r_const[b], MIN_OBSERVATION_VARIANCE)
        total_nll = 0.0
        for t in range(n_frames):
            if t > 0:
                p += s[b]
            obs = y[b, t]
            if not math.isnan(obs):
                total = p + noise
                err = obs - m
                total_nll += half_log_two_pi + 0.5 * math.log(total) + 0.5 * err * err / total
                m += (p / total) * err
                p *= noise / total
        out[b] = total_nll
    return out


def _as_batch(
    values: np.ndarray | float, n_series: int, what: str, positive: bool = False
) -> np.ndarray:
    """A float64 ``(B,)`` array from a scalar or per-series values, checked."""
    array = np.asarray(values, dtype=float)
    out = np.full(n_series, float(array)) if array.ndim == 0 else array
    if out.shape != (n_series,):
        raise ValueError(f"{what}: expected a scalar or {n_series} values, got {array.shape}")
    low_ok = np.all(out > 0) if positive else np.all(out >= 0)
    if not np.all(np.isfinite(out)) or not low_ok:
        sign = "positive" if positive else "non-negative"
        raise ValueError(f"{what} must be finite and {sign}, got {out}")
    return np.ascontiguousarray(out)


def smooth_random_walks(
    y: np.ndarray, r: np.ndarray, s: np.ndarray | float, p0: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and variances of a batch of scalar random walks.

    Args:
        y: ``(B, T)`` observations, NaN where there is none.
        r: ``(B, T)`` observation variances (floored at 1e-12).
        s: process (smoothing) variance per series, scalar or ``(B,)``.
        p0: prior variance of z_0 per series (its mean is 0: callers centre the data).

    Returns:
        ``(mean, variance)``, each ``(B, T)``: the smoothed posterior of z_t given all of y.
    """
    y = np.ascontiguousarray(y, dtype=float)
    r = np.ascontiguousarray(r, dtype=float)
    if y.ndim != 2 or r.shape != y.shape:
        raise ValueError(f"y and r must both be (series, frames); got {y.shape} and {r.shape}")
    s = _as_batch(s, y.shape[0], "smoothing parameter s", positive=True)
    p0 = _as_batch(p0, y.shape[0], "prior variance p0")
    means, variances = _filter(y, r, s, p0)
    return _smooth(means, variances, s)


def random_walk_nll(
    y: np.ndarray, r_const: np.ndarray | float, s: np.ndarray | float, p0: np.ndarray | float
) -> np.ndarray:
    """Negative log marginal likelihood ``-log p(y | s)`` per series, constant observation noise.

    This is the objective the reference maximises to choose s; frames without an observation add
    nothing (they are integrated out by the random walk).

    Args:
        y: ``(B, T)`` observations, NaN where there is none.
        r_const: observation variance per series, scalar or ``(B,)``.
        s: process variance per series, scalar or ``(B,)``.
        p0: prior variance of z_0 per series.

    Returns:
        ``(B,)`` negative log-likelihoods.
    """
    y = np.ascontiguousarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y must be (series, frames); got {y.shape}")
    n = y.shape[0]
    return _negative_log_likelihood(
        y,
        _as_batch(r_const, n, "observation variance"),
        _as_batch(s, n, "smoothing parameter s", positive=True),
        _as_batch(p0, n, "p0"),
    )

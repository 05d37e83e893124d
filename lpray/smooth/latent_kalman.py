"""Batched Kalman filter/smoother for a D-dimensional random walk seen through a linear map.

The multi-view EKS models one body part as a latent z_t in R^D (D = 3 for mirror-style data)

    z_0 ~ N(0, P0),   z_t = z_(t-1) + w_t,  w_t ~ N(0, s Q),   y_t = C z_t + v_t,  v_t ~ N(0, diag r_t)

with y_t stacking the body part's (x, y) in every view. Because the observation noise is diagonal,
each frame's update is done one observation component at a time (sequential scalar updates): this
is exactly the joint update, needs no matrix inverse, gives the log-likelihood by the chain rule,
and lets a missing component (a view whose members all missed) simply be skipped.

The batch is over body parts; every body part has its own C, Q, P0 and s. Shorter observation
vectors are padded with NaN (skipped). Compiled with numba for the same reason as
:mod:`lpray.smooth.kalman`: the recursion is sequential in time.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from lpray.smooth.kalman import MIN_OBSERVATION_VARIANCE


@numba.njit(cache=True)
def _filter_one(y, r, c, q, s, p0, means, covs):  # pragma: no cover - compiled
    """Filter one series; return its negative log-likelihood and store the filtered moments.

    ``r`` is ``(T, O)`` or ``(1, O)`` (constant noise). ``means``/``covs`` have T rows, or one row
    when the caller only wants the likelihood (it is then overwritten every frame).
    """
    n_frames, n_obs = y.shape
    dim = c.shape[1]
    m = np.zeros(dim)
    p = np.empty((dim, dim))
    for i in range(dim):
        for j in range(dim):
            p[i, j] = p0[i, j]
    pc = np.empty(dim)
    nll = 0.0
    half_log_two_pi = 0.5 * math.log(2.0 * math.pi)
    for t in range(n_frames):
        if t > 0:
            for i in range(dim):
                for j in range(dim):
                    p[i, j] += s * q[i, j]
        row = t if r.shape[0] > 1 else 0
        for o in range(n_obs):
            obs = y[t, o]
            if math.isnan(obs):
                continue
            noise = max(r[row, o], MIN_OBSERVATION_VARIANCE)
            pred = 0.0
            for i in range(dim):
                pred += c[o, i] * m[i]
                acc = 0.0
                for j in range(dim):
                    acc += p[i, j] * c[o, j]
                pc[i] = acc
            total = noise
            for i in range(dim):
                total += c[o, i] * pc[i]
            err = obs - pred
            nll += half_log_two_pi + 0.5 * math.log(total) + 0.5 * err * err / total
            for i in range(dim):
                m[i] += pc[i] * err / total
            for i in range(dim):
                for j in range(dim):
                    p[i, j] -= pc[i] * pc[j] / total
        out = t if means.shape[0] > 1 else 0
        for i in range(dim):
            means[out, i] = m[i]
            for j in range(dim):
                covs[out, i, j] = p[i, j]
    return nll


@numba.njit(cache=True)
def _cholesky_solve(a, b):  # pragma: no cover - compiled
    """Solve ``a x = b`` for a small symmetric positive definite ``a``."""
    n = a.shape[0]
    low = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            acc = a[i, j]
            for k in range(j):
                acc -= low[i, k] * low[j, k]
            low[i, j] = math.sqrt(acc) if i == j else acc / low[j, j]
    x = np.empty(b.shape)
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            x[i, j] = b[i, j]
    for col in range(b.shape[1]):
        for i in range(n):  # forward substitution
            acc = x[i, col]
            for k in range(i):
                acc -= low[i, k] * x[k, col]
            x[i, col] = acc / low[i, i]
        for i in range(n - 1, -1, -1):  # backward substitution
            acc = x[i, col]
            for k in range(i + 1, n):
                acc -= low[k, i] * x[k, col]
            x[i, col] = acc / low[i, i]
    return x


@numba.njit(cache=True)
def _smooth_one(means, covs, q, s):  # pragma: no cover - compiled
    """Rauch-Tung-Striebel pass (identity dynamics) over filtered moments, in place."""
    n_frames, dim = means.shape
    step = np.empty(dim)
    diff = np.empty((dim, dim))
    tmp = np.empty((dim, dim))
    p_filt = np.empty((dim, dim))
    p_pred = np.empty((dim, dim))
    gain = np.empty((dim, dim))
    for t in range(n_frames - 2, -1, -1):
        for i in range(dim):
            for j in range(dim):
                p_filt[i, j] = covs[t, i, j]
                p_pred[i, j] = covs[t, i, j] + s * q[i, j]
        gain_t = _cholesky_solve(p_pred, p_filt)  # P_pred^-1 P_filt = G^T (both symmetric)
        for i in range(dim):
            for j in range(dim):
                gain[i, j] = gain_t[j, i]
        for i in range(dim):
            step[i] = means[t + 1, i] - means[t, i]
            for j in range(dim):
                diff[i, j] = covs[t + 1, i, j] - p_pred[i, j]
        for i in range(dim):
            acc = 0.0
            for j in range(dim):
                acc += gain[i, j] * step[j]
            means[t, i] += acc
        for i in range(dim):  # tmp = G (P_next - P_pred)
            for j in range(dim):
                acc = 0.0
                for k in range(dim):
                    acc += gain[i, k] * diff[k, j]
                tmp[i, j] = acc
        for i in range(dim):  # P_smooth = P_filt + tmp G^T
            for j in range(dim):
                acc = p_filt[i, j]
                for k in range(dim):
                    acc += tmp[i, k] * gain[j, k]
                covs[t, i, j] = acc


@numba.njit(cache=True)
def _smooth_batch(y, r, c, q, s, p0):  # pragma: no cover - compiled
    n_series, n_frames, _ = y.shape
    dim = c.shape[2]
    means = np.empty((n_series, n_frames, dim))
    covs = np.empty((n_series, n_frames, dim, dim))
    for b in range(n_series):
        _filter_one(y[b], r[b], c[b], q[b], s[b], p0[b], means[b], covs[b])
        _smooth_one(means[b], covs[b], q[b], s[b])
    return means, covs


@numba.njit(cache=True)
def _nll_batch(y, r_const, c, q, s, p0):  # pragma: no cover - compiled
    n_series = y.shape[0]
    dim = c.shape[2]
    out = np.empty(n_series)
    dummy_means = np.empty((1, dim))
    dummy_covs = np.empty((1, dim, dim))
    for b in range(n_series):
        out[b] = _filter_one(
            y[b], r_const[b : b + 1], c[b], q[b], s[b], p0[b], dummy_means, dummy_covs
        )
    return out


def _contiguous(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=float) for a in arrays]


def smooth_latent_walks(
    y: np.ndarray,
    r: np.ndarray,
    c: np.ndarray,
    q: np.ndarray,
    s: np.ndarray,
    p0: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed latent means ``(B, T, D)`` and covariances ``(B, T, D, D)``.

    Args:
        y: ``(B, T, O)`` observations, NaN = none.
        r: ``(B, T, O)`` observation variances.
        c: ``(B, O, D)`` observation matrices.
        q: ``(B, D, D)`` process covariance shapes (scaled by s).
        s: ``(B,)`` positive smoothing parameters.
        p0: ``(B, D, D)`` prior covariances of z_0 (mean 0).
    """
    if np.any(~np.isfinite(s)) or np.any(np.asarray(s) <= 0):
        raise ValueError(f"smoothing parameters must be finite and positive, got {s}")
    return _smooth_batch(*_contiguous(y, r, c, q, s, p0))


def latent_walk_nll(
    y: np.ndarray,
    r_const: np.ndarray,
    c: np.ndarray,
    q: np.ndarray,
    s: np.ndarray,
    p0: np.ndarray,
) -> np.ndarray:
    """Negative log marginal likelihood per series with constant noise ``r_const`` ``(B, O)``."""
    return _nll_batch(*_contiguous(y, r_const, c, q, s, p0))

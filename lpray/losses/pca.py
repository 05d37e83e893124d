"""Pose PCA: a NaN-aware PCA fitted on training labels, applied as a differentiable prior.

COORDINATE SPACE -- READ THIS. The PCA is fitted on labels in FRAME pixels (the video's own
pixels) and must be applied to predictions in FRAME pixels. Lightning Pose fits its PCA on labels
in resized-image coordinates but applies it to predictions in frame pixels; the reprojection
errors of true poses then include the resize distortion and most of them exceed epsilon. lpray
fits and applies in one space, and ``PosePCA.space`` records which (always ``"frame"``).

Two layouts share one code path. An observation is a group of keypoints flattened as
(x0, y0, x1, y1, ...):

* single view: one group per frame, the chosen keypoints (Lightning Pose's ``pca_singleview``);
* multi view: one group per (frame, body part), that part's keypoint in every view
  (``pca_multiview``; e.g. mirror-mouse ``paw_top``/``paw_bot``). For affine cameras a 3-D point
  seen in V views lies on a 3-D affine subspace of the 2V observation space, hence 3 components.

Fitting is numpy float64 (once per run); application is torch (differentiable, any device).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lpray.errors import UserError
from lpray.losses.registry import FrameMetric

if TYPE_CHECKING:  # torch is imported where a PCA is applied: the config needs none (registry)
    import torch


class PCAFitError(UserError, ValueError):
    """The labels cannot support the PCA; ``dims`` names the offending observation dimensions.

    Callers translate dimension ``d`` of a layout to a keypoint with ``PosePCA``-style indexing:
    observation dimension ``d`` is coordinate ``d % 2`` (0 = x, 1 = y) of the group's keypoint
    ``d // 2``.
    """

    def __init__(self, message: str, dims: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.dims = dims


@dataclass(frozen=True)
class PCAFit:
    """A fitted PCA (numpy, float64).

    Attributes:
        mean: ``(D,)`` per-dimension mean of the available values.
        components: ``(C, D)`` orthonormal rows, by decreasing variance.
        explained_variance_ratio: ``(C,)`` each component's share of the total variance.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray


def _pairwise_covariance(obs: np.ndarray) -> np.ndarray:
    """Covariance from pairwise-complete observations (as ``pandas.DataFrame.cov``).

    Entry (a, b) uses only the rows where both a and b are present, centred on those rows' own
    means, with ``n_ab - 1`` in the denominator; on complete data it equals ``np.cov``. Using
    every available pair keeps frames with a few occluded keypoints informative, which matters
    when only tens of frames are labeled.
    """
    present = ~np.isnan(obs)
    x = np.where(present, obs, 0.0)
    m = present.astype(np.float64)
    n_ab = m.T @ m
    sum_a = x.T @ m  # [a, b] = sum of x_a over rows where both present
    sum_ab = x.T @ x
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = (sum_ab - sum_a * sum_a.T / n_ab) / (n_ab - 1.0)
    bad = np.argwhere(np.triu(n_ab < 2))
    if len(bad):
        a, b = (int(v) for v in bad[0])
        raise PCAFitError(
            f"observation dimensions {a} and {b} are both present in fewer than 2 rows "
            f"({int(n_ab[a, b])}); their covariance is undefined",
            (a, b),
        )
    return (cov + cov.T) / 2.0


def fit_pca(
    observations: np.ndarray,
    n_components: int | None = None,
    variance_explained: float = 0.99,
) -> PCAFit:
    """NaN-aware PCA by eigen-decomposition of the pairwise-complete covariance.

    A pairwise-complete covariance need not be positive semi-definite; negative eigenvalues
    (noise from differently-sized pair sets) are treated as zero variance.

    Args:
        observations: ``(N, D)``; NaN marks a missing value.
        n_components: Components to keep; None keeps the fewest explaining ``variance_explained``.
        variance_explained: Fraction in (0, 1] used when ``n_components`` is None.

    Returns:
        The fit.

    Raises:
        PCAFitError (a ValueError): N < 2, a dimension with < 2 observations (``dims`` lists
            them), a pair of dimensions never observed together twice, or zero total variance.
        ValueError: bad shapes or arguments.
    """
    obs = np.asarray(observations, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] < 1:
        raise ValueError(f"observations must be (N, D) with D >= 1, got shape {obs.shape}")
    n, d = obs.shape
    if n < 2:
        raise PCAFitError(f"need at least 2 observations to fit a PCA, got {n}")
    if n_components is not None and not 1 <= n_components <= d:
        raise ValueError(f"n_components must be in [1, {d}], got {n_components}")
    if not 0 < variance_explained <= 1:
        raise ValueError(f"variance_explained must be in (0, 1], got {variance_explained}")
    counts = (~np.isnan(obs)).sum(axis=0)
    sparse = tuple(int(i) for i in np.flatnonzero(counts < 2))
    if sparse:
        raise PCAFitError(
            f"observation dimension(s) {list(sparse)} have fewer than 2 non-NaN values "
            f"(counts {[int(counts[i]) for i in sparse]})",
            sparse,
        )
    mean = np.nanmean(obs, axis=0)
    eigvals, eigvecs = np.linalg.eigh(_pairwise_covariance(obs))
    order = np.argsort(eigvals)[::-1]
    eigvals = np.clip(eigvals[order], 0.0, None)
    eigvecs = eigvecs[:, order].T
    total = eigvals.sum()
    if total <= 0:
        raise PCAFitError("observations have zero variance; a PCA is meaningless")
    ratio = eigvals / total
    if n_components is None:
        cumulative = np.cumsum(ratio)
        n_components = int(np.searchsorted(cumulative, variance_explained - 1e-12)) + 1
        n_components = min(n_components, d)
    components = eigvecs[:n_components]
    # Deterministic signs (largest-magnitude entry positive): reproducible fits across machines.
    pivot = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(n_components), pivot])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    return PCAFit(mean, components, ratio[:n_components])


@dataclass(frozen=True)
class PosePCA:
    """A pose PCA ready to apply to keypoints ``(..., K, 2)`` in FRAME pixels.

    Attributes:
        mean: ``(D,)`` float32, ``D = 2 * group size``.
        components: ``(C, D)`` float32, orthonormal rows.
        groups: ``(G, M)`` keypoint indices; each row is gathered into one observation of
            ``2 * M`` dims. Single view: ``G = 1`` (the chosen keypoints). Multi view: one row per
            body part, one column per view.
        epsilon: Reprojection error (pixels) below which the loss is zero.
        layout: ``"singleview"`` or ``"multiview"``.
        space: Coordinate space of fit and application; always ``"frame"`` (frame pixels).
    """

    mean: torch.Tensor
    components: torch.Tensor
    groups: tuple[tuple[int, ...], ...]
    epsilon: float
    layout: str
    space: str = "frame"

    @property
    def keypoint_indices(self) -> tuple[int, ...]:
        """Covered keypoints, in the order of :func:`pca_reprojection_error`'s last axis."""
        return tuple(k for group in self.groups for k in group)

    def to(self, device: torch.device | str) -> PosePCA:
        """A copy with its tensors on ``device``."""
        return PosePCA(
            self.mean.to(device),
            self.components.to(device),
            self.groups,
            self.epsilon,
            self.layout,
            self.space,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, floats): checkpoint- and YAML-safe."""
        return {
            "mean": self.mean.detach().cpu().tolist(),
            "components": self.components.detach().cpu().tolist(),
            "groups": [list(g) for g in self.groups],
            "epsilon": float(self.epsilon),
            "layout": self.layout,
            "space": self.space,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PosePCA:
        """Inverse of :meth:`to_dict`."""
        import torch

        return cls(
            torch.tensor(data["mean"], dtype=torch.float32),
            torch.tensor(data["components"], dtype=torch.float32),
            tuple(tuple(int(k) for k in g) for g in data["groups"]),
            float(data["epsilon"]),
            str(data["layout"]),
            str(data.get("space", "frame")),
        )


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"labels must be (N, K, 2) in frame pixels, got shape {arr.shape}")
    return arr


def _check_groups(groups: list[list[int]], n_keypoints: int, what: str) -> np.ndarray:
    rows = [list(g) for g in groups]
    if not rows or any(len(r) != len(rows[0]) for r in rows) or not rows[0]:
        raise ValueError(f"{what} must be non-empty and all of one length, got {groups}")
    flat = [int(k) for r in rows for k in r]
    out_of_range = [k for k in flat if not 0 <= k < n_keypoints]
    if out_of_range:
        raise ValueError(f"{what}: keypoint indices {out_of_range} outside [0, {n_keypoints})")
    if len(set(flat)) != len(flat):
        raise ValueError(f"{what}: a keypoint index appears more than once: {groups}")
    return np.asarray(rows, dtype=np.int64)


def _observations(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``(N, K, 2)`` -> ``(N * G, 2 * M)`` rows, frame-major then group."""
    gathered = labels[:, groups, :]  # (N, G, M, 2)
    return gathered.reshape(-1, groups.shape[1] * 2)


def _reprojection_errors_np(fit: PCAFit, obs: np.ndarray) -> np.ndarray:
    """Per-keypoint Euclidean reprojection errors ``(rows, M)`` of complete observations."""
    centred = obs - fit.mean
    residual = centred - centred @ fit.components.T @ fit.components
    return np.linalg.norm(residual.reshape(len(obs), -1, 2), axis=-1)


def _build(
    labels: np.ndarray,
    groups: np.ndarray,
    layout: str,
    n_components: int | None,
    variance_explained: float,
    epsilon_percentile: float,
) -> PosePCA:
    if not 0 <= epsilon_percentile <= 100:
        raise ValueError(f"epsilon_percentile must be in [0, 100], got {epsilon_percentile}")
    obs = _observations(labels, groups)
    fit = fit_pca(obs, n_components, variance_explained)
    complete = obs[~np.isnan(obs).any(axis=1)]
    if len(complete) == 0:
        raise PCAFitError(
            "no observation has all its keypoints labeled; epsilon (a percentile of the labels' "
            "own reprojection errors) cannot be computed"
        )
    epsilon = float(np.percentile(_reprojection_errors_np(fit, complete), epsilon_percentile))
    import torch

    return PosePCA(
        torch.tensor(fit.mean, dtype=torch.float32),
        torch.tensor(fit.components, dtype=torch.float32),
        tuple(tuple(int(k) for k in g) for g in groups),
        epsilon,
        layout,
    )


def fit_singleview_pca(
    labels: np.ndarray,
    keypoint_indices: list[int],
    variance_explained: float = 0.99,
    epsilon_percentile: float = 99,
    n_components: int | None = None,
) -> PosePCA:
    """Fit the single-view pose PCA on training labels in FRAME pixels.

    The covariance uses every available pair of values; epsilon uses only frames with all chosen
    keypoints labeled (a partial pose has no full reprojection).

    Args:
        labels: ``(N, K, 2)`` training labels in FRAME pixels, NaN for missing.
        keypoint_indices: The keypoints the PCA covers (observation = their flattened x, y).
        variance_explained: Keep the fewest components explaining at least this fraction.
        epsilon_percentile: Epsilon = this percentile of the labels' per-keypoint errors.
        n_components: Fixed number of components instead of ``variance_explained``.

    Returns:
        The PCA with ``layout="singleview"``.

    Raises:
        PCAFitError: see :func:`fit_pca`; ``dims`` index the flattened chosen keypoints.
    """
    arr = _check_labels(labels)
    groups = _check_groups([list(keypoint_indices)], arr.shape[1], "keypoint_indices")
    return _build(arr, groups, "singleview", n_components, variance_explained, epsilon_percentile)


def fit_multiview_pca(
    labels: np.ndarray,
    view_groups: list[list[int]],
    n_components: int = 3,
    epsilon_percentile: float = 99,
) -> PosePCA:
    """Fit the multi-view PCA: each observation is one body part in all views, FRAME pixels.

    All body parts' observations are pooled (``N * n_parts`` rows of ``2 * n_views`` dims), so
    the PCA learns the views' shared 3-D geometry, not any pose.

    Args:
        labels: ``(N, K, 2)`` training labels in FRAME pixels, NaN for missing.
        view_groups: One inner list per body part: its keypoint index in each view (same view
            order in every list).
        n_components: Components to keep (3 for a 3-D point under affine cameras).
        epsilon_percentile: Epsilon = this percentile of the labels' per-keypoint errors.

    Returns:
        The PCA with ``layout="multiview"``.
    """
    arr = _check_labels(labels)
    groups = _check_groups(view_groups, arr.shape[1], "view_groups")
    if groups.shape[1] < 2:
        raise ValueError(f"view_groups need at least 2 views per body part, got {view_groups}")
    return _build(arr, groups, "multiview", n_components, 1.0, epsilon_percentile)


@functools.lru_cache(maxsize=64)
def _group_index(groups: tuple[tuple[int, ...], ...], device: torch.device) -> torch.Tensor:
    """``groups`` as a long tensor on ``device``, made once: building it each call is a blocking
    host-to-device copy (a device sync in every training step)."""
    import torch

    with torch.inference_mode(False):  # a cached inference tensor could not be kept for backward
        return torch.tensor(groups, dtype=torch.long, device=device)


def pca_reprojection_error(pca: PosePCA, keypoints: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (pixels) between each covered keypoint and its PCA reprojection.

    Args:
        pca: The fitted PCA.
        keypoints: ``(..., K, 2)`` in FRAME pixels (the space the PCA was fitted in).

    Returns:
        ``(..., K_covered)`` errors ordered as ``pca.keypoint_indices``; differentiable.
    """
    import torch

    if keypoints.ndim < 2 or keypoints.shape[-1] != 2:
        raise ValueError(f"expected keypoints (..., K, 2), got {tuple(keypoints.shape)}")
    top = max(pca.keypoint_indices)
    if top >= keypoints.shape[-2]:
        raise ValueError(
            f"PCA covers keypoint index {top} but keypoints have only {keypoints.shape[-2]}"
        )
    groups = _group_index(tuple(tuple(g) for g in pca.groups), keypoints.device)
    g, m = groups.shape
    lead = keypoints.shape[:-2]
    obs = keypoints[..., groups.flatten(), :].reshape(*lead, g, 2 * m)
    mean = pca.mean.to(device=keypoints.device, dtype=keypoints.dtype)
    comps = pca.components.to(device=keypoints.device, dtype=keypoints.dtype)
    centred = obs - mean
    residual = centred - (centred @ comps.T) @ comps
    error = torch.linalg.vector_norm(residual.reshape(*lead, g, m, 2), dim=-1)
    return error.reshape(*lead, g * m)


def pca_loss(pca: PosePCA, keypoints: torch.Tensor) -> torch.Tensor:
    """Mean over observations and covered keypoints of ``relu(reprojection error - epsilon)``.

    Serves single- and multi-view PCA alike: the ``PosePCA`` knows which keypoints form an
    observation.

    Args:
        pca: Fitted PCA (frame pixels).
        keypoints: ``(N, K, 2)`` (or any ``(..., K, 2)``) predictions in FRAME pixels.

    Returns:
        Scalar loss.
    """
    error = pca_reprojection_error(pca, keypoints)
    return (error - pca.epsilon).relu().mean()


def sequence_pca_loss(
    keypoints: torch.Tensor, confidence: torch.Tensor, settings: Any, pca: PosePCA
) -> torch.Tensor:
    """:func:`pca_loss` as a registered loss: every frame of ``(B, S, K, 2)`` sequences is an
    observation (confidence plays no part: an occluded keypoint still has a plausible place)."""
    return pca_loss(pca, keypoints.flatten(0, 1))


def percentile_problems(percentile: float) -> list[tuple[str, str]]:
    """The ``epsilon_percentile`` check both PCA losses share (a registry ``problems`` entry)."""
    if 0 <= percentile <= 100:
        return []
    return [("epsilon_percentile", f"must be in [0, 100], got {percentile}")]


def pca_frame_metric(column: str) -> Callable[[np.ndarray, PosePCA | None], FrameMetric | None]:
    """The per-frame metric of a PCA loss: reprojection errors of ``(T, K, 2)`` predictions,
    written as ``<column>|<keypoint>``; none without a fitted PCA."""

    def metric(keypoints: np.ndarray, pca: PosePCA | None) -> FrameMetric | None:
        if pca is None:
            return None
        import torch

        with torch.no_grad():
            points = torch.as_tensor(keypoints, dtype=torch.float32)
            errors = pca_reprojection_error(pca.to(points.device), points)
        return FrameMetric(column, errors.numpy(), pca.keypoint_indices)

    return metric

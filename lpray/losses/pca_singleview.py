"""The single-view pose-PCA loss: a predicted pose should lie near the labels' pose subspace.

Lightning Pose's ``pca_singleview``; the fit and its coordinate space are
:mod:`lpray.losses.pca`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpray.losses.pca import (
    PosePCA,
    fit_singleview_pca,
    pca_frame_metric,
    percentile_problems,
    sequence_pca_loss,
)
from lpray.losses.registry import FitData, LossError, UnsupervisedLoss

# Keypoints labeled in fewer frames than this are left out of the default PCA: rarely seen ones
# would dominate the covariance with few, noisy pairs.
MIN_PRESENT_FRACTION = 0.9


@dataclass
class PCASingleViewLossConfig:
    """``losses.pca_singleview``.

    Attributes:
        weight: 0 switches the loss off.
        keypoints: the keypoints the PCA covers; None: every keypoint present in >= 90% of the
            training labels.
        variance_explained: keep the fewest components explaining this fraction.
        epsilon_percentile: epsilon = this percentile of the labels' own reprojection errors.
    """

    weight: float = 0.0
    keypoints: list[str] | None = None
    variance_explained: float = 0.99
    epsilon_percentile: float = 99.0


def _fit(settings: PCASingleViewLossConfig, data: FitData) -> PosePCA:
    names = data.keypoint_names
    if settings.keypoints is not None:
        unknown = [k for k in settings.keypoints if k not in names]
        if unknown:
            raise LossError(f"losses.pca_singleview.keypoints: unknown keypoints {unknown}")
        indices = [names.index(k) for k in settings.keypoints]
    else:
        present = (~np.isnan(data.labels[..., 0])).mean(axis=0)
        indices = [k for k in range(len(names)) if present[k] >= MIN_PRESENT_FRACTION]
    return fit_singleview_pca(
        data.labels, indices, settings.variance_explained, settings.epsilon_percentile
    )


def _problems(settings: PCASingleViewLossConfig) -> list[tuple[str, str]]:
    problems = []
    if not 0 < settings.variance_explained <= 1:
        problems.append(("variance_explained", "must be in (0, 1]"))
    return problems + percentile_problems(settings.epsilon_percentile)


LOSS = UnsupervisedLoss(
    name="pca_singleview",
    config=PCASingleViewLossConfig,
    loss=sequence_pca_loss,
    metric=pca_frame_metric("pca_singleview"),
    fit=_fit,
    state_from_dict=PosePCA.from_dict,
    problems=_problems,
    idle_hint=(
        "no prediction left the pose subspace by more than its epsilon "
        "(losses.pca_singleview.epsilon_percentile); lower the percentile"
    ),
)

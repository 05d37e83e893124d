"""The multi-view PCA loss: one body part seen in several views should be one 3-D point.

Lightning Pose's ``pca_multiview``; the fit and its coordinate space are
:mod:`lpray.losses.pca`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from lpray.losses.pca import (
    PosePCA,
    fit_multiview_pca,
    pca_frame_metric,
    percentile_problems,
    sequence_pca_loss,
)
from lpray.losses.registry import FitData, LossError, UnsupervisedLoss


@dataclass
class PCAMultiViewLossConfig:
    """``losses.pca_multiview`` (needs ``data.view_groups``).

    Attributes:
        weight: 0 switches the loss off.
        n_components: components kept (3: a 3-D point under affine cameras).
        epsilon_percentile: epsilon = this percentile of the labels' own reprojection errors.
    """

    weight: float = 0.0
    n_components: int = 3
    epsilon_percentile: float = 99.0


def _fit(settings: PCAMultiViewLossConfig, data: FitData) -> PosePCA:
    if not data.view_groups:
        raise LossError("losses.pca_multiview.weight > 0 needs data.view_groups (multi-view data)")
    names = data.keypoint_names
    groups = [[names.index(k) for k in group] for group in data.view_groups]
    return fit_multiview_pca(
        data.labels, groups, settings.n_components, settings.epsilon_percentile
    )


def _problems(settings: PCAMultiViewLossConfig) -> list[tuple[str, str]]:
    problems = percentile_problems(settings.epsilon_percentile)
    if settings.n_components < 1:
        problems.append(("n_components", "must be >= 1"))
    return problems


LOSS = UnsupervisedLoss(
    name="pca_multiview",
    config=PCAMultiViewLossConfig,
    loss=sequence_pca_loss,
    metric=pca_frame_metric("pca_multiview"),
    fit=_fit,
    state_from_dict=PosePCA.from_dict,
    problems=_problems,
    idle_hint=(
        "no prediction broke the views' agreement by more than its epsilon "
        "(losses.pca_multiview.epsilon_percentile); lower the percentile"
    ),
)

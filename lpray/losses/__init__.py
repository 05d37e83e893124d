"""Losses: supervised heatmap MSE, the unsupervised-loss registry, PCA fitting, combining."""

from lpray.losses.pca import (
    PCAFit,
    PCAFitError,
    PosePCA,
    fit_multiview_pca,
    fit_pca,
    fit_singleview_pca,
    pca_loss,
    pca_reprojection_error,
)
from lpray.losses.registry import UnsupervisedLoss, get_loss, list_losses
from lpray.losses.supervised import gaussian_heatmaps, heatmap_mse
from lpray.losses.temporal import temporal_loss
from lpray.losses.unsupervised import anneal_weight, combine_losses

__all__ = [
    "PCAFit",
    "PCAFitError",
    "PosePCA",
    "UnsupervisedLoss",
    "anneal_weight",
    "combine_losses",
    "fit_multiview_pca",
    "fit_pca",
    "fit_singleview_pca",
    "gaussian_heatmaps",
    "get_loss",
    "heatmap_mse",
    "list_losses",
    "pca_loss",
    "pca_reprojection_error",
    "temporal_loss",
]

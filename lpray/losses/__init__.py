"""Losses: supervised heatmap MSE, temporal and pose-PCA hinge losses, PCA fitting."""

from lpray.losses.pca import (
    PCAFit,
    PCAFitError,
    PosePCA,
    fit_multiview_pca,
    fit_pca,
    fit_singleview_pca,
    pca_reprojection_error,
)
from lpray.losses.supervised import gaussian_heatmaps, heatmap_mse
from lpray.losses.unsupervised import anneal_weight, combine_losses, pca_loss, temporal_loss

__all__ = [
    "PCAFit",
    "PCAFitError",
    "PosePCA",
    "anneal_weight",
    "combine_losses",
    "fit_multiview_pca",
    "fit_pca",
    "fit_singleview_pca",
    "gaussian_heatmaps",
    "heatmap_mse",
    "pca_loss",
    "pca_reprojection_error",
    "temporal_loss",
]

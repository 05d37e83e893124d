"""Losses: supervised heatmap MSE, the unsupervised-loss registry, PCA fitting, combining.

Names are imported on first use: ``lpray.config`` reads the registry, and importing the torch
code with it made every command (and the ``lpray track`` driver, before Ray starts) import
torch.
"""

import importlib

_EXPORTS = {
    "PCAFit": "pca",
    "PCAFitError": "pca",
    "PosePCA": "pca",
    "fit_multiview_pca": "pca",
    "fit_pca": "pca",
    "fit_singleview_pca": "pca",
    "pca_loss": "pca",
    "pca_reprojection_error": "pca",
    "UnsupervisedLoss": "registry",
    "get_loss": "registry",
    "list_losses": "registry",
    "gaussian_heatmaps": "supervised",
    "heatmap_mse": "supervised",
    "temporal_loss": "temporal",
    "anneal_weight": "unsupervised",
    "combine_losses": "unsupervised",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 lazy attribute
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lpray.losses' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lpray.losses.{_EXPORTS[name]}"), name)

"""Ensemble Kalman Smoother (EKS): single-view and multi-view, with maximum-likelihood smoothing.

Modules, in the order data flows through them: :mod:`~lpray.smooth.members` (check and stack the
ensemble's tables), :mod:`~lpray.smooth.ensemble` (per-frame centre, variance, confidence),
:mod:`~lpray.smooth.fit` (the smoothing parameter), :mod:`~lpray.smooth.kalman` and
:mod:`~lpray.smooth.latent_kalman` (compiled filter/smoother cores),
:mod:`~lpray.smooth.singleview` and :mod:`~lpray.smooth.multiview` (the two models), and
:mod:`~lpray.smooth.api` (tables in, table out).
"""

from lpray.smooth.api import smooth_ensemble, smooth_ensemble_multiview

__all__ = ["smooth_ensemble", "smooth_ensemble_multiview"]

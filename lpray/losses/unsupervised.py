"""How the losses are combined: the anneal ramp and the weighted total.

The unsupervised losses themselves are one module each, listed by :mod:`lpray.losses.registry`
(:mod:`lpray.losses.temporal`, :mod:`lpray.losses.pca_singleview`,
:mod:`lpray.losses.pca_multiview`). Every one works in FRAME pixels (the video's own pixels):
epsilons are in pixels of the video the user sees, and the PCA was fitted in that same space
(see ``lpray.losses.pca``). All are hinge losses ``relu(error - epsilon)``: errors within what
the labels themselves show (or a user-chosen tolerance) cost nothing, larger ones grow linearly.
"""

from __future__ import annotations

import torch


def anneal_weight(epoch: float, rate: float = 0.01, start_epoch: float = 0) -> float:
    """Unsupervised-loss multiplier ramping linearly 0 -> 1 by ``rate`` per epoch.

    Early on the network's predictions are noise; unsupervised losses on noise only fight the
    supervised signal, so they are phased in.

    Args:
        epoch: Current (possibly fractional) epoch.
        rate: Increase per epoch (> 0).
        start_epoch: Epoch at which the ramp starts from 0.

    Returns:
        ``clamp((epoch - start_epoch) * rate, 0, 1)``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    return float(min(1.0, max(0.0, (epoch - start_epoch) * rate)))


def combine_losses(
    supervised: torch.Tensor,
    unsupervised: dict[str, torch.Tensor],
    weights: dict[str, float],
    supervised_weight: float,
    anneal: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``total = supervised_weight * L_sup + anneal * sum_i weights[i] * L_i``.

    Args:
        supervised: Scalar supervised loss.
        unsupervised: Scalar unsupervised losses by name (may be empty).
        weights: Weight per unsupervised loss; every key of ``unsupervised`` needs one (extra
            weights, for losses not computed this step, are ignored).
        supervised_weight: Weight of the supervised loss.
        anneal: Current anneal factor (:func:`anneal_weight`).

    Returns:
        ``total`` and a log dict of detached scalars: ``total``, ``supervised``, each loss by its
        name and its weighted contribution as ``<name>_weighted``.
    """
    missing = sorted(set(unsupervised) - set(weights))
    if missing:
        raise ValueError(f"no weight given for unsupervised loss(es) {missing}")
    for name, value in {"supervised": supervised, **unsupervised}.items():
        if value.ndim != 0:
            raise ValueError(f"loss {name!r} must be a scalar, got shape {tuple(value.shape)}")
    total = supervised_weight * supervised
    logged: dict[str, torch.Tensor] = {"supervised": supervised.detach()}
    for name, value in unsupervised.items():
        contribution = anneal * weights[name] * value
        total = total + contribution
        logged[name] = value.detach()
        logged[f"{name}_weighted"] = contribution.detach()
    logged["total"] = total.detach()
    return total, logged

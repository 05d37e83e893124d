"""Unsupervised losses on unlabeled video, and how all losses are combined.

Every loss here works in FRAME pixels (the video's own pixels): epsilons are in pixels of the
video the user sees, and the PCA was fitted in that same space (see ``lpray.losses.pca``).
All losses are hinge losses ``relu(error - epsilon)``: errors within what the labels themselves
show (or a user-chosen tolerance) cost nothing, larger ones grow linearly.
"""

from __future__ import annotations

import torch

from lpray.losses.pca import PosePCA, pca_reprojection_error


def temporal_loss(
    keypoints: torch.Tensor,
    confidence: torch.Tensor,
    epsilon: float | torch.Tensor = 20.0,
    confidence_threshold: float = 0.05,
) -> torch.Tensor:
    """Penalise keypoint jumps between consecutive frames beyond ``epsilon`` pixels.

    ``d = |p(t+1) - p(t)|`` per keypoint within each sequence; a pair is ignored when either
    frame's confidence is below ``confidence_threshold`` (a keypoint the network cannot see, e.g.
    occluded, may legitimately reappear elsewhere). Loss = mean over kept pairs of
    ``relu(d - epsilon)``; an exact zero (graph intact) when no pair is kept.

    Args:
        keypoints: ``(B, S, K, 2)`` sequences (or one sequence ``(S, K, 2)``), frame pixels.
        confidence: ``(B, S, K)`` (or ``(S, K)``); only compared with the threshold.
        epsilon: Allowed motion per frame in pixels: a scalar or per keypoint ``(K,)``.
        confidence_threshold: Minimum confidence for both frames of a pair.

    Returns:
        Scalar loss.
    """
    if keypoints.ndim == 3:
        keypoints, confidence = keypoints.unsqueeze(0), confidence.unsqueeze(0)
    if keypoints.ndim != 4 or keypoints.shape[-1] != 2:
        raise ValueError(
            f"expected keypoints (B, S, K, 2) or (S, K, 2), got {tuple(keypoints.shape)}"
        )
    if confidence.shape != keypoints.shape[:-1]:
        raise ValueError(
            f"confidence must be {tuple(keypoints.shape[:-1])} to match keypoints, got "
            f"{tuple(confidence.shape)}"
        )
    eps = torch.as_tensor(epsilon, dtype=keypoints.dtype, device=keypoints.device)
    k = keypoints.shape[-2]
    if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != k):
        raise ValueError(f"epsilon must be a scalar or ({k},), got shape {tuple(eps.shape)}")
    step = torch.linalg.vector_norm(keypoints[:, 1:] - keypoints[:, :-1], dim=-1)  # (B, S-1, K)
    ok = confidence.detach() >= confidence_threshold
    keep = ok[:, 1:] & ok[:, :-1]
    hinge = torch.relu(step - eps)
    # Masked sum over a clamped count: an exact, graph-connected zero when nothing is kept, and no
    # host-device sync on GPU.
    kept = keep.sum().clamp(min=1).to(hinge.dtype)
    return torch.where(keep, hinge, torch.zeros_like(hinge)).sum() / kept


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
    return torch.relu(error - pca.epsilon).mean()


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

"""Supervised heatmap targets and the heatmap MSE loss.

Targets are un-normalised Gaussians with PEAK 1 at the keypoint (Lightning Pose normalises its
targets to SUM 1, peak ~0.1 at sigma 1.25; so lpray's heatmap MSE is ~(2 pi sigma^2)^2 ~ 96x LP's
for the same fit, which matters when reusing LP's loss weights). Keypoint coordinates are in
HEATMAP pixels under the project's pixel-centre convention (use
``lpray.models.coordinates.image_to_heatmap`` first).
"""

from __future__ import annotations

import torch

Size2 = tuple[int, int]


def gaussian_heatmaps(
    keypoints: torch.Tensor, heatmap_size: Size2, sigma: float = 1.25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target maps, one per keypoint, peaking at 1 on the keypoint.

    A keypoint with a NaN (or infinite) coordinate is unlabeled: its map is all zeros and it is
    marked invalid so it contributes nothing to the loss. A keypoint outside the map is still
    valid: the part of its Gaussian tail that falls on the map is a correct target.

    Args:
        keypoints: ``(B, K, 2)`` as (x, y) in heatmap pixel coordinates.
        heatmap_size: ``(h, w)``.
        sigma: Gaussian standard deviation in heatmap pixels.

    Returns:
        ``targets (B, K, h, w)`` ``exp(-r^2 / (2 sigma^2))`` and ``valid (B, K)`` bool.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"expected keypoints (B, K, 2), got {tuple(keypoints.shape)}")
    if len(heatmap_size) != 2 or min(heatmap_size) < 1:
        raise ValueError(f"heatmap_size must be (h, w) with both >= 1, got {heatmap_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    h, w = int(heatmap_size[0]), int(heatmap_size[1])
    dtype = torch.promote_types(keypoints.dtype, torch.float32)
    kp = keypoints.detach().to(dtype)
    valid = torch.isfinite(kp).all(dim=-1)
    kp = torch.where(valid.unsqueeze(-1), kp, torch.zeros_like(kp))  # no NaN in the arithmetic
    xs = torch.arange(w, dtype=dtype, device=kp.device)
    ys = torch.arange(h, dtype=dtype, device=kp.device)
    dx2 = (xs - kp[..., 0:1]) ** 2  # (B, K, w)
    dy2 = (ys - kp[..., 1:2]) ** 2  # (B, K, h)
    targets = torch.exp(-(dy2.unsqueeze(-1) + dx2.unsqueeze(-2)) / (2.0 * sigma**2))
    targets = targets * valid[..., None, None].to(dtype)
    return targets, valid


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels of valid keypoints only.

    Unlabeled keypoints are excluded from both the sum and the count, so a frame with missing
    labels is not pulled towards an empty map. With no valid keypoint the loss is an exact zero
    that still depends on ``pred`` (the graph stays intact for DDP and optimisers).

    Args:
        pred: Predicted heatmaps ``(B, K, h, w)`` (any float dtype; computed in >= float32).
        target: Target heatmaps ``(B, K, h, w)``.
        valid: ``(B, K)`` bool, True where the keypoint is labeled.

    Returns:
        Scalar loss.
    """
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (B, K, h, w); got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if valid.shape != pred.shape[:2]:
        raise ValueError(
            f"valid must be (B, K) = {tuple(pred.shape[:2])}, got {tuple(valid.shape)}"
        )
    dtype = torch.promote_types(pred.dtype, torch.float32)
    sq = (pred.to(dtype) - target.to(device=pred.device, dtype=dtype)) ** 2
    mask = valid.to(device=pred.device, dtype=torch.bool)[..., None, None]
    total = torch.where(mask, sq, torch.zeros_like(sq)).sum()
    count = mask.sum().clamp(min=1).to(dtype) * (pred.shape[-2] * pred.shape[-1])
    return total / count


def heatmap_kl(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(target || softmax(temperature * pred)) over the pixels of each valid keypoint.

    Trains the same spatial distribution that soft-argmax decodes. With plain MSE a network can
    add a small, bright spike far from the keypoint at almost no MSE cost, and a high-temperature
    soft-argmax then follows the spike; the unsupervised losses (which act on the decoded
    coordinates) reward exactly such spikes. Measured on the two-view synthetic set: with MSE any
    unsupervised weight from 1e-4 up collapsed predictions to ~80 px error; a normalised
    distribution makes a spike steal probability from the true peak, which the loss penalises.

    Args:
        pred: Predicted heatmaps (logits) ``(B, K, h, w)``.
        target: Gaussian target maps ``(B, K, h, w)`` (normalised here to sum to 1).
        valid: ``(B, K)`` bool, True where the keypoint is labeled.
        temperature: The soft-argmax temperature.

    Returns:
        Scalar loss in nats, averaged over valid keypoints (zero with graph intact if none).
    """
    if pred.ndim != 4 or pred.shape != target.shape or valid.shape != pred.shape[:2]:
        raise ValueError(
            f"pred/target (B, K, h, w) and valid (B, K) disagree: {tuple(pred.shape)}, "
            f"{tuple(target.shape)}, {tuple(valid.shape)}"
        )
    dtype = torch.promote_types(pred.dtype, torch.float32)
    target = target.to(device=pred.device, dtype=dtype).flatten(2)
    mass = target.sum(-1)
    keep = valid.to(pred.device, torch.bool) & (mass > 1e-6)
    # Every (B, K) row is computed and the unlabeled ones are masked out of the mean: no boolean
    # indexing, so no host-device sync per step on a GPU; an exact, graph-connected zero when no
    # keypoint is labeled.
    q = target / mass.clamp_min(1e-12)[..., None]
    log_p = torch.log_softmax(temperature * pred.to(dtype).flatten(2), dim=-1)
    kl = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(-1)
    kept = keep.sum().clamp(min=1).to(dtype)
    return torch.where(keep, kl, torch.zeros_like(kl)).sum() / kept

"""The temporal loss: keypoints should not jump between consecutive frames.

Works in FRAME pixels (the video's own pixels), as every unsupervised loss does
(:mod:`lpray.losses.unsupervised`). Its per-frame metric is the jump itself, the temporal norm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lpray.losses.registry import FrameMetric, UnsupervisedLoss
from lpray.metrics import temporal_norm

if TYPE_CHECKING:  # torch is imported where the loss runs: the config needs none (see registry)
    import torch


@dataclass
class TemporalLossConfig:
    """``losses.temporal``.

    Attributes:
        weight: 0 switches the loss off.
        epsilon: allowed motion per frame, frame pixels; one number or one per keypoint.
        confidence_threshold: pairs where either frame's confidence is below it are ignored.
    """

    weight: float = 0.0
    epsilon: float | list[float] = 20.0
    confidence_threshold: float = 0.05


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
    import torch

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


@functools.lru_cache(maxsize=64)
def _epsilon(value: float | tuple[float, ...], device: torch.device) -> torch.Tensor:
    """The config's epsilon on ``device``, made once: a tensor from a Python value each step is
    a blocking host-to-device copy (a device sync in every training step)."""
    import torch

    with torch.inference_mode(False):  # a cached inference tensor could not train later
        return torch.as_tensor(value, dtype=torch.float32, device=device)


def _loss(
    keypoints: torch.Tensor, confidence: torch.Tensor, settings: TemporalLossConfig, state: None
) -> torch.Tensor:
    eps = settings.epsilon
    epsilon = _epsilon(tuple(eps) if isinstance(eps, list) else eps, keypoints.device)
    return temporal_loss(keypoints, confidence, epsilon, settings.confidence_threshold)


def _metric(keypoints: np.ndarray, state: None) -> FrameMetric:
    return FrameMetric("temporal_norm", temporal_norm(keypoints), tuple(range(keypoints.shape[1])))


def _problems(settings: TemporalLossConfig) -> list[tuple[str, str]]:
    eps = settings.epsilon
    if any(e < 0 for e in (eps if isinstance(eps, list) else [eps])):
        return [("epsilon", "must be >= 0")]
    return []


LOSS = UnsupervisedLoss(
    name="temporal",
    config=TemporalLossConfig,
    loss=_loss,
    metric=_metric,
    problems=_problems,
    idle_hint=(
        "either losses.temporal.epsilon (allowed motion per frame, in frame pixels) is larger "
        "than every frame-to-frame jump of the predictions (lower it, below the animal's "
        "typical per-frame motion), or every prediction's confidence stayed below "
        "losses.temporal.confidence_threshold (a network that has not learned yet: train "
        "longer)"
    ),
)

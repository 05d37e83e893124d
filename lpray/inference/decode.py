"""Heatmaps -> keypoints for inference: the training soft-argmax, computed in fewer passes.

:func:`lpray.models.coordinates.soft_argmax` is differentiable and serves the losses; prediction
needs no gradient and runs it on every frame of every video, where its cost is a visible share of
the network's (DESIGN.md section 8: lpray's network with that decoding ran 7,095 img/s on one
H200 where the same network with a simple decoding ran ~11,000). :func:`decode_heatmaps` returns
the same function of the heatmaps (equal to float32 rounding; a test checks it against
``soft_argmax``) with less memory traffic:

- the softmax is never normalised in place: one in-place ``exp`` over the upsampled maps, then
  the normaliser and both marginals are small reductions;
- the confidence window (the softmax mass within ``CONFIDENCE_RADIUS`` heatmap pixels of the
  peak) is a bilinear form ``r^T E c`` with 0/1 row and column masks (one batched mat-vec),
  instead of an integral image (two cumulative sums over a padded copy and four gathers).
"""

from __future__ import annotations

import torch

from lpray.models.coordinates import CONFIDENCE_RADIUS, bicubic_matrix


def decode_heatmaps(
    heatmaps: torch.Tensor, temperature: float, upsample: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel keypoints and confidences, as :func:`~lpray.models.coordinates.soft_argmax`.

    Args:
        heatmaps: ``(B, K, h, w)`` of any float dtype (computed in float32).
        temperature: softmax inverse temperature.
        upsample: bicubic upsampling factor (the training decoding uses 4).

    Returns:
        ``coords (B, K, 2)`` as (x, y) in ORIGINAL heatmap pixels and ``confidence (B, K)`` in
        [0, 1], float32.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected heatmaps (B, K, h, w), got {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    maps = heatmaps.float()
    if upsample > 1:
        rows = bicubic_matrix(h, upsample, torch.float32, maps.device)
        cols = bicubic_matrix(w, upsample, torch.float32, maps.device)
        maps = rows @ maps @ cols.T
    hu, wu = maps.shape[-2:]
    flat = maps.reshape(b, k, hu * wu)
    peak_value, peak = flat.max(-1)
    # exp(T (v - max)): the softmax numerator, in place (the largest tensor is made once)
    flat.sub_(peak_value.unsqueeze(-1)).mul_(temperature).exp_()
    weights = flat.view(b, k, hu, wu)
    col_mass = weights.sum(-2)  # (B, K, wu)
    row_mass = weights.sum(-1)  # (B, K, hu)
    total = col_mass.sum(-1)
    xs = torch.arange(wu, dtype=torch.float32, device=maps.device) / upsample
    ys = torch.arange(hu, dtype=torch.float32, device=maps.device) / upsample
    x = (col_mass * xs).sum(-1) / total
    y = (row_mass * ys).sum(-1) / total
    radius = CONFIDENCE_RADIUS * upsample
    row, col = peak // wu, peak % wu
    row_mask = ((ys * upsample) - row.unsqueeze(-1)).abs() <= radius  # (B, K, hu)
    col_mask = ((xs * upsample) - col.unsqueeze(-1)).abs() <= radius  # (B, K, wu)
    in_cols = (weights @ col_mask.to(weights.dtype).unsqueeze(-1)).squeeze(-1)  # (B, K, hu)
    window = (in_cols * row_mask).sum(-1)
    confidence = (window / total).clamp(0.0, 1.0)
    return torch.stack([x, y], dim=-1), confidence

"""Heatmap pose networks: a single-frame model and a 5-frame context model (DESIGN section 3).

Both map ImageNet-normalised frames at the model input size to one heatmap per keypoint at 1/4 of
the input resolution. Coordinates come from :func:`lpray.models.coordinates.soft_argmax`.
"""

from __future__ import annotations

import torch
from torch import nn

from lpray.models.backbones import backbone_stride, build_backbone
from lpray.models.model_types import model_class


class HeatmapHead(nn.Module):
    """Stride-32 features -> heatmaps at stride 4: pixel shuffle x2, then two x2 transposed convs
    (stride-16 features: the two transposed convs).

    Linear (no activation between the layers), K channels after the first transposed conv, and
    initialised near zero (Xavier with gain 0.01, zero biases): the DeepLabCut / Lightning Pose
    head. Measured on the mirror-mouse example (ResNet-18, random init, 250 steps, CPU), this
    head reached 10 px validation error where the earlier one (128 channels, a ReLU, PyTorch's
    default init) was still at 75 px: near-zero initial maps let the first steps move the mass
    of each map instead of first learning to output a dark background.
    """

    def __init__(self, in_channels: int, n_keypoints: int, stride: int = 32) -> None:
        super().__init__()
        if stride not in (16, 32):
            raise ValueError(f"the heatmap head takes stride-16 or -32 features, got {stride}")
        # stride 32: pixel shuffle x2 first; stride 16 (ViT) starts at the transposed convs
        shuffle = [nn.PixelShuffle(2)] if stride == 32 else []
        channels = in_channels // 4 if stride == 32 else in_channels
        self.layers = nn.Sequential(
            *shuffle,
            nn.ConvTranspose2d(channels, n_keypoints, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(n_keypoints, n_keypoints, 3, stride=2, padding=1, output_padding=1),
        )
        for layer in self.layers:
            if isinstance(layer, nn.ConvTranspose2d):
                nn.init.xavier_uniform_(layer.weight, gain=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class HeatmapModel(nn.Module):
    """One frame in, heatmaps out. ``context == 0``: no neighbours needed."""

    context = 0

    def __init__(self, backbone: str, n_keypoints: int, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone, channels = build_backbone(backbone, pretrained)
        self.head = HeatmapHead(channels, n_keypoints, backbone_stride(backbone))

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` (N, C, 3, H, W) with C = 1 -> ``{"heatmaps": (N, K, H/4, W/4)}``."""
        return self.labeled_heads(self.backbone(frames.flatten(0, 1)), frames.shape[0])

    def forward_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        """Contiguous frames (S, 3, H, W) -> heatmaps (S, K, h, w), one per frame."""
        return self.sequence_heads(self.backbone(frames))

    # The trainer runs the backbone ONCE on labeled and unlabeled frames together (so BatchNorm
    # sees one mixed batch) and then applies the heads to each part.
    def labeled_heads(self, features: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        return {"heatmaps": self.head(features)}

    def sequence_heads(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


class ContextModel(nn.Module):
    """Frames t-2..t+2 through one shared trunk; a learned temporal mix feeds a second head.

    Like Lightning Pose's context model it keeps a single-frame head too (both are supervised),
    and its prediction for frame t is the context head's. The trunk runs once per frame, so a
    sequence of S frames costs S trunk passes, not 5 S.
    """

    context = 2

    def __init__(self, backbone: str, n_keypoints: int, pretrained: bool = False) -> None:
        super().__init__()
        self.backbone, channels = build_backbone(backbone, pretrained)
        stride = backbone_stride(backbone)
        self.head = HeatmapHead(channels, n_keypoints, stride)
        self.context_head = HeatmapHead(channels, n_keypoints, stride)
        window = 2 * self.context + 1
        # Per-channel weights over the window, initialised to the centre frame.
        init = torch.zeros(channels, window)
        init[:, self.context] = 1.0
        self.temporal_weights = nn.Parameter(init)

    def _mix(self, features: torch.Tensor) -> torch.Tensor:
        """(N, window, C, h, w) -> (N, C, h, w)."""
        weights = self.temporal_weights.to(features.dtype)
        return torch.einsum("nwchx,cw->nchx", features, weights)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` (N, 5, 3, H, W), the centre frame in the middle -> both heads' heatmaps."""
        return self.labeled_heads(self.backbone(frames.flatten(0, 1)), frames.shape[0])

    def forward_sequence(self, frames: torch.Tensor) -> torch.Tensor:
        """Contiguous frames (S, 3, H, W) -> context heatmaps (S, K, h, w).

        The sequence's first and last frames are repeated to give every frame its neighbours.
        Callers that have the real neighbours pass a longer chunk and drop the padded ends.
        """
        return self.sequence_heads(self.backbone(frames))

    def labeled_heads(self, features: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        features = features.view(n, -1, *features.shape[1:])
        return {
            "heatmaps": self.context_head(self._mix(features)),
            "heatmaps_single": self.head(features[:, self.context]),
        }

    def sequence_heads(self, features: torch.Tensor) -> torch.Tensor:
        c = self.context
        padded = torch.cat(
            [
                features[:1].expand(c, *features.shape[1:]),
                features,
                features[-1:].expand(c, *features.shape[1:]),
            ]
        )
        windows = padded.unfold(0, 2 * c + 1, 1)  # (S, C, h, w, window)
        return self.context_head(self._mix(windows.permute(0, 4, 1, 2, 3)))


def build_model(
    model_type: str, backbone: str, n_keypoints: int, pretrained: bool = False
) -> nn.Module:
    """The network of ``model_type`` (:mod:`lpray.models.model_types`) on ``backbone``."""
    return model_class(model_type)(backbone, n_keypoints, pretrained)

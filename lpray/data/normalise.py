"""ImageNet normalisation of model inputs: the one place its constants live.

Every reader (labeled frames, PyAV and DALI clips, prediction chunks, the exported network's
metadata) feeds the backbone ``(x - mean) / std`` per RGB channel, with ``x`` in [0, 1]; the
backbones were pretrained on inputs normalised so.
"""

from __future__ import annotations

import functools

import torch

# Per RGB channel, for inputs in [0, 1] (multiply by 255 for grey levels, as DALI takes them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def grey_levels(values: tuple[float, float, float]) -> list[float]:
    """Per-channel constants in grey levels (0..255), the units DALI's normalise op takes."""
    return [255.0 * v for v in values]


@functools.lru_cache(maxsize=16)
@torch.inference_mode(False)  # a cached inference tensor could not be saved for backward later
def imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, 1, 1) mean and std on ``device``, copied there once: a copy per call is a
    blocking host-to-device copy (a device sync in every training step on a GPU)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return mean.to(device, dtype), std.to(device, dtype)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean, std = imagenet_stats(image.device, image.dtype)
    return (image - mean) / std

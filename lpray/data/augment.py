"""Geometric and photometric augmentation with the keypoints moved alongside the image.

Every geometric change (resize, rotation, scale, shift) is one 2x3 affine matrix that maps
FRAME pixel coordinates to MODEL-INPUT pixel coordinates (pixel centres at integers). Applying it to
an image and to its keypoints with the same matrix keeps labels exact, and its inverse
(``to_frame``) maps predictions back to frame pixels, where errors and unsupervised losses live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random augmentation (all zero means none)."""

    rotation_deg: float = 10.0
    scale: float = 0.1  # relative: zoom in [1 - scale, 1 + scale]
    shift: float = 0.05  # fraction of the output size
    brightness: float = 0.2  # additive, fraction of the full range
    contrast: float = 0.2  # multiplicative about the mean
    blur_prob: float = 0.2  # probability of a small Gaussian blur
    blur_sigma: float = 1.0


NO_AUGMENT = AugmentSpec(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def resize_affine(frame_size: tuple[int, int], out_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine taking frame pixels to out pixels for a plain resize ((H, W) sizes)."""
    sy, sx = out_size[0] / frame_size[0], out_size[1] / frame_size[1]
    # Pixel-centre convention: x_out + 0.5 = (x + 0.5) * sx.
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def random_affine(
    rng: np.random.Generator,
    frame_size: tuple[int, int],
    out_size: tuple[int, int],
    spec: AugmentSpec,
) -> np.ndarray:
    """A resize composed with a random rotation/scale/shift about the output centre."""
    base = np.vstack([resize_affine(frame_size, out_size), [0, 0, 1]])
    angle = math.radians(rng.uniform(-spec.rotation_deg, spec.rotation_deg))
    zoom = rng.uniform(1 - spec.scale, 1 + spec.scale)
    shift = rng.uniform(-spec.shift, spec.shift, size=2) * np.array(out_size[::-1])
    cx, cy = (out_size[1] - 1) / 2, (out_size[0] - 1) / 2
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    about_centre = np.array(
        [
            [cos, -sin, cx - cos * cx + sin * cy + shift[0]],
            [sin, cos, cy - sin * cx - cos * cy + shift[1]],
            [0, 0, 1],
        ]
    )
    return (about_centre @ base)[:2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine."""
    full = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def apply_affine_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine; NaN stays NaN."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: torch.Tensor, matrix: np.ndarray, out_size: tuple[int, int]) -> torch.Tensor:
    """Warp a (C, H, W) float image with the frame->out affine ``matrix`` (bilinear, zero fill)."""
    _, height, width = image.shape
    inverse = invert_affine(matrix)  # out pixel -> frame pixel
    # affine_grid works in normalised [-1, 1] coordinates (align_corners=False: pixel centres).
    out_h, out_w = out_size
    to_pixels_out = np.array(
        [[out_w / 2, 0, out_w / 2 - 0.5], [0, out_h / 2, out_h / 2 - 0.5], [0, 0, 1]]
    )
    to_norm_in = np.linalg.inv(
        np.array([[width / 2, 0, width / 2 - 0.5], [0, height / 2, height / 2 - 0.5], [0, 0, 1]])
    )
    theta = (to_norm_in @ np.vstack([inverse, [0, 0, 1]]) @ to_pixels_out)[:2]
    grid = F.affine_grid(
        torch.as_tensor(theta, dtype=torch.float32)[None],
        [1, image.shape[0], out_h, out_w],
        align_corners=False,
    )
    return F.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]


def photometric(image: torch.Tensor, rng: np.random.Generator, spec: AugmentSpec) -> torch.Tensor:
    """Random brightness, contrast and blur on a (C, H, W) image in [0, 1]."""
    if spec.contrast > 0:
        mean = image.mean()
        image = (image - mean) * rng.uniform(1 - spec.contrast, 1 + spec.contrast) + mean
    if spec.brightness > 0:
        image = image + rng.uniform(-spec.brightness, spec.brightness)
    if spec.blur_prob > 0 and rng.random() < spec.blur_prob:
        sigma = rng.uniform(0.1, spec.blur_sigma)
        radius = max(1, int(round(2 * sigma)))
        taps = torch.arange(-radius, radius + 1, dtype=image.dtype)
        kernel = torch.exp(-(taps**2) / (2 * sigma**2))
        kernel = kernel / kernel.sum()
        channels = image.shape[0]
        padded = F.pad(image[None], (radius, radius, 0, 0), mode="replicate")
        image = F.conv2d(
            padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
        )[0]
        padded = F.pad(image[None], (0, 0, radius, radius), mode="replicate")
        image = F.conv2d(
            padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
        )[0]
    return image.clamp(0, 1)


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> ImageNet-normalised."""
    return (image - IMAGENET_MEAN.to(image)) / IMAGENET_STD.to(image)

"""Geometric and photometric augmentation with the keypoints moved alongside the image.

Every geometric change (resize, rotation, scale, shift) is one 2x3 affine matrix that maps
FRAME pixel coordinates to MODEL-INPUT pixel coordinates (pixel centres at integers). Applying it to
an image and to its keypoints with the same matrix keeps labels exact, and its inverse
(``to_frame``) maps predictions back to frame pixels, where errors and unsupervised losses live.
"""

from __future__ import annotations

import functools
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


def warp_images(
    images: torch.Tensor, matrices: torch.Tensor, out_size: tuple[int, int]
) -> torch.Tensor:
    """Warp (N, C, H, W) float images with frame->out affines (N, 2, 3) (bilinear, zero fill).

    One batched ``affine_grid`` + ``grid_sample``, on whatever device the images are: the
    labeled-frame augmentation runs here on the CPU (one frame at a time, in loader workers) or on
    the GPU (a whole batch after transfer, see :func:`augment_batch`), with identical results.
    Images may be zero-padded on the right and bottom beyond their true size (a batch of frames
    of different sizes): pixel coordinates are unchanged by such padding, and what lies beyond the
    frame is zero either way.
    """
    n, _, height, width = images.shape
    out_h, out_w = out_size
    m = matrices.to(torch.float64)
    # Closed-form inverse (out pixel -> frame pixel); torch.linalg.inv would check for singular
    # matrices with a device-to-host read, stalling a GPU training step.
    a, b, tx = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    c, d, ty = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = a * d - b * c
    p, q, s, u = d / det, -b / det, -c / det, a / det
    r, v = -(p * tx + q * ty), -(s * tx + u * ty)
    # theta = normalise(frame pixels) @ inverse @ denormalise(out pixels), in [-1, 1] coordinates
    # (align_corners=False: pixel centres), composed element by element.
    half_w, half_h = out_w / 2, out_h / 2
    centre_x, centre_y = (out_w - 1) / 2, (out_h - 1) / 2
    row_x = torch.stack([p * half_w, q * half_h, p * centre_x + q * centre_y + r], dim=-1)
    row_y = torch.stack([s * half_w, u * half_h, s * centre_x + u * centre_y + v], dim=-1)
    row_x = row_x * (2 / width)
    row_y = row_y * (2 / height)
    row_x[:, 2] += (1 - width) / width
    row_y[:, 2] += (1 - height) / height
    theta = torch.stack([row_x, row_y], dim=1).to(images.dtype)
    grid = F.affine_grid(theta, [n, images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def draw_photometric(rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Random ``[contrast factor, brightness shift, blur sigma (0: none)]`` for one image."""
    contrast = rng.uniform(1 - spec.contrast, 1 + spec.contrast) if spec.contrast > 0 else 1.0
    brightness = rng.uniform(-spec.brightness, spec.brightness) if spec.brightness > 0 else 0.0
    sigma = 0.0
    if spec.blur_prob > 0 and rng.random() < spec.blur_prob:
        sigma = rng.uniform(0.1, spec.blur_sigma)
    return np.array([contrast, brightness, sigma], dtype=np.float32)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one (C, H, W) image, replicate-padded."""
    radius = max(1, int(round(2 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    padded = F.pad(image[None], (radius, radius, 0, 0), mode="replicate")
    image = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    padded = F.pad(image, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)[0]


def apply_photometric(
    images: torch.Tensor, draws: torch.Tensor, sigmas: list[float] | None = None
) -> torch.Tensor:
    """Contrast about each image's mean, brightness shift, optional blur; clamp to [0, 1].

    Args:
        images: (N, C, H, W) in [0, 1].
        draws: (N, 3) rows from :func:`draw_photometric`.
        sigmas: ``draws[:, 2]`` as host floats when ``draws`` lives on a GPU (reading them back
            would stall the step on a device sync).
    """
    draws = draws.to(images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * draws[:, 0, None, None, None] + mean
    images = images + draws[:, 1, None, None, None]
    if sigmas is None:
        sigmas = draws[:, 2].tolist()
    if any(sigmas):
        images = torch.stack(
            [_gaussian_blur(img, s) if s > 0 else img for img, s in zip(images, sigmas)]
        )
    return images.clamp(0, 1)


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@functools.lru_cache(maxsize=16)
def _imagenet_stats(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet mean and std on ``device``, copied there once: a copy per call is a blocking
    host-to-device copy (a device sync in every training step on a GPU)."""
    return IMAGENET_MEAN.to(device, dtype), IMAGENET_STD.to(device, dtype)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [0, 1] -> ImageNet-normalised."""
    mean, std = _imagenet_stats(image.device, image.dtype)
    return (image - mean) / std


def augment_batch(
    raw: torch.Tensor,
    matrices: torch.Tensor,
    draws: torch.Tensor | None,
    out_size: tuple[int, int],
    blur_sigmas: list[float] | None = None,
) -> torch.Tensor:
    """The labeled-frame augmentation of a whole batch, where the batch is (the GPU, in training).

    Args:
        raw: (N, C, 3, H, W) uint8 frames (C context frames; zero-padded to the batch's
            largest frame, see :func:`warp_images`).
        matrices: (N, 2, 3) frame->model-input affines (one per item, shared by its C frames).
        draws: (N, 3) photometric draws (one per item, shared by its C frames), or None.
        out_size: model input (H, W).
        blur_sigmas: ``draws[:, 2]`` as host floats (see :func:`apply_photometric`).

    Returns:
        (N, C, 3, H, W) float32 ImageNet-normalised model inputs, equal to what
        :class:`lpray.data.labeled.LabeledDataset` builds on the CPU from the same draws.
    """
    n, c = raw.shape[:2]
    images = raw.flatten(0, 1).float() / 255.0
    warped = warp_images(images, matrices.repeat_interleave(c, dim=0), out_size)
    if draws is not None:
        sigmas = None if blur_sigmas is None else [s for s in blur_sigmas for _ in range(c)]
        warped = apply_photometric(warped, draws.repeat_interleave(c, dim=0), sigmas)
    return normalize(warped).view(n, c, *warped.shape[1:])

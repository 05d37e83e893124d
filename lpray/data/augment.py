"""Augmentation of labeled frames: geometric, photometric and occlusion changes, with the keypoints
moved alongside the image. What to draw is an :class:`~lpray.data.augment_spec.AugmentSpec`
(the vocabulary and the presets: :mod:`lpray.data.augment_spec`).

Every geometric change (crop/pad, resize, rotation, zoom, shift) is one 2x3 affine ``to_model``
that maps frame pixels to model-input pixels (:mod:`lpray.data.geometry`). Applying it to an
image and to its keypoints keeps labels exact, and its inverse (``to_frame``) maps predictions
back to frame pixels, where errors and unsupervised losses live.

The work is split in two so that it can run on a GPU a whole batch at a time: :func:`draw`
makes every random choice for one item on the CPU (a numpy generator seeded per item, so runs are
reproducible), as small arrays (``to_model``, contrast/brightness, a blur kernel, an occlusion
code map); :func:`augment_batch` applies a batch of such draws with tensor operations only, on
whatever device the frames are (CPU loader workers or the training GPU), with the same result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lpray.data.augment_spec import NO_AUGMENT, AugmentSpec
from lpray.data.geometry import (
    cropped_frame_to_resized,
    frame_to_resized,
    homogeneous,
    resized_to_model,
)
from lpray.data.normalise import normalize


def _random_to_model(
    rng: np.random.Generator,
    frame_size: tuple[int, int],
    out_size: tuple[int, int],
    spec: AugmentSpec,
) -> np.ndarray:
    """Frame -> model pixels: a (randomly cropped/padded) resize, then a random jitter."""
    sides = np.zeros(4)
    if spec.crop > 0 and rng.random() < spec.crop_prob:
        sides = rng.uniform(-spec.crop, spec.crop, size=4)
    to_resized = cropped_frame_to_resized(frame_size, out_size, sides)
    # The order of the draws fixes every seeded stream: keep it.
    angle = math.radians(rng.uniform(-spec.rotation_deg, spec.rotation_deg))
    if spec.rotation_prob < 1 and rng.random() >= spec.rotation_prob:
        angle = 0.0
    zoom = rng.uniform(1 - spec.scale, 1 + spec.scale)
    shift = rng.uniform(-spec.shift, spec.shift, size=2) * np.array(out_size[::-1])
    jitter = resized_to_model(angle, zoom, shift, out_size)
    return (homogeneous(jitter) @ homogeneous(to_resized))[:2]


# ------------------------------------------------------------------------------------------
# Drawing: every random choice for one item, on the CPU.


@dataclass
class Draw:
    """One item's augmentation, ready to apply (see :func:`augment_batch`).

    Attributes:
        to_model: (2, 3) frame -> model-input pixels.
        photometric: (2,) contrast factor and brightness shift.
        blur_kernel: (k, k) normalised filter (``spec.blur_kernel_size``; a 1x1 [[1]] for none).
        occlusion: (3, H, W) uint8 codes at the model input, 0 keep / 1 black / 2 white; None when
            the spec has no occlusion.
    """

    to_model: np.ndarray
    photometric: np.ndarray
    blur_kernel: np.ndarray
    occlusion: np.ndarray | None


KEEP, BLACK, WHITE = 0, 1, 2  # occlusion codes


def draw(
    rng: np.random.Generator,
    spec: AugmentSpec,
    frame_size: tuple[int, int],
    out_size: tuple[int, int],
) -> Draw:
    """Every random choice of one item's augmentation (a plain resize for :data:`NO_AUGMENT`)."""
    if spec == NO_AUGMENT:
        to_model = frame_to_resized(frame_size, out_size)
    else:
        to_model = _random_to_model(rng, frame_size, out_size, spec)
    contrast = rng.uniform(1 - spec.contrast, 1 + spec.contrast) if spec.contrast > 0 else 1.0
    brightness = rng.uniform(-spec.brightness, spec.brightness) if spec.brightness > 0 else 0.0
    return Draw(
        to_model=to_model,
        photometric=np.array([contrast, brightness], dtype=np.float32),
        blur_kernel=_draw_blur_kernel(rng, spec),
        occlusion=_draw_occlusion(rng, spec, frame_size, out_size) if spec.occludes else None,
    )


def _draw_blur_kernel(rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """The item's Gaussian blur convolved with its motion blur, as one (k, k) kernel."""
    size = spec.blur_kernel_size
    kernel = np.zeros((size, size), np.float32)
    kernel[size // 2, size // 2] = 1.0
    if spec.blur_prob > 0 and rng.random() < spec.blur_prob:
        kernel = _convolve(
            kernel,
            _gaussian_kernel(rng.uniform(0.1, spec.blur_sigma), math.ceil(2 * spec.blur_sigma)),
        )
    if spec.motion_blur_prob > 0 and rng.random() < spec.motion_blur_prob:
        kernel = _convolve(kernel, _line_kernel(rng.uniform(-90, 90), spec.motion_blur_size))
    return kernel


def _gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """A normalised (2 radius + 1)^2 Gaussian kernel."""
    taps = np.arange(-radius, radius + 1)
    line = np.exp(-(taps**2) / (2 * sigma**2))
    kernel = np.outer(line, line)
    return (kernel / kernel.sum()).astype(np.float32)


def _line_kernel(angle_deg: float, size: int) -> np.ndarray:
    """A ``size``-pixel anti-aliased line through the centre at ``angle_deg`` (motion blur)."""
    half = (size - 1) / 2
    y, x = np.mgrid[:size, :size] - half
    direction = math.radians(angle_deg)
    along = x * math.cos(direction) + y * math.sin(direction)
    across = -x * math.sin(direction) + y * math.cos(direction)
    kernel = np.clip(1 - np.abs(across), 0, None) * (np.abs(along) <= half + 0.5)
    return (kernel / kernel.sum()).astype(np.float32)


def _convolve(kernel: np.ndarray, small: np.ndarray) -> np.ndarray:
    """``kernel`` filtered by a smaller centred ``small``, keeping ``kernel``'s size."""
    out = np.zeros_like(kernel)
    r = small.shape[0] // 2
    padded = np.pad(kernel, r)
    for dy in range(small.shape[0]):
        for dx in range(small.shape[1]):
            out += small[dy, dx] * padded[dy : dy + kernel.shape[0], dx : dx + kernel.shape[1]]
    return out


def _draw_occlusion(
    rng: np.random.Generator,
    spec: AugmentSpec,
    frame_size: tuple[int, int],
    out_size: tuple[int, int],
) -> np.ndarray:
    """Coarse dropout and salt/pepper blobs as a (3, H, W) code map at the model input."""
    codes = np.zeros((3, *out_size), np.uint8)
    if spec.dropout_prob > 0 and rng.random() < spec.dropout_prob:
        channels = 3 if rng.random() < spec.dropout_per_channel else 1
        cells = _grid_cells(rng, spec.dropout_grid, spec.dropout_fraction, channels, frame_size)
        codes[_upsample(cells, out_size)] = BLACK
    for code, prob in ((WHITE, spec.salt_prob), (BLACK, spec.pepper_prob)):
        if prob > 0 and rng.random() < prob:
            cells = _grid_cells(
                rng, rng.uniform(*spec.blob_grid), spec.blob_fraction, 1, frame_size
            )
            codes[_upsample(cells, out_size)] = code
    return codes


def _grid_cells(
    rng: np.random.Generator,
    grid: float,
    fraction: float,
    channels: int,
    frame_size: tuple[int, int],
) -> np.ndarray:
    """(3, gh, gw) booleans: each cell of a grid ``grid`` x the frame size is on with
    probability ``fraction`` (one draw for all 3 channels when ``channels`` is 1)."""
    gh, gw = (max(1, round(grid * side)) for side in frame_size)
    cells = rng.random((channels, gh, gw)) < fraction
    return np.broadcast_to(cells, (3, gh, gw))


def _upsample(cells: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of (3, gh, gw) cells to (3, H, W)."""
    rows = np.arange(out_size[0]) * cells.shape[1] // out_size[0]
    cols = np.arange(out_size[1]) * cells.shape[2] // out_size[1]
    return cells[:, rows][:, :, cols]


# ------------------------------------------------------------------------------------------
# Applying: tensor operations on a whole batch, on any device.


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


def apply_photometric(images: torch.Tensor, photometric: torch.Tensor) -> torch.Tensor:
    """Contrast about each image's mean, then a brightness shift; (N, C, H, W), (N, 2)."""
    photometric = photometric.to(images)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * photometric[:, 0, None, None, None] + mean
    return images + photometric[:, 1, None, None, None]


def apply_blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each (C, H, W) image filtered by its own (k, k) kernel: one grouped convolution,
    edges replicated."""
    n, c, h, w = images.shape
    k = kernels.shape[-1]
    if k == 1:
        return images
    weight = kernels.to(images).repeat_interleave(c, dim=0)[:, None]  # (N*C, 1, k, k)
    padded = F.pad(images.reshape(1, n * c, h, w), (k // 2,) * 4, mode="replicate")
    return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


def apply_occlusion(images: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Black / white where the (N, 3, H, W) code map says so (see :func:`draw`)."""
    codes = codes.to(images.device)
    images = images.masked_fill(codes == BLACK, 0.0)
    return images.masked_fill(codes == WHITE, 1.0)


DRAW_KEYS = ("to_model", "photometric", "blur_kernel", "occlusion")  # a batch's draws, see below


def draws_as_tensors(drawn: Draw) -> dict[str, torch.Tensor]:
    """One item's :class:`Draw` as the tensors a batch carries (collated like any other field)."""
    tensors = {
        "to_model": torch.as_tensor(drawn.to_model, dtype=torch.float64),
        "photometric": torch.from_numpy(drawn.photometric),
        "blur_kernel": torch.from_numpy(drawn.blur_kernel),
    }
    if drawn.occlusion is not None:
        tensors["occlusion"] = torch.from_numpy(drawn.occlusion)
    return tensors


def augment_batch(
    raw: torch.Tensor, draws: dict[str, torch.Tensor], out_size: tuple[int, int]
) -> torch.Tensor:
    """The labeled-frame augmentation of a whole batch, where the batch is (the GPU, in training).

    Args:
        raw: (N, C, 3, H, W) uint8 frames (C context frames; zero-padded to the batch's
            largest frame, see :func:`warp_images`).
        draws: the batch's draws under :data:`DRAW_KEYS` (from :func:`draws_as_tensors`,
            stacked): ``to_model`` (N, 2, 3) frame->model-input; ``photometric`` (N, 2);
            ``blur_kernel`` (N, k, k); ``occlusion`` (N, 3, H_out, W_out) uint8, optional. Every
            draw is per item, shared by its C context frames (a clip stays consistent).
        out_size: model input (H, W).

    Returns:
        (N, C, 3, H, W) float32 ImageNet-normalised model inputs. Nothing is read back to the
        host, so a GPU step is not stalled.
    """
    n, c = raw.shape[:2]

    def per_frame(key: str) -> torch.Tensor:
        return draws[key].repeat_interleave(c, dim=0)

    images = raw.flatten(0, 1).float() / 255.0
    images = warp_images(images, per_frame("to_model"), out_size)
    images = apply_photometric(images, per_frame("photometric"))
    images = apply_blur(images, per_frame("blur_kernel"))
    if "occlusion" in draws:
        images = apply_occlusion(images, per_frame("occlusion"))
    return normalize(images.clamp(0, 1)).view(n, c, *images.shape[1:])


def apply_deferred_augmentation(batch: dict[str, Any], out_size: tuple[int, int]) -> dict[str, Any]:
    """A collated labeled batch whose augmentation was deferred (``raw`` frames + draws): its
    ``image`` made where the batch is, the raw frames and draws dropped. Other batches unchanged."""
    if "raw" in batch:
        draws = {key: batch.pop(key) for key in DRAW_KEYS if key in batch}
        batch["image"] = augment_batch(batch.pop("raw"), draws, out_size)
    return batch

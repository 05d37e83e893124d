"""Affine pixel geometry shared by labeled frames, training clips and prediction (numpy only).

Three pixel spaces, each with pixel centres at integers (column j spans [j - 0.5, j + 0.5)):

- *frame*: the original image or video frame;
- *resized*: the model input before any augmentation, the frame resized to the model's
  (H, W) (``align_corners=False``: the frame's outer pixel edges land on the input's);
- *model*: the model input the network sees (resized, then jittered by the augmentation).

Every 2x3 matrix here is named after the direction it maps points in, ``<from>_to_<to>``;
batches carry ``to_frame`` (model -> frame), where predictions are scored and the unsupervised
losses live (:func:`to_frame_matrix` builds it). DALI alone works in the pixel-*corner* convention (pixel (0, 0) spans [0, 1));
:func:`centre_to_corner` and :func:`corner_to_centre` translate a matrix across.
"""

from __future__ import annotations

import math

import numpy as np


def homogeneous(matrix: np.ndarray) -> np.ndarray:
    """(..., 2, 3) affines as (..., 3, 3) matrices, so that they compose with ``@``."""
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), matrix.shape[:-2] + (1, 3))
    return np.concatenate([matrix, bottom], axis=-2)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of one 2x3 affine (the map back the other way)."""
    full = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def apply_affine_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine; NaN (a missing keypoint) stays NaN."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def frame_to_resized(frame_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Frame -> resized pixels for a plain resize ((H, W) sizes)."""
    return cropped_frame_to_resized(frame_size, image_size, np.zeros(4))


def cropped_frame_to_resized(
    frame_size: tuple[int, int], image_size: tuple[int, int], sides: np.ndarray
) -> np.ndarray:
    """Frame -> resized pixels for a crop (or zero-pad) of the frame followed by a resize.

    Args:
        frame_size: (H, W) of the frame.
        image_size: (H, W) of the model input.
        sides: (left, top, right, bottom) as fractions of the frame's width / height, positive
            to crop, negative to pad.

    Returns:
        (2, 3); the kept region's outer pixel EDGES map to the input's,
        ``x_out + 0.5 = (x + 0.5 - left) * out_w / kept_width``.
    """
    height, width = frame_size
    left, top, right, bottom = (
        sides[0] * width,
        sides[1] * height,
        sides[2] * width,
        sides[3] * height,
    )
    sx = image_size[1] / (width - left - right)
    sy = image_size[0] / (height - top - bottom)
    return np.array([[sx, 0.0, (0.5 - left) * sx - 0.5], [0.0, sy, (0.5 - top) * sy - 0.5]])


def resized_to_model(
    angle: float, zoom: float, shift: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """The augmentation's jitter: rotate by ``angle`` (radians) and zoom about the input's
    centre, then shift by ``shift`` (x, y) pixels; resized -> model pixels, (2, 3)."""
    cx, cy = (image_size[1] - 1) / 2, (image_size[0] - 1) / 2
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    return np.array(
        [
            [cos, -sin, cx - cos * cx + sin * cy + shift[0]],
            [sin, cos, cy - sin * cx - cos * cy + shift[1]],
        ]
    )


def model_to_resized(
    angle: np.ndarray, zoom: np.ndarray, shift: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray:
    """The inverse of :func:`resized_to_model` for ``n`` jitters at once, in closed form.

    Args:
        angle: (n,) radians.
        zoom: (n,) factors; > 1 enlarges the content.
        shift: (n, 2) pixels (x, y).
        image_size: model input (H, W).

    Returns:
        (n, 2, 3) model -> resized pixels: the sampling map a warp of the resized input needs.
    """
    height, width = image_size
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    cos, sin = np.cos(angle), np.sin(angle)
    # inverse rotation/zoom: (1/zoom) R(-angle)
    linear = (
        np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) / zoom[:, None, None]
    )
    offset = centre - np.einsum("nij,nj->ni", linear, centre + shift)
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def to_frame_matrix(
    jitter: np.ndarray,
    frame_size: np.ndarray | tuple[int, int],
    image_size: tuple[int, int],
) -> np.ndarray:
    """Compose a model -> resized jitter with the resize: ``to_frame``, model -> frame pixels.

    Args:
        jitter: (..., 2, 3) model -> resized, from :func:`model_to_resized` (the identity for a
            plain resize).
        frame_size: (H, W) of the frame, or (..., 2) per matrix.
        image_size: model input (H, W).

    Returns:
        (..., 2, 3); the resize maps x to ``(x + 0.5) * W_frame / W_model - 0.5``.
    """
    frame = np.asarray(frame_size, dtype=np.float64)
    sx = frame[..., 1] / image_size[1]
    sy = frame[..., 0] / image_size[0]
    resize = np.zeros(np.broadcast_shapes(np.shape(sx), np.shape(sy)) + (2, 3))
    resize[..., 0, 0] = sx
    resize[..., 0, 2] = 0.5 * sx - 0.5
    resize[..., 1, 1] = sy
    resize[..., 1, 2] = 0.5 * sy - 0.5
    return (homogeneous(resize) @ homogeneous(np.asarray(jitter, np.float64)))[..., :2, :]


def centre_to_corner(matrix: np.ndarray) -> np.ndarray:
    """Rewrite centre-convention 2x3 maps for DALI, whose pixel (0, 0) spans [0, 1)."""
    m = np.array(matrix, dtype=np.float64)
    linear = m[..., :2]
    m[..., 2] = m[..., 2] + 0.5 - 0.5 * linear.sum(axis=-1)
    return m


def corner_to_centre(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`centre_to_corner`."""
    m = np.array(matrix, dtype=np.float64)
    linear = m[..., :2]
    m[..., 2] = m[..., 2] - 0.5 + 0.5 * linear.sum(axis=-1)
    return m

"""Augmentation draws for video clips, the same for the PyAV and DALI readers.

:func:`draw_clips` draws one jitter and one contrast/brightness per clip (the words of
:class:`lpray.data.augment_spec.ClipAugmentSpec`); the reader composes the jitter with the resize
into ``to_frame`` (:func:`lpray.data.geometry.to_frame_matrix`). PyAV warps with ``to_frame``
directly; DALI receives the jitter through :func:`augment_source` (pixel-corner convention) and
multiplies in the resize once it knows the frame size, which gives the same matrix. Prediction
feeds DALI the identity the same way (:func:`no_clip_draws`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpray.data.augment_spec import ClipAugmentSpec
from lpray.data.dali_pipeline import AugmentSource
from lpray.data.geometry import centre_to_corner, model_to_resized


@dataclass(frozen=True)
class ClipDraw:
    """Drawn augmentation of ``n`` clips.

    Attributes:
        model_to_resized: (n, 2, 3) model -> resized pixels (centre convention), the inverse of
            the jitter that moves the content: the sampling map the warp needs.
        contrast: (n,) contrast factors about grey level 128.
        brightness: (n,) shifts as fractions of the 0..255 range.
    """

    model_to_resized: np.ndarray
    contrast: np.ndarray
    brightness: np.ndarray


def no_clip_draws(n: int) -> ClipDraw:
    """No geometric or photometric change (prediction, or training without augmentation)."""
    identity = np.broadcast_to(np.eye(2, 3), (n, 2, 3)).copy()
    return ClipDraw(model_to_resized=identity, contrast=np.ones(n), brightness=np.zeros(n))


def draw_clips(
    rng: np.random.Generator, spec: ClipAugmentSpec, image_size: tuple[int, int], n: int
) -> ClipDraw:
    """Draw the augmentation of ``n`` clips for a model input of ``image_size`` (H, W)."""
    height, width = image_size
    # The order of the draws fixes every seeded stream: keep it.
    angle = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg, n))
    zoom = rng.uniform(1 - spec.scale, 1 + spec.scale, n)
    shift = rng.uniform(-spec.shift, spec.shift, (n, 2)) * np.array([width, height])
    contrast = rng.uniform(1 - spec.contrast, 1 + spec.contrast, n)
    brightness = rng.uniform(-spec.brightness, spec.brightness, n)
    return ClipDraw(
        model_to_resized=model_to_resized(angle, zoom, shift, image_size),
        contrast=contrast,
        brightness=brightness,
    )


def draw_or_identity(
    rng: np.random.Generator, spec: ClipAugmentSpec | None, image_size: tuple[int, int], n: int
) -> ClipDraw:
    """:func:`draw_clips`, or :func:`no_clip_draws` without a spec (the stream is untouched)."""
    return no_clip_draws(n) if spec is None else draw_clips(rng, spec, image_size, n)


def augment_source(
    rng: np.random.Generator, spec: ClipAugmentSpec | None, image_size: tuple[int, int], n: int
) -> AugmentSource:
    """The DALI external-source callable: one batch of ``n`` draws per call, as DALI takes them
    (the jitter in pixel-corner convention, contrast, brightness in grey levels)."""

    def source() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        drawn = draw_or_identity(rng, spec, image_size, n)
        corner = centre_to_corner(drawn.model_to_resized).astype(np.float32)
        return (
            list(corner),
            [np.array([c], np.float32) for c in drawn.contrast],
            [np.array([255.0 * b], np.float32) for b in drawn.brightness],
        )

    return source

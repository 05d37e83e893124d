"""The augmentation vocabulary: one spec family, and the named presets that fill it in.

A preset (``training.augmentation``) is one :class:`AugmentPreset`: what the labeled frames get
(:class:`AugmentSpec`, drawn by :mod:`lpray.data.augment`) and what the unlabeled training clips
get (:class:`ClipAugmentSpec`, drawn by :mod:`lpray.data.clip_augment`, one draw per clip so
the temporal losses see a consistent clip). A frame spec is a clip spec plus what only labeled
frames get (rotation probability, crops, blurs, occlusions), so the shared words are one set of
fields with one meaning:

- ``rotation_deg``: rotation drawn uniformly in +-``rotation_deg`` degrees about the model
  input's centre.
- ``scale``: zoom drawn uniformly in [1 - ``scale``, 1 + ``scale``]; above 1 enlarges the
  content.
- ``shift``: translation drawn uniformly in +-``shift`` of the model input's width and height.
- ``brightness``: an additive shift drawn in +-``brightness`` of the full grey range.
- ``contrast``: a factor drawn in [1 - ``contrast``, 1 + ``contrast``]. Its centre is the one
  difference between the two kinds, kept so as not to change either: labeled frames scale about
  each image's mean (as imgaug's ``LinearContrast`` in Lightning Pose), clips about mid-grey 128,
  the fixed centre of DALI's ``brightness_contrast`` op that the PyAV reader matches.

The geometric draws move the content: the resized frame's point u appears in the model input at
``c + zoom R(angle) (u - c) + shift`` (c the input's centre), :func:`lpray.data.geometry.
resized_to_model`. A spec of zeros changes nothing (:data:`NO_AUGMENT`, :data:`NO_CLIP_AUGMENT`).

To add a preset: one entry in :data:`AUGMENT_PRESETS`; ``training.augmentation`` is checked
against :func:`list_augment_presets` and ``tests/data/test_augment_spec.py`` builds every preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipAugmentSpec:
    """Ranges of the augmentation of an unlabeled training clip (module docstring: the words).

    The defaults are the ``mild`` preset's clips.
    """

    rotation_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.2  # about mid-grey 128

    @property
    def is_identity(self) -> bool:
        """True when the spec changes nothing (the clips are only resized)."""
        words = (self.rotation_deg, self.scale, self.shift, self.brightness, self.contrast)
        return not any(words)


@dataclass(frozen=True)
class AugmentSpec(ClipAugmentSpec):
    """Ranges and probabilities of the augmentation of labeled frames (zeros: none).

    The clip words (module docstring), contrast about each image's mean, plus: a rotation only
    with probability ``rotation_prob``; with probability ``crop_prob`` each side of the frame
    cropped (or, when negative, zero-padded) by up to ``crop`` of the frame size, independently,
    before the resize; a Gaussian blur (``blur_prob``, sigma up to ``blur_sigma``); a motion blur
    along a random direction (``motion_blur_prob``, a line ``motion_blur_size`` pixels long).
    Occlusion, on grids whose cell counts are fractions of the FRAME size (as Lightning Pose's
    imgaug presets, which work on frames before the resize): coarse dropout (``dropout_prob``:
    ``dropout_fraction`` of the cells of a ``dropout_grid`` grid go black, per colour channel in
    ``dropout_per_channel`` of the cases) and white / black blobs (``salt_prob`` /
    ``pepper_prob``: ``blob_fraction`` of the cells of a coarser grid, ``blob_grid`` of the frame
    size, drawn per image). The defaults are the ``mild`` preset's frames.
    """

    brightness: float = 0.2
    rotation_prob: float = 1.0
    crop: float = 0.0
    crop_prob: float = 0.0
    blur_prob: float = 0.2
    blur_sigma: float = 1.0
    motion_blur_prob: float = 0.0
    motion_blur_size: int = 5
    dropout_prob: float = 0.0
    dropout_fraction: float = 0.02
    dropout_grid: float = 0.3
    dropout_per_channel: float = 0.5
    salt_prob: float = 0.0
    pepper_prob: float = 0.0
    blob_fraction: float = 0.01
    blob_grid: tuple[float, float] = (0.05, 0.1)

    @property
    def occludes(self) -> bool:
        return max(self.dropout_prob, self.salt_prob, self.pepper_prob) > 0

    @property
    def blur_kernel_size(self) -> int:
        """Side of the combined (Gaussian * motion) blur kernel; 1 when there is no blur."""
        gaussian = 2 * math.ceil(2 * self.blur_sigma) + 1 if self.blur_prob > 0 else 1
        motion = self.motion_blur_size if self.motion_blur_prob > 0 else 1
        return gaussian + motion - 1


@dataclass(frozen=True)
class AugmentPreset:
    """What one ``training.augmentation`` name does to each kind of training input.

    Attributes:
        frames: the labeled frames' augmentation.
        clips: the unlabeled clips' augmentation (the unsupervised losses' inputs).
    """

    frames: AugmentSpec
    clips: ClipAugmentSpec


NO_AUGMENT = AugmentSpec(
    rotation_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0, blur_prob=0.0
)
NO_CLIP_AUGMENT = ClipAugmentSpec(
    rotation_deg=0.0, scale=0.0, shift=0.0, brightness=0.0, contrast=0.0
)

# "mild": lpray's original default; its clips have half the frames' brightness range (as they
# always had). "strong": labeled frames modelled on Lightning Pose's ``dlc`` imgaug preset
# (rotation +-25 deg p 0.4, crop/pad 15% p 0.4, motion blur 5 px p 0.5, coarse dropout p 0.5,
# coarse salt and pepper p 0.5 each); its elastic warp, histogram equalisation, CLAHE and emboss
# (p 0.1 each) are not reproduced; contrast/brightness jitter stands in for the photometric ones.
# Its clips keep the mild jitter (lpray's clips have always had it; the occlusions and crops are
# for the supervised loss). "none": neither frames nor clips change.
AUGMENT_PRESETS: dict[str, AugmentPreset] = {
    "none": AugmentPreset(frames=NO_AUGMENT, clips=NO_CLIP_AUGMENT),
    "mild": AugmentPreset(frames=AugmentSpec(), clips=ClipAugmentSpec()),
    "strong": AugmentPreset(
        frames=AugmentSpec(
            rotation_deg=25.0,
            rotation_prob=0.4,
            scale=0.0,
            shift=0.0,
            crop=0.15,
            crop_prob=0.4,
            blur_prob=0.0,
            motion_blur_prob=0.5,
            dropout_prob=0.5,
            salt_prob=0.5,
            pepper_prob=0.5,
        ),
        clips=ClipAugmentSpec(),
    ),
}
DEFAULT_AUGMENT_PRESET = "mild"


def list_augment_presets() -> list[str]:
    """Every preset name ``training.augmentation`` accepts."""
    return list(AUGMENT_PRESETS)


def augment_preset(name: str) -> AugmentPreset:
    """The preset called ``name``.

    Raises:
        ValueError: no such preset (the message lists them).
    """
    if name not in AUGMENT_PRESETS:
        raise ValueError(
            f"unknown augmentation preset {name!r}; choose one of {list(AUGMENT_PRESETS)}"
        )
    return AUGMENT_PRESETS[name]

"""The augmentation vocabulary and presets (lpray.data.augment_spec), and the draws the presets
make for labeled frames (lpray.data.augment) and clips (lpray.data.clip_augment)."""

from __future__ import annotations

import numpy as np
import pytest

from lpray.data.augment import draw
from lpray.data.augment_spec import (
    AUGMENT_PRESETS,
    DEFAULT_AUGMENT_PRESET,
    NO_AUGMENT,
    NO_CLIP_AUGMENT,
    AugmentSpec,
    ClipAugmentSpec,
    augment_preset,
    list_augment_presets,
)
from lpray.data.clip_augment import draw_clips


@pytest.mark.parametrize("name", list_augment_presets())
def test_every_preset_builds_and_the_config_takes_it(name):
    from lpray.config import config_from_dict

    preset = augment_preset(name)
    assert isinstance(preset.frames, AugmentSpec) and isinstance(preset.clips, ClipAugmentSpec)
    assert config_from_dict({"training": {"augmentation": name}}).training.augmentation == name


def test_unknown_presets_are_refused_naming_the_presets():
    from lpray.config import ConfigError, TrainingConfig, config_from_dict

    assert TrainingConfig().augmentation == DEFAULT_AUGMENT_PRESET
    with pytest.raises(ValueError, match="choose one of"):
        augment_preset("dlc")
    with pytest.raises(ConfigError, match=r"training.augmentation: .*'dlc'.*'none', 'mild'"):
        config_from_dict({"training": {"augmentation": "dlc"}})


def test_one_vocabulary_frames_extend_clips():
    """A frame spec is a clip spec plus frame-only words; "none" changes neither."""
    shared = {"rotation_deg", "scale", "shift", "brightness", "contrast"}
    assert {f for f in ClipAugmentSpec.__dataclass_fields__} == shared
    assert shared < set(AugmentSpec.__dataclass_fields__)
    assert issubclass(AugmentSpec, ClipAugmentSpec)
    none = augment_preset("none")
    assert none.frames == NO_AUGMENT and none.clips == NO_CLIP_AUGMENT
    assert none.clips.is_identity and NO_AUGMENT.is_identity
    assert not augment_preset("mild").clips.is_identity
    assert not augment_preset("strong").clips.is_identity


# The default preset's draws as they were before the two AugmentSpec classes became one family
# (recorded from lpray.data.unlabeled.sample_augmentation with its AugmentSpec() and from
# lpray.data.augment.draw with AUGMENT_PRESETS["mild"], and "strong" for good measure): a
# changed default, range or order of draws changes these numbers.
DEFAULT_CLIPS = {
    "model_to_resized": [
        [[1.1057802197413176, 0.05290617190329765, -6.865896368059332],
         [-0.05290617190329765, 1.1057802197413176, -2.8212952550634895]],
        [[0.9380032070026264, -0.07554023380943764, 4.711366657941902],
         [0.07554023380943764, 0.9380032070026264, -3.6691394967619075]],
        [[0.9119112487520341, -0.14737939265276007, 5.348682245021763],
         [0.14737939265276007, 0.9119112487520341, -0.5169593115589137]],
    ],
    "contrast": [1.1429617106350278, 0.8134342301221857, 1.0918621785719775],
    "brightness": [-0.0648688758794882, 0.07263578446997732, 0.008292244049818348],
}  # fmt: skip
FRAMES = {
    "mild": {
        "to_model": [[0.5399890200417478, -0.04460015040955319, -4.238394379196208],
                     [0.04181264100895611, 0.575988288044531, -7.460225331052661]],
        "photometric": [0.98806304, -0.14402944],
        "blur_max": 1.0,
        "occluded": None,
    },
    "strong": {
        "to_model": [[0.4674044286021422, -0.18941399257845365, 13.61148048454769],
                     [0.1775756180423003, 0.498564723842285, -12.281862702978835]],
        "photometric": [1.0845225, 0.04144428],
        "blur_max": 0.19260738790035248,
        "occluded": 298,
    },
}  # fmt: skip


def test_default_preset_draws_the_clip_parameters_it_always_drew():
    clips = AUGMENT_PRESETS[DEFAULT_AUGMENT_PRESET].clips
    drawn = draw_clips(np.random.default_rng(0), clips, (64, 80), 3)
    for key, expected in DEFAULT_CLIPS.items():
        np.testing.assert_allclose(getattr(drawn, key), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["mild", "strong"])
def test_presets_draw_the_frame_parameters_they_always_drew(name):
    expected = FRAMES[name]
    drawn = draw(
        np.random.default_rng([3, 1, 4]), AUGMENT_PRESETS[name].frames, (120, 160), (64, 80)
    )
    np.testing.assert_allclose(drawn.to_model, expected["to_model"], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(drawn.photometric, expected["photometric"], rtol=1e-6)
    assert drawn.blur_kernel.shape == (5, 5)
    assert float(drawn.blur_kernel.max()) == pytest.approx(expected["blur_max"], rel=1e-6)
    occluded = None if drawn.occlusion is None else int(drawn.occlusion.sum())
    assert occluded == expected["occluded"]

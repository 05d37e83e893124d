"""The pieces of the labeled-frame augmentation, each against an independent truth."""

import math

import numpy as np
import pytest
import torch

from lpray.data.augment import BLACK, WHITE, apply_blur, apply_occlusion, draw, warp_images
from lpray.data.augment_spec import AUGMENT_PRESETS, AugmentSpec


def test_cropped_and_rotated_frames_keep_their_keypoints():
    """A bright dot lands where the drawn affine sends its keypoint, crops and rotations included."""
    rng = np.random.default_rng(0)
    spec = AugmentSpec(
        rotation_deg=25,
        rotation_prob=1.0,
        scale=0,
        shift=0,
        crop=0.15,
        crop_prob=1.0,
        brightness=0,
        contrast=0,
        blur_prob=0,
    )
    frame = torch.zeros(1, 1, 120, 160)
    dot = np.array([70.0, 50.0])  # x, y in frame pixels
    frame[..., 49:52, 69:72] = 1.0
    for _ in range(10):
        m = draw(rng, spec, (120, 160), (96, 96)).to_model
        out = warp_images(frame, torch.as_tensor(m)[None], (96, 96))[0, 0].numpy()
        expected = m[:, :2] @ dot + m[:, 2]
        yy, xx = np.mgrid[:96, :96]
        centroid = np.array([(out * xx).sum(), (out * yy).sum()]) / out.sum()
        assert np.linalg.norm(centroid - expected) < 0.2


@pytest.mark.parametrize("angle", [-60.0, 0.0, 35.0, 90.0])
def test_motion_blur_smears_a_dot_into_a_line_along_its_angle(angle):
    """The blurred dot's principal axis (second moments) is the drawn direction; mass is kept."""
    spec = AugmentSpec(blur_prob=0, motion_blur_prob=1.0, motion_blur_size=7)

    class FixedAngle:  # a generator that always applies, and draws the angle under test
        def random(self, size=None):
            return np.zeros(size) if size else 0.0

        def uniform(self, low, high, size=None):
            return angle if (low, high) == (-90, 90) else (low + high) / 2

    kernel = draw(FixedAngle(), spec, (32, 32), (32, 32)).blur_kernel
    image = torch.zeros(1, 1, 32, 32)
    image[..., 16, 16] = 1.0
    out = apply_blur(image, torch.as_tensor(kernel)[None])[0, 0].numpy()
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    yy, xx = np.mgrid[:32, :32] - 16.0
    cov = np.cov(np.stack([xx.ravel(), yy.ravel()]), aweights=out.ravel())
    values, vectors = np.linalg.eigh(cov)
    axis = vectors[:, -1]
    found = math.degrees(math.atan2(axis[1], axis[0])) % 180
    assert min(abs(found - angle % 180), 180 - abs(found - angle % 180)) < 3
    assert values[-1] > 10 * values[0]  # a line, not a blob


def test_gaussian_blur_keeps_a_constant_image_and_matches_the_separable_filter():
    spec = AugmentSpec(blur_prob=1.0, blur_sigma=1.0)
    kernel = torch.as_tensor(draw(np.random.default_rng(4), spec, (20, 20), (20, 20)).blur_kernel)
    flat = torch.full((1, 3, 20, 20), 0.4)
    torch.testing.assert_close(apply_blur(flat, kernel[None]), flat)
    row = kernel.sum(dim=0)  # a Gaussian kernel is the outer product of its marginals
    torch.testing.assert_close(kernel, torch.outer(row, row), atol=1e-6, rtol=0)


def test_coarse_dropout_blacks_out_the_asked_fraction_in_frame_sized_cells():
    spec = AugmentSpec(
        dropout_prob=1.0,
        dropout_fraction=0.05,
        dropout_grid=0.25,
        dropout_per_channel=0.0,
        brightness=0,
        contrast=0,
        blur_prob=0,
    )
    rng = np.random.default_rng(7)
    codes = np.stack([draw(rng, spec, (200, 200), (100, 100)).occlusion for _ in range(40)])
    assert set(np.unique(codes)) == {0, BLACK}
    assert (codes[:, 0] == codes[:, 2]).all()  # one draw for all channels (per_channel 0)
    assert codes.mean() == pytest.approx(0.05, rel=0.15)  # 40 x 2,500 cells: sd ~ 3% relative
    # cells are 1 / (0.25 * 200) of the frame: 2 x 2 output pixels, aligned
    blocks = codes[:, 0].reshape(40, 50, 2, 50, 2)
    assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_salt_and_pepper_blobs_and_their_application():
    spec = AugmentSpec(
        salt_prob=1.0,
        pepper_prob=1.0,
        blob_fraction=0.2,
        blob_grid=(0.05, 0.05),
        brightness=0,
        contrast=0,
        blur_prob=0,
    )
    codes = draw(np.random.default_rng(3), spec, (100, 100), (40, 40)).occlusion
    assert {WHITE, BLACK} <= set(np.unique(codes))
    blocks = codes[0].reshape(5, 8, 5, 8)  # 5 x 5 cells of 8 x 8 output pixels
    assert (blocks == blocks[:, :1, :, :1]).all()
    image = torch.full((1, 3, 40, 40), 0.5)
    out = apply_occlusion(image, torch.as_tensor(codes)[None])[0]
    expected = np.where(codes == WHITE, 1.0, np.where(codes == BLACK, 0.0, 0.5))
    np.testing.assert_array_equal(out.numpy(), expected.astype(np.float32))


def test_presets_and_their_config_key():
    from lpray.config import ConfigError, config_from_dict

    assert AUGMENT_PRESETS["strong"].frames.occludes
    assert not AUGMENT_PRESETS["mild"].frames.occludes
    assert AUGMENT_PRESETS["none"].frames.blur_kernel_size == 1
    cfg = config_from_dict({"training": {"augmentation": "strong"}})
    assert cfg.training.augmentation == "strong"
    with pytest.raises(ConfigError, match="training.augmentation"):
        config_from_dict({"training": {"augmentation": "dlc"}})

"""Pixel-centre coordinate maps and soft-argmax against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lpray.models.coordinates import (
    heatmap_peak_confidence,
    heatmap_to_image,
    image_to_heatmap,
    soft_argmax,
)


def gaussian_map(h: int, w: int, x0: float, y0: float, sigma: float = 1.25) -> torch.Tensor:
    """Peak-1 Gaussian computed independently of lpray.losses.supervised."""
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    return torch.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


def test_stride4_pixel_centres() -> None:
    image, heat = (256, 128), (64, 32)
    # Heatmap pixel (col 0, row 0) covers image pixels 0..3: its centre is image 1.5.
    out = heatmap_to_image(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), image, heat)
    torch.testing.assert_close(out, torch.tensor([[1.5, 1.5], [5.5, 9.5]]))
    # Image pixel centres 0..3 sit at -0.375, -0.125, 0.125, 0.375 in heatmap pixels.
    xs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    out = image_to_heatmap(xs, image, heat)
    expected = torch.tensor([-0.375, -0.125, 0.125, 0.375])
    torch.testing.assert_close(out[:, 0], expected)
    torch.testing.assert_close(out[:, 1], expected)
    # The outer edges map onto each other.
    edges = image_to_heatmap(torch.tensor([[-0.5, -0.5], [127.5, 255.5]]), image, heat)
    torch.testing.assert_close(edges, torch.tensor([[-0.5, -0.5], [31.5, 63.5]]))


def test_maps_invert_each_other_and_keep_nan() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(5, 3, 2, generator=gen, dtype=torch.float64) * 300 - 20
    xy[0, 1] = float("nan")
    there = image_to_heatmap(xy, (240, 320), (60, 80))
    back = heatmap_to_image(there, (240, 320), (60, 80))
    torch.testing.assert_close(back, xy, equal_nan=True)
    assert there.dtype == torch.float64


def test_maps_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        image_to_heatmap(torch.zeros(4, 3), (8, 8), (2, 2))
    with pytest.raises(ValueError, match="heatmap_size"):
        image_to_heatmap(torch.zeros(4, 2), (8, 8), (0, 2))


@pytest.mark.parametrize(
    ("x0", "y0"),
    [(10.0, 12.0), (10.3, 7.8), (5.55, 20.25), (17.9, 3.1), (1.5, 1.6), (29.5, 2.4), (2.2, 29.6)],
)
def test_soft_argmax_recovers_subpixel_gaussian(x0: float, y0: float) -> None:
    heat = gaussian_map(32, 32, x0, y0).float()[None, None]
    coords, confidence = soft_argmax(heat)
    assert abs(float(coords[0, 0, 0]) - x0) < 0.05
    assert abs(float(coords[0, 0, 1]) - y0) < 0.05
    assert float(confidence[0, 0]) > 0.99


def test_soft_argmax_symmetric_peak_on_pixel_centre_is_exact() -> None:
    # A symmetric peak on pixel (row i, col j) gives exactly (j, i), even on the border pixel.
    for i, j in [(7, 3), (0, 0), (15, 23)]:
        heat = gaussian_map(16, 24, j, i).float()[None, None]
        coords, _ = soft_argmax(heat)
        torch.testing.assert_close(
            coords[0, 0], torch.tensor([float(j), float(i)]), atol=3e-3, rtol=0
        )
    interior = gaussian_map(16, 24, 11.0, 7.0).float()[None, None]
    torch.testing.assert_close(
        soft_argmax(interior)[0][0, 0], torch.tensor([11.0, 7.0]), atol=1e-4, rtol=0
    )


def test_soft_argmax_batch_and_channels_are_independent() -> None:
    maps = torch.stack(
        [
            torch.stack([gaussian_map(20, 20, 4.2, 9.0), gaussian_map(20, 20, 15.0, 3.7)]),
            torch.stack([gaussian_map(20, 20, 8.0, 8.0), gaussian_map(20, 20, 12.4, 16.1)]),
        ]
    ).float()
    coords, _ = soft_argmax(maps)
    expected = torch.tensor([[[4.2, 9.0], [15.0, 3.7]], [[8.0, 8.0], [12.4, 16.1]]])
    torch.testing.assert_close(coords, expected, atol=0.05, rtol=0)


def test_flat_map_centre_and_low_confidence() -> None:
    coords, confidence = soft_argmax(torch.zeros(1, 2, 32, 32))
    torch.testing.assert_close(coords, torch.full((1, 2, 2), 15.5))
    # All 125x125 upsampled samples tie; the argmax is the first (corner) sample, so the window
    # of +-2 original pixels (+-8 samples) is cropped to 9x9 samples.
    torch.testing.assert_close(confidence, torch.full((1, 2), 9 * 9 / 125**2))
    assert float(confidence.max()) < 0.1


def test_soft_argmax_bf16_input_computed_in_float32() -> None:
    heat = gaussian_map(32, 32, 12.3, 18.6).to(torch.bfloat16)[None, None]
    coords, confidence = soft_argmax(heat)
    assert coords.dtype == torch.float32 and confidence.dtype == torch.float32
    torch.testing.assert_close(coords[0, 0], torch.tensor([12.3, 18.6]), atol=0.05, rtol=0)


def test_soft_argmax_gradients_match_finite_differences() -> None:
    gen = torch.Generator().manual_seed(1)
    heat = torch.rand(1, 2, 5, 6, generator=gen, dtype=torch.float64).requires_grad_(True)

    def outputs(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return soft_argmax(h, temperature=5.0, upsample=2)

    assert torch.autograd.gradcheck(outputs, (heat,))


def test_soft_argmax_gradient_direction() -> None:
    heat = gaussian_map(12, 12, 5.5, 6.0).float()[None, None].requires_grad_(True)
    coords, _ = soft_argmax(heat)
    coords[..., 0].sum().backward()
    assert heat.grad is not None and torch.isfinite(heat.grad).all()
    # Raising the pixel right of the peak pulls x right; the pixel left of it pulls x left.
    assert float(heat.grad[0, 0, 6, 6]) > 0 > float(heat.grad[0, 0, 6, 5])


def test_peak_confidence_window_hand_computed() -> None:
    probs = torch.zeros(1, 1, 5, 6)
    probs[0, 0, 0, 0] = 0.5  # argmax in the corner: the window is cropped by the border
    probs[0, 0, 1, 1] = 0.2  # inside radius 1
    probs[0, 0, 2, 2] = 0.3  # outside radius 1
    assert float(heatmap_peak_confidence(probs, 1)) == pytest.approx(0.7)
    assert float(heatmap_peak_confidence(probs, 2)) == pytest.approx(1.0)
    assert float(heatmap_peak_confidence(probs, 0)) == pytest.approx(0.5)


def test_soft_argmax_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        soft_argmax(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="upsample"):
        soft_argmax(torch.zeros(1, 1, 8, 8), upsample=0)
    with pytest.raises(ValueError, match="temperature"):
        soft_argmax(torch.zeros(1, 1, 8, 8), temperature=-1.0)


def test_upsample_one_is_plain_softargmax() -> None:
    heat = torch.zeros(1, 1, 3, 3)
    heat[0, 0, 1, 2] = 1.0
    coords, confidence = soft_argmax(heat, temperature=math.log(2.0), upsample=1)
    # softmax weights: 2 at (row 1, col 2), 1 elsewhere (8 samples) -> total 10.
    x = (2 * 2 + 3 * (0 + 1 + 2) - 2) / 10
    y = (2 * 1 + 3 * (0 + 1 + 2) - 1) / 10
    torch.testing.assert_close(coords[0, 0], torch.tensor([x, y]))
    assert float(confidence) == pytest.approx(1.0)  # 5x5 window covers the whole 3x3 map


@pytest.mark.parametrize(
    "shape,factor", [((2, 3, 7, 11), 3), ((1, 17, 64, 64), 4), ((1, 1, 2, 5), 2)]
)
def test_matmul_upsampling_is_torch_bicubic_with_the_same_gradient(shape, factor):
    """lpray's separable-matmul upsampling equals F.interpolate(bicubic, align_corners=True),
    values and gradients (borders included), in float64."""
    from lpray.models.coordinates import _upsample

    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    size = ((shape[2] - 1) * factor + 1, (shape[3] - 1) * factor + 1)
    reference = F.interpolate(x, size=size, mode="bicubic", align_corners=True)
    ours = _upsample(x, factor)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)
    weights = torch.randn(size, dtype=torch.float64)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-12, rtol=0)


def test_training_after_prediction_in_one_process() -> None:
    """The cached upsampling matrix, first built during prediction (inference mode), still
    serves a training step's backward pass."""
    from lpray.models.coordinates import bicubic_matrix

    bicubic_matrix.cache_clear()
    maps = gaussian_map(16, 16, 7.3, 5.6)[None, None]
    with torch.inference_mode():
        soft_argmax(maps, upsample=4)
    trained = maps.clone().requires_grad_(True)
    xy, _ = soft_argmax(trained, upsample=4)
    xy.sum().backward()
    assert trained.grad is not None and torch.isfinite(trained.grad).all()

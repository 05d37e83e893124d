"""Affine pixel geometry (lpray.data.geometry): numpy only, runs on any CPU."""

from __future__ import annotations

import numpy as np

from lpray.data.geometry import (
    apply_affine_points,
    centre_to_corner,
    corner_to_centre,
    cropped_frame_to_resized,
    homogeneous,
    invert_affine,
    model_to_resized,
    resized_to_model,
    to_frame_matrix,
)


def test_corner_convention_round_trip_and_resize_matrix():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 2, 3))
    assert np.allclose(corner_to_centre(centre_to_corner(m)), m)
    # resize only: the centre of model pixel 0 maps to frame x = (0 + 0.5) * 2 - 0.5 = 0.5
    resize = to_frame_matrix(np.eye(2, 3), (96, 120), (48, 60))
    assert np.allclose(resize, [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5]])


def test_crop_resize_maps_the_kept_region_edges_to_the_output_edges():
    frame, out = (100, 200), (50, 80)
    sides = np.array([0.1, -0.05, 0.15, 0.2])  # left, top, right, bottom; top is padded
    m = cropped_frame_to_resized(frame, out, sides)
    left_edge, top_edge = -0.5 + 0.1 * 200, -0.5 - 0.05 * 100  # pixel EDGES of the kept region
    right_edge, bottom_edge = 199.5 - 0.15 * 200, 99.5 - 0.2 * 100
    corners = np.array([[left_edge, top_edge], [right_edge, bottom_edge]])
    mapped = corners @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, [[-0.5, -0.5], [out[1] - 0.5, out[0] - 0.5]], atol=1e-12)


def test_jitter_directions_are_inverse_and_move_content_about_the_centre():
    """``resized_to_model`` moves content (the centre stays put, a point right of it turns
    towards +y for a positive angle); ``model_to_resized`` undoes it, in closed form."""
    size = (64, 80)
    centre = np.array([39.5, 31.5])
    angle, zoom, shift = np.deg2rad(90.0), 2.0, np.array([3.0, -4.0])
    forward = resized_to_model(angle, zoom, shift, size)
    np.testing.assert_allclose(apply_affine_points(forward, centre), centre + shift, atol=1e-12)
    right = apply_affine_points(forward, centre + [1.0, 0.0])
    np.testing.assert_allclose(right, centre + shift + [0.0, 2.0], atol=1e-12)
    back = model_to_resized(np.array([angle]), np.array([zoom]), shift[None], size)[0]
    np.testing.assert_allclose(homogeneous(back) @ homogeneous(forward), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(invert_affine(forward), back, atol=1e-12)

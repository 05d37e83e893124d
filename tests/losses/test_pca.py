"""NaN-aware PCA fitting and the single-/multi-view pose PCA, against numpy and closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lpray.losses.pca import (
    PCAFitError,
    PosePCA,
    _pairwise_covariance,
    fit_multiview_pca,
    fit_pca,
    fit_singleview_pca,
    pca_loss,
    pca_reprojection_error,
)

NAN = np.nan


def projector(components: np.ndarray) -> np.ndarray:
    """Orthogonal projector onto the row space: equal projectors <=> same subspace."""
    q, _ = np.linalg.qr(components.T)
    return q @ q.T


def test_fit_pca_matches_numpy_svd_on_complete_data() -> None:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(60, 3)) * [10.0, 4.0, 1.0]
    obs = latent @ rng.normal(size=(3, 6)) + rng.normal(scale=0.1, size=(60, 6)) + 50.0
    fit = fit_pca(obs, n_components=3)
    np.testing.assert_allclose(fit.mean, obs.mean(axis=0))
    centred = obs - obs.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(fit.explained_variance_ratio, (s**2 / (s**2).sum())[:3], rtol=1e-9)
    np.testing.assert_allclose(projector(fit.components), projector(vt[:3]), atol=1e-9)
    np.testing.assert_allclose(fit.components @ fit.components.T, np.eye(3), atol=1e-12)
    # Each component is the SVD's up to sign; lpray fixes signs (largest entry positive).
    for c, v in zip(fit.components, vt[:3]):
        assert abs(abs(c @ v) - 1) < 1e-9
        assert c[np.abs(c).argmax()] > 0


# Six rows, three dims; pairs (0,1): rows 0,2,3; (0,2): rows 1,2,4; (1,2): rows 2,5.
TINY = np.array(
    [
        [1.0, 2.0, NAN],
        [2.0, NAN, 1.0],
        [3.0, 6.0, 2.0],
        [4.0, 8.0, NAN],
        [5.0, NAN, 4.0],
        [NAN, 10.0, 3.0],
    ]
)
# By hand (each entry: that pair's rows, their own means, n - 1 denominator):
# var0 of 1..5 = 2.5; var1 of (2, 6, 8, 10) = 35/3; var2 of (1, 2, 4, 3) = 5/3;
# cov01 of (1,3,4)/(2,6,8) = (50 + 2 + 32) / 9 / 2 = 14/3; cov02 of (2,3,5)/(1,2,4) = 42 / 9 / 2 = 7/3;
# cov12 of (6,10)/(2,3) = ((-2)(-0.5) + (2)(0.5)) / 1 = 2.
TINY_COV = np.array([[2.5, 14 / 3, 7 / 3], [14 / 3, 35 / 3, 2.0], [7 / 3, 2.0, 5 / 3]])


def test_pairwise_covariance_hand_computed() -> None:
    np.testing.assert_allclose(_pairwise_covariance(TINY), TINY_COV, rtol=1e-12)
    np.testing.assert_allclose(TINY_COV, pd.DataFrame(TINY).cov().to_numpy(), rtol=1e-12)


def test_fit_pca_nan_aware_mean_and_spectrum() -> None:
    fit = fit_pca(TINY, n_components=3)
    np.testing.assert_allclose(fit.mean, [3.0, 6.5, 2.5])
    eig = np.clip(np.linalg.eigvalsh(TINY_COV)[::-1], 0, None)
    np.testing.assert_allclose(fit.explained_variance_ratio, eig / eig.sum(), rtol=1e-9)
    top = np.linalg.eigh(TINY_COV)[1][:, -1]
    assert abs(abs(fit.components[0] @ top) - 1) < 1e-9


def test_variance_explained_selects_fewest_components() -> None:
    # Rows +-a_i e_i: zero mean, diagonal covariance, variances proportional to a_i^2.
    a2 = np.array([100.0, 10.0, 1.0, 0.01])
    rows = [s * np.sqrt(v) * np.eye(4)[i] for i, v in enumerate(a2) for s in (1, -1)]
    obs = np.array(rows)
    ratio = a2 / a2.sum()  # cumulative: 0.9008, 0.99091, 0.99991, 1
    np.testing.assert_allclose(fit_pca(obs, n_components=4).explained_variance_ratio, ratio)
    for target, expected in [(0.9, 1), (0.95, 2), (0.99, 2), (0.995, 3), (1.0, 4)]:
        assert fit_pca(obs, variance_explained=target).components.shape == (expected, 4)


def test_fit_pca_errors_name_dimensions() -> None:
    with pytest.raises(PCAFitError, match="at least 2 observations"):
        fit_pca(np.ones((1, 3)))
    sparse = np.array([[1.0, 2.0, NAN], [2.0, 1.0, 5.0], [3.0, 0.0, NAN]])
    with pytest.raises(ValueError, match=r"dimension\(s\) \[2\]") as info:
        fit_pca(sparse)
    assert info.value.dims == (2,)
    never_together = np.array([[1.0, NAN], [2.0, NAN], [NAN, 1.0], [NAN, 3.0]])
    with pytest.raises(PCAFitError, match="dimensions 0 and 1") as info:
        fit_pca(never_together)
    assert info.value.dims == (0, 1)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_pca(np.ones(5))
    with pytest.raises(ValueError, match="n_components"):
        fit_pca(np.random.default_rng(0).normal(size=(5, 2)), n_components=3)


def low_rank_labels(n: int = 40, k: int = 4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2)) * [30.0, 8.0]
    flat = latent @ rng.normal(size=(2, 2 * k)) + rng.normal(scale=0.5, size=(n, 2 * k)) + 200.0
    return flat.reshape(n, k, 2)


def test_singleview_fit_and_epsilon_against_numpy() -> None:
    labels = low_rank_labels()
    labels[3, 2] = NAN  # covered keypoint missing: row out of epsilon, still in the covariance
    labels[5, 1] = NAN  # uncovered keypoint missing: irrelevant
    idx = [0, 2, 3]
    pca = fit_singleview_pca(labels, idx, variance_explained=0.95, epsilon_percentile=90)
    assert pca.layout == "singleview" and pca.space == "frame"
    assert pca.keypoint_indices == (0, 2, 3)
    obs = labels[:, idx, :].reshape(len(labels), -1)
    ref = fit_pca(obs, variance_explained=0.95)
    np.testing.assert_allclose(pca.mean.numpy(), ref.mean, rtol=1e-6)
    np.testing.assert_allclose(pca.components.numpy(), ref.components, atol=1e-6)
    # Epsilon by hand: complete rows only, per-keypoint Euclidean error, np.percentile.
    complete = obs[~np.isnan(obs).any(axis=1)]
    assert len(complete) == len(labels) - 1
    centred = complete - ref.mean
    resid = centred - centred @ ref.components.T @ ref.components
    errors = np.sqrt(resid[:, 0::2] ** 2 + resid[:, 1::2] ** 2)
    assert pca.epsilon == pytest.approx(np.percentile(errors, 90), rel=1e-9)
    # The torch application reproduces the same errors (float32 PCA, float64 keypoints).
    full_rows = ~np.isnan(labels[:, idx]).any(axis=(1, 2))
    torch_err = pca_reprojection_error(pca, torch.from_numpy(labels[full_rows]))
    np.testing.assert_allclose(torch_err.numpy(), errors, atol=1e-3)


def test_singleview_bad_arguments() -> None:
    labels = low_rank_labels()
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        fit_singleview_pca(labels[..., 0], [0, 1])
    with pytest.raises(ValueError, match="outside"):
        fit_singleview_pca(labels, [0, 9])
    with pytest.raises(ValueError, match="more than once"):
        fit_singleview_pca(labels, [1, 1])
    labels[:, 1] = NAN
    labels[0, 1] = 5.0
    with pytest.raises(PCAFitError) as info:
        fit_singleview_pca(labels, [0, 1])
    assert info.value.dims == (2, 3)  # keypoint 1 of the observation = dims 2 (x), 3 (y)


def two_view_labels(n: int = 30, parts: int = 4, seed: int = 2):
    """Exact affine two-view projections of random 3-D points; keypoints [view0 parts, view1]."""
    rng = np.random.default_rng(seed)
    points = rng.normal(scale=20.0, size=(n, parts, 3))
    cams = rng.normal(size=(2, 2, 3))
    offsets = np.array([[320.0, 240.0], [100.0, 400.0]])
    views = [points @ cams[v].T + offsets[v] for v in range(2)]
    labels = np.concatenate(views, axis=1)  # (n, 2 * parts, 2)
    groups = [[p, parts + p] for p in range(parts)]
    return labels, groups, cams


def test_multiview_exact_rank3_and_perturbation() -> None:
    labels, groups, cams = two_view_labels()
    pca = fit_multiview_pca(labels, groups, n_components=3, epsilon_percentile=99)
    assert pca.layout == "multiview" and pca.components.shape == (3, 4)
    assert pca.keypoint_indices == (0, 4, 1, 5, 2, 6, 3, 7)
    assert pca.epsilon < 1e-6
    clean = torch.from_numpy(labels[:10])
    err = pca_reprojection_error(pca, clean)
    assert err.shape == (10, 8)
    assert float(err.max()) < 1e-3
    # Direction orthogonal to the 3-D subspace spanned by the stacked camera matrices.
    stacked = np.concatenate([cams[0], cams[1]])  # (4, 3): d(obs) = stacked @ d(point)
    normal = np.linalg.svd(stacked.T)[2][-1] * 5.0
    moved = clean.clone()
    moved[0, 2] += torch.from_numpy(normal[:2])  # part 2, view 0
    moved[0, 6] += torch.from_numpy(normal[2:])  # part 2, view 1
    err = pca_reprojection_error(pca, moved)[0]
    expected = np.zeros(8)
    expected[4], expected[5] = np.linalg.norm(normal[:2]), np.linalg.norm(normal[2:])
    np.testing.assert_allclose(err.numpy(), expected, atol=1e-3)
    loss = pca_loss(pca, moved[:1])
    assert float(loss) == pytest.approx((expected.sum() - 8 * pca.epsilon) / 8, abs=1e-3)
    # Moving the 3-D point instead stays in the subspace: no error.
    shift = stacked @ np.array([3.0, -2.0, 1.0])
    moved = clean.clone()
    moved[0, 2] += torch.from_numpy(shift[:2])
    moved[0, 6] += torch.from_numpy(shift[2:])
    assert float(pca_reprojection_error(pca, moved).max()) < 1e-3


def test_multiview_with_missing_view_stays_close() -> None:
    # Known limitation of "mean per dimension from available values": with a missing value the
    # per-dimension means come from different rows, so the mean leaves the exact subspace and
    # exact data no longer reprojects exactly (0.48 px here; O(sigma / sqrt(N)) for random gaps).
    labels, groups, cams = two_view_labels()
    labels[4, 1] = NAN
    pca = fit_multiview_pca(labels, groups)
    stacked = np.concatenate([cams[0], cams[1]])
    assert np.abs(projector(pca.components.double().numpy()) - projector(stacked.T)).max() < 0.02
    assert 1e-3 < pca.epsilon < 1.0


def test_multiview_bad_groups() -> None:
    labels, _, _ = two_view_labels()
    with pytest.raises(ValueError, match="one length"):
        fit_multiview_pca(labels, [[0, 4], [1]])
    with pytest.raises(ValueError, match="at least 2 views"):
        fit_multiview_pca(labels, [[0], [1]])
    with pytest.raises(ValueError, match="n_components"):
        fit_multiview_pca(labels, [[0, 4], [1, 5]], n_components=5)


def test_pose_pca_round_trip_and_shape_errors() -> None:
    labels, groups, _ = two_view_labels()
    pca = fit_multiview_pca(labels, groups)
    back = PosePCA.from_dict(pca.to_dict())
    assert torch.equal(back.mean, pca.mean)  # float32 -> Python float -> float32 is exact
    assert torch.equal(back.components, pca.components)
    assert (back.groups, back.epsilon, back.layout) == (pca.groups, pca.epsilon, pca.layout)
    with pytest.raises(ValueError, match="only 5"):
        pca_reprojection_error(pca, torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
        pca_reprojection_error(pca, torch.zeros(2, 8, 3))

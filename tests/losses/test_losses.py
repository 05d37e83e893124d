"""Supervised targets/MSE and the unsupervised losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lpray.losses.pca import PosePCA, pca_loss
from lpray.losses.supervised import gaussian_heatmaps, heatmap_mse
from lpray.losses.temporal import temporal_loss
from lpray.losses.unsupervised import anneal_weight, combine_losses

NAN = float("nan")


# -- supervised ------------------------------------------------------------------------------


def test_gaussian_targets_values() -> None:
    sigma = 1.25
    kp = torch.tensor([[[3.0, 2.0], [NAN, 1.0], [-2.0, 3.0]]])
    targets, valid = gaussian_heatmaps(kp, (6, 8), sigma)
    assert targets.shape == (1, 3, 6, 8)
    assert valid.tolist() == [[True, False, True]]
    t = targets[0, 0]
    assert float(t[2, 3]) == pytest.approx(1.0)  # row y=2, column x=3
    assert float(t.max()) == pytest.approx(1.0)
    one = math.exp(-1 / (2 * sigma**2))
    assert float(t[2, 4]) == pytest.approx(one)
    assert float(t[3, 3]) == pytest.approx(one)
    assert float(t[1, 2]) == pytest.approx(math.exp(-2 / (2 * sigma**2)))
    assert float(targets[0, 1].abs().max()) == 0.0  # NaN keypoint -> all-zero map
    # Outside the map: still valid, its tail falls in (distance 2 to column 0).
    assert float(targets[0, 2, 3, 0]) == pytest.approx(math.exp(-4 / (2 * sigma**2)))


def test_gaussian_targets_reject_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        gaussian_heatmaps(torch.zeros(3, 2), (4, 4))


def test_heatmap_mse_hand_computed_with_masked_keypoint() -> None:
    pred = torch.tensor([[[[1.0, 2.0]], [[100.0, 100.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    target = torch.zeros(1, 2, 1, 2)
    valid = torch.tensor([[True, False]])
    loss = heatmap_mse(pred, target, valid)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    # d/dpred of mean((pred - 0)^2) over 2 pixels = pred; the masked keypoint gets nothing.
    torch.testing.assert_close(pred.grad, torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]]))


def test_heatmap_mse_no_valid_keypoint_is_zero_with_graph() -> None:
    pred = torch.ones(2, 3, 4, 4, requires_grad=True)
    loss = heatmap_mse(pred, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and float(pred.grad.abs().max()) == 0.0


def test_heatmap_mse_bf16_and_shape_errors() -> None:
    pred = torch.full((1, 1, 2, 2), 0.5, dtype=torch.bfloat16)
    loss = heatmap_mse(pred, torch.zeros(1, 1, 2, 2), torch.ones(1, 1, dtype=torch.bool))
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="pred and target"):
        heatmap_mse(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), torch.ones(1, 1).bool())
    with pytest.raises(ValueError, match="valid"):
        heatmap_mse(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), torch.ones(2).bool())


# -- temporal --------------------------------------------------------------------------------

# One sequence of 3 frames, 2 keypoints. Keypoint 0 jumps 50 px (3-4-5 x10) then stays; keypoint 1
# stays then moves 25 px.
SEQ = torch.tensor(
    [
        [[0.0, 0.0], [10.0, 10.0]],
        [[30.0, 40.0], [10.0, 10.0]],
        [[30.0, 40.0], [10.0, 35.0]],
    ],
    dtype=torch.float64,
)


def test_temporal_loss_hand_computed_with_low_confidence_and_per_keypoint_eps() -> None:
    conf = torch.tensor([[0.9, 0.9], [0.9, 0.01], [0.9, 0.9]])
    eps = torch.tensor([20.0, 5.0])
    # Keypoint 1: frame 1 is below 0.05, so both of its pairs are dropped.
    # Kept: keypoint 0 pairs: relu(50 - 20) = 30, relu(0 - 20) = 0 -> mean 15.
    assert float(temporal_loss(SEQ, conf, eps)) == pytest.approx(15.0)
    confident = torch.full((3, 2), 0.9)
    # All pairs kept: (30 + 0 + relu(0 - 5) + relu(25 - 5)) / 4 = 12.5.
    assert float(temporal_loss(SEQ, confident, eps)) == pytest.approx(12.5)
    # Scalar epsilon 20: (30 + 0 + 0 + 5) / 4.
    assert float(temporal_loss(SEQ, confident, 20.0)) == pytest.approx(8.75)
    # Batched (B, S, K, 2) agrees and averages over all kept pairs of all sequences.
    batch = torch.stack([SEQ, SEQ + 100.0])
    both = torch.stack([conf, confident])
    assert float(temporal_loss(batch, both, eps)) == pytest.approx((30 + 30 + 20) / 6)


def test_temporal_loss_nothing_kept_is_zero_with_graph() -> None:
    kp = SEQ.clone().requires_grad_(True)
    loss = temporal_loss(kp, torch.zeros(3, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert kp.grad is not None and float(kp.grad.abs().max()) == 0.0


def test_temporal_loss_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    kp = (torch.rand(2, 4, 3, 2, generator=gen, dtype=torch.float64) * 4).requires_grad_(True)
    conf = torch.rand(2, 4, 3, generator=gen, dtype=torch.float64)
    eps = torch.tensor([0.5, 1.0, 0.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: temporal_loss(x, conf, eps, 0.2), (kp,))


def test_temporal_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match="confidence"):
        temporal_loss(SEQ, torch.ones(3, 3))
    with pytest.raises(ValueError, match="epsilon"):
        temporal_loss(SEQ, torch.ones(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(B, S, K, 2\)"):
        temporal_loss(torch.zeros(3, 2), torch.ones(3))


# -- PCA loss --------------------------------------------------------------------------------


def axis_pca(epsilon: float = 1.0) -> PosePCA:
    """Covers keypoints 0 and 1; the subspace is keypoint 0's (x, y) plane around mean k1=(1,1).

    So keypoint 0 always reprojects onto itself and keypoint 1's error is its distance to (1, 1).
    """
    return PosePCA(
        mean=torch.tensor([0.0, 0.0, 1.0, 1.0]),
        components=torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]),
        groups=((0, 1),),
        epsilon=epsilon,
        layout="singleview",
    )


def test_pca_loss_hand_computed() -> None:
    kp = torch.tensor(
        [
            [[3.0, 4.0], [4.0, 5.0], [99.0, 99.0]],  # k1 error |(3, 4)| = 5 -> relu(5 - 1) = 4
            [[7.0, 7.0], [1.0, 1.5], [-9.0, 0.0]],  # k1 error 0.5 -> 0; k2 is not covered
        ]
    )
    # Mean over 2 observations x 2 covered keypoints: (0 + 4 + 0 + 0) / 4.
    assert float(pca_loss(axis_pca(), kp)) == pytest.approx(1.0)
    assert float(pca_loss(axis_pca(epsilon=0.0), kp)) == pytest.approx((5 + 0.5) / 4)


def test_pca_loss_gradcheck() -> None:
    gen = torch.Generator().manual_seed(4)
    kp = (torch.rand(3, 3, 2, generator=gen, dtype=torch.float64) * 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pca_loss(axis_pca(0.3), x), (kp,))


# -- anneal and combination -------------------------------------------------------------------


def test_anneal_ramp() -> None:
    assert anneal_weight(0) == 0.0
    assert anneal_weight(50) == pytest.approx(0.5)
    assert anneal_weight(12.5) == pytest.approx(0.125)
    assert anneal_weight(100) == 1.0
    assert anneal_weight(250) == 1.0
    assert anneal_weight(5, rate=0.1, start_epoch=10) == 0.0
    assert anneal_weight(12, rate=0.1, start_epoch=10) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="rate"):
        anneal_weight(1, rate=0.0)


def test_combine_losses() -> None:
    sup = torch.tensor(2.0, requires_grad=True)
    temporal = torch.tensor(3.0, requires_grad=True)
    pca = torch.tensor(5.0, requires_grad=True)
    weights = {"temporal": 0.5, "pca_singleview": 2.0, "pca_multiview": 9.0}  # extra: ignored
    total, logged = combine_losses(
        sup, {"temporal": temporal, "pca_singleview": pca}, weights, 0.5, 0.1
    )
    assert total.item() == pytest.approx(0.5 * 2 + 0.1 * (0.5 * 3 + 2 * 5))
    assert float(logged["total"]) == pytest.approx(2.15)
    assert float(logged["supervised"]) == 2.0
    assert float(logged["temporal"]) == 3.0
    assert float(logged["temporal_weighted"]) == pytest.approx(0.15)
    assert float(logged["pca_singleview_weighted"]) == pytest.approx(1.0)
    assert not any(v.requires_grad for v in logged.values())
    total.backward()
    assert sup.grad.item() == 0.5 and temporal.grad.item() == pytest.approx(0.05)
    alone, _ = combine_losses(sup, {}, {}, 0.5, 1.0)
    assert alone.item() == 1.0
    with pytest.raises(ValueError, match="no weight"):
        combine_losses(sup, {"temporal": temporal}, {}, 1.0, 1.0)

"""Every registered unsupervised loss: its config section, fit, training loss, per-frame metric
and checkpoint state, on synthetic keypoints (lpray.losses.registry)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lpray.config import ConfigError, LossesConfig, config_from_dict
from lpray.losses.registry import (
    FitData,
    LossError,
    frame_metrics,
    get_loss,
    list_losses,
    states_from_dict,
)

NAMES = ["nose_top", "tail_top", "nose_bot", "tail_bot"]
VIEW_GROUPS = [["nose_top", "nose_bot"], ["tail_top", "tail_bot"]]


def synthetic_labels(n: int = 60, seed: int = 0) -> np.ndarray:
    """(n, 4, 2) frame pixels: two body parts moving in 3-D, each seen by two affine cameras
    (so poses are low-rank and the views agree), plus half a pixel of noise."""
    rng = np.random.default_rng(seed)
    world = rng.normal(0, 20, (n, 2, 3)) + np.array([100.0, 80.0, 50.0])
    top = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.1]])
    bottom = np.array([[1.0, 0.0, -0.1], [0.0, 0.3, 1.0]])
    views = [world @ top.T, world @ bottom.T + 40.0]  # each (n, 2 parts, 2)
    labels = np.concatenate(views, axis=1)  # keypoints: nose_top, tail_top, nose_bot, tail_bot
    return labels + rng.normal(0, 0.5, labels.shape)


def fitted(name: str, labels: np.ndarray) -> tuple[object, object]:
    """The loss's switched-on settings and its fitted state (None without a fit)."""
    loss = get_loss(name)
    settings = dataclasses.replace(loss.config(), weight=1.0)
    state = None
    if loss.fit is not None:
        state = loss.fit(settings, FitData(labels, NAMES, VIEW_GROUPS))
    return settings, state


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_has_a_config_section_switched_off_by_default(name):
    section = getattr(LossesConfig(), name)
    assert isinstance(section, get_loss(name).config) and section.weight == 0
    cfg = config_from_dict({"losses": {name: {"weight": 0.5}}})
    assert cfg.losses.active() == {name: 0.5}
    with pytest.raises(ConfigError, match=rf"losses\.{name}\.weight: must be >= 0"):
        config_from_dict({"losses": {name: {"weight": -1.0}}})


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_is_finite_and_differentiable_on_synthetic_keypoints(name):
    labels = synthetic_labels()
    settings, state = fitted(name, labels)
    rng = np.random.default_rng(1)
    noisy = labels[:32].reshape(2, 16, 4, 2) + rng.normal(0, 30, (2, 16, 4, 2))
    keypoints = torch.tensor(noisy, dtype=torch.float32, requires_grad=True)
    confidence = torch.ones(2, 16, 4)
    value = get_loss(name).loss(keypoints, confidence, settings, state)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(keypoints.grad).all() and keypoints.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_is_zero_for_a_constant_mean_pose(name):
    """A pose that never moves costs no temporal loss, and the labels' mean pose lies on the
    PCA subspaces (single view: it is the fitted mean; multi view: each part's mean is a point
    the cameras agree on), so no loss of a still, typical animal is positive."""
    labels = synthetic_labels()
    settings, state = fitted(name, labels)
    still = np.broadcast_to(labels.mean(axis=0), (2, 16, 4, 2))
    keypoints = torch.tensor(still, dtype=torch.float32)
    value = get_loss(name).loss(keypoints, torch.ones(2, 16, 4), settings, state)
    assert float(value) == 0.0


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_writes_a_finite_per_frame_metric(name):
    labels = synthetic_labels()
    _, state = fitted(name, labels)
    metric = get_loss(name).metric(labels[:20], state)
    assert metric is not None
    assert metric.values.shape == (20, len(metric.keypoints))
    assert set(metric.keypoints) <= set(range(len(NAMES)))
    assert np.isfinite(metric.values[1:]).all()  # a frame-to-frame metric has no first value


@pytest.mark.parametrize("name", [n for n in list_losses() if get_loss(n).fit is not None])
def test_fitted_states_survive_the_checkpoint_and_without_one_there_is_no_metric(name):
    labels = synthetic_labels()
    _, state = fitted(name, labels)
    back = states_from_dict({name: state.to_dict()})[name]
    assert back.to_dict() == state.to_dict()
    assert get_loss(name).metric(labels, None) is None


def test_frame_metrics_iterate_the_registry_in_order():
    labels = synthetic_labels()
    states = {n: s for n in list_losses() for s in [fitted(n, labels)[1]] if s is not None}
    columns = [m.column for m in frame_metrics(labels[:10], states)]
    expected = [get_loss(n).metric(labels[:10], states.get(n)) for n in list_losses()]
    assert columns == [m.column for m in expected if m is not None]
    # the built-in columns, as select-frames and older metrics files name them
    assert columns[:3] == ["temporal_norm", "pca_singleview", "pca_multiview"]
    assert "pca_singleview" not in [m.column for m in frame_metrics(labels[:10], {})]


def test_unknown_losses_are_refused_naming_the_registered_ones():
    with pytest.raises(LossError, match="'smoothness'.*temporal, pca_singleview, pca_multiview"):
        get_loss("smoothness")
    with pytest.raises(ConfigError, match=r"unknown config key losses\.smoothness .*temporal"):
        config_from_dict({"losses": {"smoothness": {"weight": 1.0}}})

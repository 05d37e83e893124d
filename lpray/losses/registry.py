"""Unsupervised-loss registry: name -> config section, optional fitted state, loss, per-frame metric.

A loss is one :class:`UnsupervisedLoss`, defined as ``LOSS = UnsupervisedLoss(...)`` in its own
module under :mod:`lpray.losses` and registered by adding that module's name to ``_BUILT_IN``.
Everything else iterates the registry: the config's ``losses.<name>`` sections
(:class:`lpray.config.LossesConfig`) and their checks, the fits before training
(:func:`lpray.train.data.fit_loss_states`), the training step
(:class:`lpray.train.module.PoseModule`), the checkpoint, the prediction metrics
(:func:`lpray.inference.video.video_metrics`), the sweep tables and reports.

To add one: ``lpray/losses/<name>.py`` with a config dataclass (a ``weight: float = 0.0`` field
switches it on), a ``loss`` function and, where it has one, a ``fit`` and a ``metric``; its name
in ``_BUILT_IN``; ``tests/losses/test_loss_registry.py`` checks every registered loss.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lpray.errors import UserError

if TYPE_CHECKING:  # the config reads this registry: importing torch here cost the CLI seconds
    import torch


class LossError(UserError, ValueError):
    """An unknown unsupervised-loss name."""


@dataclass(frozen=True)
class FitData:
    """What a loss may fit its state on, before training.

    Attributes:
        labels: ``(N, K, 2)`` training-split labels in FRAME pixels, NaN where missing.
        keypoint_names: the ``K`` keypoint names.
        view_groups: multi-view body parts, each its keypoint name in every view ([]: one view).
    """

    labels: np.ndarray
    keypoint_names: list[str]
    view_groups: list[list[str]]


@dataclass(frozen=True)
class FrameMetric:
    """A loss's per-frame metric on a predicted video, one column per covered keypoint.

    Attributes:
        column: the metrics file's column prefix (``<column>|<keypoint>``).
        values: ``(T, len(keypoints))`` float array.
        keypoints: indices of the keypoints the columns cover, in column order.
    """

    column: str
    values: np.ndarray
    keypoints: tuple[int, ...]


def _no_problems(settings: Any) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class UnsupervisedLoss:
    """One unsupervised loss.

    Attributes:
        name: its config section (``losses.<name>``) and its log name (``train/<name>``).
        config: the section's dataclass; needs a ``weight: float`` field (0 switches it off).
        loss: ``loss(keypoints, confidence, settings, state) -> scalar``: keypoints
            ``(B, S, K, 2)`` in FRAME pixels and confidences ``(B, S, K)`` of unlabeled
            sequences; differentiable.
        metric: ``metric(keypoints, state) -> FrameMetric | None``: the per-frame metric of
            ``(T, K, 2)`` predictions (frame pixels), None where it has none (no fitted state).
        fit: ``fit(settings, data) -> state | None``: a state fitted on the training labels
            before training (the PCA); None: the loss has no state. A loss with a ``fit`` is
            trained only when the fit returned a state.
        state_from_dict: inverse of the state's ``to_dict()`` (the checkpoint holds plain
            values); needed with ``fit``.
        problems: ``problems(settings) -> [(key, message)]``: value checks beyond the types,
            ``key`` relative to the section (``"epsilon"``); ``weight >= 0`` is checked for all.
        idle_hint: what makes the loss 0 on every step and which key to change (sweep reports).
    """

    name: str
    config: type
    loss: Callable[[torch.Tensor, torch.Tensor, Any, Any], torch.Tensor] = field(repr=False)
    metric: Callable[[np.ndarray, Any], FrameMetric | None] = field(repr=False)
    fit: Callable[[Any, FitData], Any] | None = field(default=None, repr=False)
    state_from_dict: Callable[[dict[str, Any]], Any] | None = field(default=None, repr=False)
    problems: Callable[[Any], list[tuple[str, str]]] = field(default=_no_problems, repr=False)
    idle_hint: str = ""


# Module names under lpray.losses, in the order the losses are computed, logged and written.
_BUILT_IN = ("temporal", "pca_singleview", "pca_multiview")


@functools.cache
def _registry() -> dict[str, UnsupervisedLoss]:
    losses = [importlib.import_module(f"lpray.losses.{m}").LOSS for m in _BUILT_IN]
    return {loss.name: loss for loss in losses}


def list_losses() -> list[str]:
    """Every registered unsupervised loss name, in registry order."""
    return list(_registry())


def get_loss(name: str) -> UnsupervisedLoss:
    """The loss called ``name``.

    Raises:
        LossError: no such loss; the message names the registered ones.
    """
    losses = _registry()
    if name not in losses:
        raise LossError(f"unknown unsupervised loss {name!r}: choose from {', '.join(losses)}")
    return losses[name]


def states_from_dict(saved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's fitted states (name -> ``to_dict()``) back as objects."""
    out = {}
    for name, data in saved.items():
        loss = get_loss(name)
        if loss.state_from_dict is None:
            raise LossError(f"the checkpoint holds a state for {name!r}, which has none")
        out[name] = loss.state_from_dict(data)
    return out


def frame_metrics(keypoints: np.ndarray, states: dict[str, Any]) -> list[FrameMetric]:
    """Every registered loss's per-frame metric of ``(T, K, 2)`` predictions (frame pixels)."""
    found = (loss.metric(keypoints, states.get(loss.name)) for loss in _registry().values())
    return [metric for metric in found if metric is not None]


def active_weights(weights: dict[str, float], states: Sequence[str]) -> dict[str, float]:
    """The losses a run trains: switched on (``weights``) and, if they fit a state, fitted."""
    return {name: w for name, w in weights.items() if get_loss(name).fit is None or name in states}

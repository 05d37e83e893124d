"""Backbone registry: name -> feature trunk at stride 32 (classification layers removed).

Add a backbone by decorating a builder with ``@register("name")``; configs refer to it by name.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from lpray.errors import UserError
from lpray.models.resnet import resnet_trunk

Builder = Callable[[bool], tuple[nn.Module, int]]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


class PretrainedWeightsUnavailable(UserError, RuntimeError):
    """ImageNet weights were asked for but are not in the local torch cache."""


def check_pretrained_cached(name: str) -> None:
    """Raise :class:`PretrainedWeightsUnavailable` unless ``name``'s ImageNet weights are cached.

    Cheap (no network, no model built): commands call it before they write anything.
    """
    if name in REDUCED_WIDTH:
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: {name} is a reduced-width ResNet; no ImageNet weights exist for "
            "it. Set model.pretrained=false, or choose resnet18/34/50"
        )
    if name in _REGISTRY and name.startswith("resnet"):
        _resnet_weights(name)


def _resnet_weights(name: str):  # noqa: ANN202 - a torchvision WeightsEnum member
    """The ImageNet weights of ``name``, checked to be in the local torch cache."""
    import os

    import torchvision  # noqa: PLC0415 - only for its weight files (5.7 s import, resnet.py)

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    cache = torch.hub.get_dir()
    filename = weights.url.rsplit("/", 1)[-1]
    if not os.path.exists(os.path.join(cache, "checkpoints", filename)):
        # lpray never downloads at run time inside workers: a cluster node without internet
        # would hang. Ask for the file to be cached up front instead.
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: ImageNet weights for {name} are not cached at "
            f'{cache}/checkpoints/{filename}; download them once with `python -c "import '
            f"torchvision; torchvision.models.{name}(weights='IMAGENET1K_V1')\"` on a machine "
            "with internet, or set model.pretrained=false for random initialisation"
        )
    return weights


def _resnet(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    trunk, channels = resnet_trunk(name)
    if pretrained:
        state = _resnet_weights(name).get_state_dict(progress=False)
        # the trunk is conv1, bn1, relu, maxpool, layer1..4 in torchvision's order: its indices
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        index = {n: str(i) for i, n in enumerate(names)}
        trunk.load_state_dict(
            {
                f"{index[head]}.{rest}": value
                for key, value in state.items()
                for head, rest in [key.split(".", 1)]
                if head in index
            }
        )
    return trunk, channels


for _name in ("resnet18", "resnet34", "resnet50"):
    register(_name)(lambda pretrained, _n=_name: _resnet(_n, pretrained))

# ResNet-18 layouts at a fraction of its width, for CPU demos and tests: at 1/4 width a
# checkpoint with Adam's state is ~1/16 of ResNet-18's 134 MB and a training step on 2 CPU
# cores several times faster. Random initialisation only.
REDUCED_WIDTH = {"resnet18_w16": 16, "resnet18_w32": 32}


def _reduced(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    if pretrained:
        check_pretrained_cached(name)  # raises: no ImageNet weights at this width
    return resnet_trunk("resnet18", REDUCED_WIDTH[name])


for _name in REDUCED_WIDTH:
    register(_name)(lambda pretrained, _n=_name: _reduced(_n, pretrained))


def build_backbone(name: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """The trunk for ``name`` and its output channel count."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {available_backbones()}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _REGISTRY[name](pretrained)

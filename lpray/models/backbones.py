"""Backbone registry: name -> feature trunk (classification layers removed) and its stride.

Add a backbone by decorating a builder with ``@register("name", stride)``; configs, the CLI and
the tests take the names from :func:`available_backbones` (``tests/test_backbones.py`` trains and
predicts with every registered one). The heatmap head upsamples from the trunk's stride to
stride 4 (:class:`lpray.models.heatmap.HeatmapHead`).

ResNets are lpray's own (:mod:`lpray.models.resnet`, torchvision's weights); the others come from
timm (``features_only``: the last feature map), imported only when one is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from lpray.models.resnet import resnet_trunk
from lpray.models.weights import PretrainedWeightsUnavailable, load_weights

Builder = Callable[[bool], tuple[nn.Module, int]]
_REGISTRY: dict[str, tuple[Builder, int]] = {}


def register(name: str, stride: int = 32) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        _REGISTRY[name] = (builder, stride)
        return builder

    return wrap


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def backbone_stride(name: str) -> int:
    """How many input pixels one feature-map pixel of ``name`` spans (32 or 16)."""
    return _REGISTRY[name][1]


def check_pretrained_cached(name: str) -> None:
    """Fetch ``name``'s pretrained weights now (download on first use, verify), or raise
    :class:`PretrainedWeightsUnavailable`: commands call it before they write anything, so a
    run never fails for its weights after it started."""
    if name in REDUCED_WIDTH:
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: {name} is a reduced-width ResNet; no ImageNet weights exist for "
            "it. Set model.pretrained=false, or choose resnet18/34/50"
        )
    if name in _REGISTRY and name.startswith("resnet"):
        _resnet_state(name)


def _resnet_state(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict of ``name`` (its weights API names the file and URL)."""
    import torchvision  # noqa: PLC0415 - only for its weight table (5.7 s import, resnet.py)

    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    return load_weights(url, f"model.pretrained: ImageNet weights for {name}")


def _resnet(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    trunk, channels = resnet_trunk(name)
    if pretrained:
        state = _resnet_state(name)
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
        return _REGISTRY[name][0](pretrained)


class _TimmTrunk(nn.Module):
    """A timm ``features_only`` model's last feature map as the trunk's output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames)[-1]


def _timm(model_name: str, pretrained: bool, **kwargs: object) -> tuple[nn.Module, int]:
    import timm  # noqa: PLC0415 - only when a timm backbone is built

    try:
        model = timm.create_model(
            model_name, pretrained=pretrained, features_only=True, out_indices=(-1,), **kwargs
        )
    except (OSError, RuntimeError) as error:  # no network / no cached file for the weights
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: could not get timm's weights for {model_name} ({error}); they are "
            "downloaded from the Hugging Face Hub into HF_HOME on first use: run once on a "
            "machine with internet (or copy its HF_HOME cache), or set model.pretrained=false"
        ) from error
    return _TimmTrunk(model), int(model.feature_info.channels()[-1])


# name -> (timm model, stride, options). ViTs take any input size (their position embeddings are
# interpolated: dynamic_img_size) and give stride-16 maps; the self-supervised DINO weights are
# what pose work fine-tunes from.
TIMM_BACKBONES = {
    "convnext_tiny": ("convnext_tiny", 32, {}),
    "efficientnet_b0": ("efficientnet_b0", 32, {}),
    "hrnet_w18_small": ("hrnet_w18_small", 32, {}),
    "vit_small_dino": ("vit_small_patch16_224.dino", 16, {"dynamic_img_size": True}),
    "vit_base_dino": ("vit_base_patch16_224.dino", 16, {"dynamic_img_size": True}),
}

for _name, (_model, _stride, _kwargs) in TIMM_BACKBONES.items():
    register(_name, _stride)(lambda pretrained, _m=_model, _k=_kwargs: _timm(_m, pretrained, **_k))

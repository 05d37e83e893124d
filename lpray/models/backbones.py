"""Backbone registry: name -> how to build its feature trunk, its stride and the pretrained
weights ``model.pretrained`` loads.

The registry is names and facts only; each trunk is built by a function named by its import
path (``"lpray.models.trunks:torchvision_resnet"``) and imported when a trunk is built or its
weights fetched. So checking a config (which names a backbone and asks whether it has
pretrained weights) imports no torch: the ``lpray track`` driver and every command's config
check stay torch-free (``tests/test_imports.py``), as timm's ``list_models`` runs without
building a model.

Add a backbone by writing ``build(name, pretrained) -> (trunk, output channels)`` (in
:mod:`lpray.models.trunks` or a module of its own) and one :func:`register` line below;
configs, the CLI and the tests take the names from :func:`available_backbones`
(``tests/models/test_backbones.py`` trains and predicts with every registered one). The heatmap
head upsamples from the trunk's stride to stride 4 (:class:`lpray.models.heatmap.HeatmapHead`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from lpray.importpath import resolve

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """One registered backbone.

    Attributes:
        build: ``"module:function"``; ``function(name, pretrained) -> (trunk, output channels)``.
        stride: input pixels per feature-map pixel, as the heatmap head sees it (32 or 16).
        weights: what ``model.pretrained`` loads (e.g. "ImageNet (torchvision)"); None: no
            pretrained weights exist for it.
        patch: a ViT's patch size, where it differs from ``stride`` (the trunk rescales its
            input so that one patch spans ``stride`` input pixels).
        fetch: ``"module:function"``; ``function(name)`` downloads and verifies the weight file
            now (None: fetched when built).
    """

    build: str
    stride: int = 32
    weights: str | None = None
    patch: int | None = None
    fetch: str | None = None


_REGISTRY: dict[str, BackboneSpec] = {}


def register(
    name: str,
    build: str,
    stride: int = 32,
    weights: str | None = None,
    patch: int | None = None,
    fetch: str | None = None,
) -> None:
    """Register backbone ``name``, built by the function ``build`` names (``"module:function"``)."""
    _REGISTRY[name] = BackboneSpec(build, stride, weights, patch, fetch)


def available_backbones() -> list[str]:
    return sorted(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    return _REGISTRY[name]


def backbone_stride(name: str) -> int:
    """How many input pixels one feature-map pixel of ``name`` spans (32 or 16)."""
    return _REGISTRY[name].stride


def pretrained_weights(name: str) -> str | None:
    """What ``model.pretrained`` loads into ``name`` (None: it has no pretrained weights)."""
    return _REGISTRY[name].weights


def check_pretrained_cached(name: str) -> None:
    """Fetch ``name``'s pretrained weights now (download on first use, verify), or raise
    :class:`lpray.models.weights.PretrainedWeightsUnavailable`: commands call it before they
    write anything, so a run never fails for its weights after it started."""
    from lpray.models.weights import PretrainedWeightsUnavailable

    spec = _REGISTRY[name]
    if spec.weights is None:
        having = [n for n in available_backbones() if _REGISTRY[n].weights is not None]
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: no pretrained weights exist for {name} (reduced-width ResNets "
            f"are random-init only). Set model.pretrained=false, or choose one of {having}"
        )
    if spec.fetch is not None:
        resolve(spec.fetch)(name)


def build_backbone(name: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """The trunk for ``name`` and its output channel count."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {available_backbones()}")
    build = resolve(_REGISTRY[name].build)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(name, pretrained)


# --------------------------------------------------------------------------------------------
# ResNets (lpray's own, lpray.models.resnet): torchvision's ImageNet weights, MMPose's AP-10K
# animal-pose weights (Lightning Pose's default backbone), and reduced widths for CPU demos and
# tests (random initialisation only).
_TRUNKS = "lpray.models.trunks"

for _name in ("resnet18", "resnet34", "resnet50"):
    register(
        _name,
        f"{_TRUNKS}:torchvision_resnet",
        weights="ImageNet (torchvision)",
        fetch=f"{_TRUNKS}:fetch_torchvision_resnet",
    )
register(
    "resnet50_animal_ap10k",
    f"{_TRUNKS}:ap10k_resnet50",
    weights="AP-10K animal pose (MMPose)",
    fetch=f"{_TRUNKS}:fetch_ap10k",
)
# ResNet-18 layouts at a fraction of its width: at 1/4 width a checkpoint with Adam's state is
# ~1/16 of ResNet-18's 134 MB and a training step on 2 CPU cores several times faster.
REDUCED_WIDTH = {"resnet18_w16": 16, "resnet18_w32": 32}
for _name in REDUCED_WIDTH:
    register(_name, f"{_TRUNKS}:reduced_resnet")


# --------------------------------------------------------------------------------------------
# timm (imported only when one is built)


class TimmBackbone(NamedTuple):
    """A registered timm trunk: its timm name (with the weights' tag), stride, weights, options."""

    model: str
    stride: int
    weights: str
    options: dict[str, object]
    patch: int | None = None


_VIT = {"dynamic_img_size": True}
# ViTs take any input size (their position embeddings are interpolated: dynamic_img_size) and
# give stride-16 maps; the self-supervised DINO / DINOv2 weights are what pose work fine-tunes
# from. DINOv2's trunks have 14-pixel patches and are rescaled to stride 16 (trunks._TimmTrunk).
TIMM_BACKBONES = {
    "convnext_tiny": TimmBackbone("convnext_tiny", 32, "ImageNet (timm)", {}),
    "efficientnet_b0": TimmBackbone("efficientnet_b0", 32, "ImageNet (timm)", {}),
    "hrnet_w18_small": TimmBackbone("hrnet_w18_small", 32, "ImageNet (timm)", {}),
    "vit_small_dino": TimmBackbone("vit_small_patch16_224.dino", 16, "DINO (timm)", _VIT),
    "vit_base_dino": TimmBackbone("vit_base_patch16_224.dino", 16, "DINO (timm)", _VIT),
    "vit_small_dinov2": TimmBackbone(
        "vit_small_patch14_dinov2.lvd142m", 16, "DINOv2 (timm)", _VIT, patch=14
    ),
    "vit_base_dinov2": TimmBackbone(
        "vit_base_patch14_dinov2.lvd142m", 16, "DINOv2 (timm)", _VIT, patch=14
    ),
}
for _name, _entry in TIMM_BACKBONES.items():
    register(
        _name, f"{_TRUNKS}:timm_trunk", _entry.stride, weights=_entry.weights, patch=_entry.patch
    )

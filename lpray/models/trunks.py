"""The backbones' trunk builders: each ``build(name, pretrained) -> (trunk, output channels)``,
named by :mod:`lpray.models.backbones`' registry and imported only when a trunk is built (this
module imports torch; the registry does not).

ResNets are lpray's own (:mod:`lpray.models.resnet`) with torchvision's ImageNet weights or
MMPose's AP-10K animal-pose weights; the others come from timm (``features_only``: the last
feature map), imported only when one is built.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from lpray.models.backbones import REDUCED_WIDTH, TIMM_BACKBONES, check_pretrained_cached
from lpray.models.resnet import resnet_trunk
from lpray.models.weights import PretrainedWeightsUnavailable, fetch_weights, load_weights

# --------------------------------------------------------------------------------------------
# ResNets: torchvision's ImageNet weights


# the trunk is conv1, bn1, relu, maxpool, layer1..4 in torchvision's order: its indices
_TRUNK_LAYERS = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
_TRUNK_INDEX = {name: str(i) for i, name in enumerate(_TRUNK_LAYERS)}


def torchvision_to_trunk(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys (``layer1.0.conv1.weight``) -> the trunk's (``4.0.conv1.weight``);
    the classifier (``fc.*``) is dropped."""
    return {
        f"{_TRUNK_INDEX[head]}.{rest}": value
        for key, value in state.items()
        for head, rest in [key.split(".", 1)]
        if head in _TRUNK_INDEX
    }


def _imagenet_url(name: str) -> str:
    import torchvision  # noqa: PLC0415 - only for its weight table (5.7 s import, resnet.py)

    return torchvision.models.get_model_weights(name).IMAGENET1K_V1.url


def _imagenet_what(name: str) -> str:
    return f"model.pretrained: ImageNet weights for {name}"


def torchvision_resnet(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    trunk, channels = resnet_trunk(name)
    if pretrained:
        state = load_weights(_imagenet_url(name), _imagenet_what(name))
        trunk.load_state_dict(torchvision_to_trunk(state))
    return trunk, channels


def fetch_torchvision_resnet(name: str) -> None:
    fetch_weights(_imagenet_url(name), _imagenet_what(name))


# --------------------------------------------------------------------------------------------
# ResNet-50 pretrained on animal pose (AP-10K): Lightning Pose's default backbone

# MMPose's SimpleBaseline ResNet-50 trained on AP-10K (256x256), the file Lightning Pose's
# resnet50_animal_ap10k loads (lightning_pose/models/backbones/torchvision.py). MMPose's
# tools/misc/publish_model.py names a file "<name>-<first 8 hex of its sha256sum>_<date>.pth",
# so weights.py verifies "35760eb8" as a SHA-256 prefix. That this 2021 file was published with
# that script is inferred from its name (not checked against the file: no network here).
AP10K_URL = (
    "https://download.openmmlab.com/mmpose/animal/resnet/res50_ap10k_256x256-35760eb8_20211029.pth"
)
_AP10K_WHAT = "model.pretrained: AP-10K animal-pose weights for resnet50_animal_ap10k"


def mmpose_to_trunk(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMPose top-down ResNet keys (``backbone.layer1.0.conv1.weight``) -> the trunk's.

    MMPose's ResNet (``style="pytorch"``) names its modules as torchvision does, under
    ``backbone.``; the keypoint head (``keypoint_head.*`` / ``head.*``) is dropped.
    """
    prefix = "backbone."
    return torchvision_to_trunk(
        {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    )


def _ap10k_state() -> dict[str, torch.Tensor]:
    # an MMCV checkpoint: {"meta": ..., "state_dict": ...}; its meta may hold numpy scalars
    # (the best validation AP), which the safe loader refuses unless allowed
    checkpoint = load_weights(AP10K_URL, _AP10K_WHAT, numpy_scalars=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise PretrainedWeightsUnavailable(
            f"{_AP10K_WHAT}: the file from {AP10K_URL} holds no 'state_dict' (not an MMPose "
            "checkpoint): delete it from the torch hub cache to download it again"
        )
    return state


def ap10k_resnet50(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    trunk, channels = resnet_trunk("resnet50")
    if pretrained:
        trunk.load_state_dict(mmpose_to_trunk(_ap10k_state()))  # strict: every key mapped
    return trunk, channels


def fetch_ap10k(name: str) -> None:
    fetch_weights(AP10K_URL, _AP10K_WHAT)


# --------------------------------------------------------------------------------------------
# ResNet-18 layouts at a fraction of its width (random initialisation only)


def reduced_resnet(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    if pretrained:
        check_pretrained_cached(name)  # raises: no ImageNet weights at this width
    return resnet_trunk("resnet18", REDUCED_WIDTH[name])


# --------------------------------------------------------------------------------------------
# timm


class _TimmTrunk(nn.Module):
    """A timm ``features_only`` model's last feature map as the trunk's output.

    With ``patch`` (a ViT patch size other than ``stride``) the frames are first rescaled by
    ``patch / stride``, so that each ``stride`` x ``stride`` block of the input becomes one patch
    and the token grid is the input size / ``stride``. Why rescale rather than refuse input sizes
    that are not multiples of the patch: DINOv2's 14-pixel patches give a stride-14 grid, from
    which the head's x4 upsampling would make heatmaps at 1/3.5 of the input, while targets,
    decoding and export all take 1/4; and sizes that are multiples of 14 and of 32 (the rule
    every other backbone and the data pipeline share) are only 224, 448, ... Rescaling keeps
    DINOv2's patch embedding as trained (timm's ``patch_size=16`` would resample its filters)
    at the cost of 1/8 of the trunk's input resolution; bilinear with ``align_corners=False``
    maps pixel i+0.5 to (i+0.5) * patch / stride exactly, so feature cell j spans input pixels
    [stride j, stride (j+1)), where the head expects it.
    """

    def __init__(self, model: nn.Module, stride: int, patch: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.stride = stride
        self.patch = patch

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.patch is not None and self.patch != self.stride:
            height, width = frames.shape[-2:]
            size = (height // self.stride * self.patch, width // self.stride * self.patch)
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        return self.model(frames)[-1]


def timm_trunk(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    import timm  # noqa: PLC0415 - only when a timm backbone is built

    entry = TIMM_BACKBONES[name]
    try:
        model = timm.create_model(
            entry.model,
            pretrained=pretrained,
            features_only=True,
            out_indices=(-1,),
            **entry.options,
        )
    except (OSError, RuntimeError) as error:  # no network / no cached file for the weights
        if not pretrained:
            raise
        raise PretrainedWeightsUnavailable(
            f"model.pretrained: could not get timm's weights for {entry.model} ({error}); they "
            "are downloaded from the Hugging Face Hub into HF_HOME on first use: run once on a "
            "machine with internet (or copy its HF_HOME cache), or set model.pretrained=false"
        ) from error
    return _TimmTrunk(model, entry.stride, entry.patch), int(model.feature_info.channels()[-1])

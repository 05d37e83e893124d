"""Every registered backbone: its stride is what the registry says and the head brings it to
stride-4 heatmaps; one of each builder family trains with `lpray train` and predicts through
the inference network (random init)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpray.config import ConfigError, config_from_dict
from lpray.inference.network import load_network
from lpray.models.backbones import (
    TIMM_BACKBONES,
    available_backbones,
    backbone_spec,
    backbone_stride,
    build_backbone,
    pretrained_weights,
)
from lpray.models.heatmap import build_model

from conftest import tiny_config

pytest.importorskip("timm", reason="timm provides the non-ResNet backbones")


@pytest.mark.parametrize("name", available_backbones())
def test_registered_stride_and_stride_4_heatmaps(name):
    trunk, channels = build_backbone(name)
    features = trunk(torch.randn(2, 3, 64, 96))
    stride = backbone_stride(name)
    assert features.shape == (2, channels, 64 // stride, 96 // stride)
    model = build_model("heatmap", name, 5, False)
    assert model.forward_sequence(torch.randn(2, 3, 64, 96)).shape == (2, 5, 16, 24)


# Training runs one backbone of each builder: every timm one, and one ResNet (the ResNet widths
# and depths share resnet_trunk; the other training tests run resnet18). ~20-60 s each on 2 cores.
TRAINED = [n for n in available_backbones() if n in TIMM_BACKBONES] + ["resnet18_w32"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_every_backbone_trains_and_predicts(tiny_project, tmp_path, name):
    from lpray.train.fit import train

    values = tiny_config(tiny_project, tmp_path / "m", model={"backbone": name})
    values["training"].update(max_epochs=1, batch_size=4, sequence_length=2)
    model_dir = train(config_from_dict(values))
    network = load_network(model_dir, "cpu")
    xy, confidence = network.predict_sequence(torch.randn(3, 3, 64, 64))
    assert xy.shape == (3, len(network.keypoint_names), 2)
    assert np.isfinite(xy.numpy()).all() and ((confidence >= 0) & (confidence <= 1)).all()


@pytest.mark.parametrize(("name", "width"), [("vit_small_dinov2", 384), ("vit_base_dinov2", 768)])
def test_dinov2_trunks_see_14_pixel_patches_on_a_stride_16_grid(name, width):
    """DINOv2's patch-14 trunks get the frames rescaled by 14/16: one patch per 16x16 block."""
    assert backbone_spec(name).patch == 14 and backbone_stride(name) == 16
    trunk, channels = build_backbone(name)
    seen = []
    trunk.model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        features = trunk(torch.randn(1, 3, 64, 96))
    assert seen == [(56, 84)] and channels == width and features.shape == (1, width, 4, 6)


def test_the_animal_pose_resnet50_is_a_resnet50_trunk():
    torch.manual_seed(0)
    ours, channels = build_backbone("resnet50_animal_ap10k")
    torch.manual_seed(0)
    reference, _ = build_backbone("resnet50")
    assert channels == 2048 and backbone_stride("resnet50_animal_ap10k") == 32
    a, b = ours.state_dict(), reference.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_the_registry_says_which_weights_each_backbone_has():
    assert pretrained_weights("resnet50") == "ImageNet (torchvision)"
    assert pretrained_weights("resnet50_animal_ap10k") == "AP-10K animal pose (MMPose)"
    assert pretrained_weights("vit_base_dinov2") == "DINOv2 (timm)"
    assert pretrained_weights("resnet18_w16") is None
    assert all(pretrained_weights(n) for n in TIMM_BACKBONES)


def test_config_takes_backbone_names_from_the_registry():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet51'.*vit_small_dino"):
        config_from_dict({"model": {"backbone": "resnet51"}})

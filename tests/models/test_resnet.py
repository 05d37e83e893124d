"""lpray's ResNet trunks are torchvision's: the same parameter names, the same seeded random
initialisation, the same outputs (so checkpoints and training runs are unchanged)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lpray.models.backbones import available_backbones, build_backbone
from lpray.models.resnet import LAYOUTS, resnet_trunk


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_trunk_equals_torchvision(name):
    torch.manual_seed(11)
    reference = getattr(torchvision.models, name)(weights=None)
    expected = nn.Sequential(*list(reference.children())[:-2]).eval()
    torch.manual_seed(11)
    trunk, channels = resnet_trunk(name)
    trunk.eval()
    assert channels == reference.fc.in_features
    ours, theirs = trunk.state_dict(), expected.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    frames = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(trunk(frames), expected(frames), rtol=0, atol=0)


def test_registry_builds_every_resnet_without_torchvision_weights():
    assert set(LAYOUTS) <= set(available_backbones())
    trunk, channels = build_backbone("resnet18")
    assert channels == 512 and trunk(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_reduced_width_resnet18_scales_every_stage_and_has_no_imagenet_weights():
    from lpray.config import load_config
    from lpray.models.backbones import check_pretrained_cached
    from lpray.models.weights import PretrainedWeightsUnavailable

    full = sum(p.numel() for p in build_backbone("resnet18")[0].parameters())
    for name, width in (("resnet18_w16", 16), ("resnet18_w32", 32)):
        trunk, channels = build_backbone(name)
        assert channels == 8 * width
        assert trunk(torch.randn(1, 3, 64, 64)).shape == (1, 8 * width, 2, 2)
        # convolution weights dominate, and each scales with width squared
        count = sum(p.numel() for p in trunk.parameters())
        assert count == pytest.approx(full * (width / 64) ** 2, rel=0.01)
        with pytest.raises(PretrainedWeightsUnavailable, match=f"{name}.*pretrained=false"):
            check_pretrained_cached(name)
        assert load_config(None, [f"model.backbone={name}"]).model.backbone == name

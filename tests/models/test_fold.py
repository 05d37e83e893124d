"""Inference folds each BatchNorm into the convolution before it: the same function (float64
dense truth: the unfolded network), every BatchNorm of the trunks gone, training untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lpray.config import config_from_dict
from lpray.inference.network import random_network, save_checkpoint
from lpray.models.fold import fold_batchnorm
from lpray.models.heatmap import build_model


def _trained_statistics(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.uniform_(0.3, 2.0)
                module.bias.normal_(0.0, 0.3)


@pytest.mark.parametrize(
    "model_type,backbone",
    [("heatmap", "resnet18"), ("context", "resnet18"), ("heatmap", "resnet50")],
)
def test_folded_network_equals_the_unfolded_one(model_type, backbone):
    torch.manual_seed(3)
    model = build_model(model_type, backbone, 4, False).double().eval()
    _trained_statistics(model)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    frames = torch.randn(6, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = model.forward_sequence(frames)
        assert fold_batchnorm(model) == batchnorms > 0
        got = model.forward_sequence(frames)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    scale = expected.abs().max()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12 * float(scale))


def test_batchnorm_in_training_mode_is_left_alone():
    model = build_model("heatmap", "resnet18", 4, False).train()
    assert fold_batchnorm(model) == 0
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_inference_networks_cannot_be_saved_as_training_checkpoints(tmp_path):
    cfg = config_from_dict({"data": {"image_size": [32, 32]}, "model": {"backbone": "resnet18"}})
    folded = random_network(cfg, ["a", "b"], "cpu", fold=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    with pytest.raises(ValueError, match="fold=False"):
        save_checkpoint(folded, tmp_path / "x.ckpt")
    plain = random_network(cfg, ["a", "b"], "cpu", fold=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.model.modules())
    save_checkpoint(plain, tmp_path / "x.ckpt")

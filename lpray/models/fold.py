"""BatchNorm folded into the convolution before it, for inference.

In eval mode a BatchNorm is a per-channel affine map of its input, so ``bn(conv(x))`` equals one
convolution with scaled weights and a bias. Folding removes every BatchNorm pass over the
activations (a read and a write of each feature map, memory-bound work beside the tensor-core
convolutions); the outputs change by float rounding only. Training never folds: its BatchNorms
update their statistics.
"""

from __future__ import annotations

import torch
from torch import nn


def _pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) child names of ``parent`` whose forward applies the bn straight to the conv's
    output: consecutive children of a ``Sequential``, and ``convN`` / ``bnN`` attribute pairs
    (the torchvision ResNet block convention lpray's trunks follow, :mod:`lpray.models.resnet`)."""
    names = list(parent._modules)
    if isinstance(parent, nn.Sequential):
        return list(zip(names, names[1:]))
    return [(n, "bn" + n[4:]) for n in names if n.startswith("conv") and "bn" + n[4:] in names]


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # in float64 so the folded weights are the exact map rounded once
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into it, in place.

    Args:
        model: a network in eval mode (a BatchNorm in training mode is left alone).

    Returns:
        How many BatchNorms were folded (each is replaced by ``nn.Identity``).
    """
    folded = 0
    for parent in list(model.modules()):
        for conv_name, bn_name in _pairs(parent):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if (
                isinstance(conv, nn.Conv2d)
                and type(bn) is nn.BatchNorm2d
                and not bn.training
                and bn.track_running_stats
                and bn.affine
            ):
                _fold(conv, bn)
                parent._modules[bn_name] = nn.Identity()
                folded += 1
    return folded

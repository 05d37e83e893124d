"""Ensemble members made in seconds: random networks with sharpened heads, saved as model
directories that ``lpray predict`` / ``lpray track`` load like trained ones.

The heatmap head is initialised near zero (as in training), which gives near-flat maps and
keypoints at the frame centre whatever the input: useless for telling predictions apart. A
larger random head makes every frame's maps peaked and input-dependent, and random temporal
weights make the context model use its neighbours (they start at the centre frame alone), so
comparisons between prediction paths really compare something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lpray.config import config_from_dict, save_config
from lpray.inference.network import random_network, save_checkpoint
from lpray.io.layout import ModelDir


def make_member(
    model_dir: Path,
    seed: int,
    keypoint_names: list[str],
    image_size: tuple[int, int] = (64, 64),
    model_type: str = "heatmap",
    view_groups: list[list[str]] | None = None,
) -> Path:
    """A model directory (config.yaml + checkpoints/best.ckpt) of a random network."""
    values: dict[str, Any] = {
        "data": {"image_size": list(image_size)},
        "model": {"backbone": "resnet18", "model_type": model_type},
    }
    if view_groups is not None:
        values["data"]["view_groups"] = view_groups
    cfg = config_from_dict(values)
    torch.manual_seed(seed)
    network = random_network(cfg, keypoint_names, "cpu", fold=False)
    with torch.no_grad():
        for name, param in network.model.named_parameters():
            if "head" in name and name.endswith("weight"):
                param.normal_(0.0, 0.05)
            if name == "temporal_weights":  # initialised to the centre frame: mix neighbours in
                param.copy_(torch.softmax(torch.randn_like(param), dim=-1))
        for module in network.model.modules():
            # trained-looking BatchNorm statistics, so folding them for inference is exercised
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    paths = ModelDir(model_dir)
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    save_config(cfg, paths.config)
    save_checkpoint(network, paths.best_checkpoint)
    return model_dir


def make_ensemble(folder: Path, members: int, keypoint_names: list[str], **kwargs: Any) -> Path:
    """``folder/member-<k>`` for k < ``members`` (an ensemble folder without a manifest)."""
    for k in range(members):
        make_member(folder / f"member-{k}", seed=k, keypoint_names=keypoint_names, **kwargs)
    return folder

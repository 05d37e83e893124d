"""``"module:attribute"`` import paths, which lpray's registries use to name their builders.

A registry that names its builders by import path lists its names without importing them: the
video readers' producers, the backbones' trunk builders and the model types' classes (torch,
DALI, timm) load only when one is used, so the CLI and the config check stay light.
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(path: str) -> Any:
    """The attribute ``path`` names (``"lpray.models.trunks:timm_trunk"``), imported now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)

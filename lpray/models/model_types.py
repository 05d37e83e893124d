"""Model-type registry: ``model.model_type`` name -> its network class, named by import path.

Names only, no torch (the config check takes its names from here, and the ``lpray track``
driver checks configs without importing torch: ``tests/test_imports.py``); the class is imported
when a network is built (:func:`lpray.models.heatmap.build_model`). Add a type with its
``nn.Module`` (with ``context``, ``labeled_heads``, ``sequence_heads``, ``forward_sequence``)
and one entry here; ``tests/test_registries.py`` builds every type.
"""

from __future__ import annotations

from lpray.importpath import resolve

MODEL_TYPES = {
    "heatmap": "lpray.models.heatmap:HeatmapModel",
    "context": "lpray.models.heatmap:ContextModel",
}


def list_model_types() -> list[str]:
    """Every ``model.model_type`` name."""
    return list(MODEL_TYPES)


def model_class(name: str) -> type:
    """The network class of model type ``name``."""
    if name not in MODEL_TYPES:
        raise ValueError(f"unknown model type {name!r}; available: {list_model_types()}")
    return resolve(MODEL_TYPES[name])

"""lpray: Lightning Pose-style semi-supervised pose estimation, run at cluster scale on Ray.

Data flows through the subpackages in this order:
``data`` (labeled frames, videos, synthetic set) -> ``models`` / ``losses`` -> ``train``
-> ``tune`` / ``ensemble`` -> ``track`` / ``smooth`` -> ``io`` (tables, storage) -> ``report``.
"""

__version__ = "0.1.0"

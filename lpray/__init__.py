"""lpray: Lightning Pose-style semi-supervised pose estimation, run at cluster scale on Ray.

Data flows through the subpackages in this order, and imports follow it, never back up it:
``data`` (labeled frames, videos, synthetic set) -> ``models`` / ``losses`` -> ``inference``
(a network's predictions; training scores its model with them) -> ``train`` -> ``tune`` /
``ensemble`` -> ``track`` / ``smooth`` -> ``select`` / ``report`` -> ``pipeline`` / ``commands``.
Below all of them: ``io`` (tables, formats, storage), ``viz`` (figures, keypoint overlays),
``raywork`` (the Ray runtime) and the small modules ``config``, ``options``, ``errors`` and
``metrics``. ``tests/test_imports.py`` checks that no import closes a circle.
"""

__version__ = "0.1.0"

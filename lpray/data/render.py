"""Anti-aliased drawing of simple shapes into batches of greyscale frames, with numpy.

Every shape is a signed distance field evaluated on pixel centres (the centre of column ``j``
is ``x = j``, of row ``i`` is ``y = i``, the convention of the whole project) and turned into a
coverage ``alpha = clip(0.5 - d, 0, 1)``, which anti-aliases edges to about one pixel. Shapes are
small, so each one is evaluated only in a square patch around it, for all frames of a batch at
once; that keeps rendering at about a thousand frames per second or more on one core.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

# A signed distance field: pixel x of shape (B, 1, P), pixel y of shape (B, P, 1) -> (B, P, P).
Field = Callable[[np.ndarray, np.ndarray], np.ndarray]
Shade = float | Callable[[np.ndarray, np.ndarray], np.ndarray]


def col(values: ArrayLike) -> np.ndarray:
    """Per-frame scalars as a (B, 1, 1) column, so they broadcast over a (B, P, P) patch."""
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


def ellipse(cx: ArrayLike, cy: ArrayLike, a: ArrayLike, b: ArrayLike, angle: ArrayLike) -> Field:
    """Approximate signed distance to a rotated ellipse (semi-axes ``a`` along ``angle``, ``b``).

    Uses the first-order approximation ``f / |grad f|`` of the implicit function, which is exact
    on the boundary, where anti-aliasing needs it.
    """
    cx, cy, a, b = col(cx), col(cy), col(a), col(b)
    cos, sin = col(np.cos(angle)), col(np.sin(angle))

    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx, dy = x - cx, y - cy
        u = dx * cos + dy * sin
        v = dy * cos - dx * sin
        k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    return field


def disk(cx: ArrayLike, cy: ArrayLike, r: ArrayLike) -> Field:
    """Exact signed distance to a disk."""
    cx, cy, r = col(cx), col(cy), col(r)

    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r

    return field


def capsule(
    x0: ArrayLike, y0: ArrayLike, x1: ArrayLike, y1: ArrayLike, r0: ArrayLike, r1: ArrayLike
) -> Field:
    """Signed distance (approximate when tapered) to a segment thickened from ``r0`` to ``r1``."""
    x0, y0, r0, r1 = col(x0), col(y0), col(r0), col(r1)
    bx, by = col(x1) - x0, col(y1) - y0
    inv = 1.0 / np.maximum(bx * bx + by * by, 1e-6)

    def field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        px, py = x - x0, y - y0
        h = np.clip((px * bx + py * by) * inv, 0.0, 1.0)
        return np.sqrt((px - bx * h) ** 2 + (py - by * h) ** 2) - (r0 + (r1 - r0) * h)

    return field


def stamp(
    canvas: np.ndarray, centers: np.ndarray, reach: float, field: Field, shade: Shade
) -> None:
    """Composite one shape per frame into ``canvas`` (B, H, W) in place, over what is there.

    Args:
        canvas: float32 frames, modified in place.
        centers: (B, 2) x, y of each frame's patch centre (any point of the shape will do).
        reach: distance from ``centers`` beyond which the shape is surely empty, in pixels.
        field: the shape's signed distance field.
        shade: the shape's grey level, or a function of pixel x, y giving it.
    """
    n, height, width = canvas.shape
    size = min(2 * int(np.ceil(reach)) + 3, height, width)
    # Patches are clipped into the canvas; the field still uses true coordinates, so a shape
    # partly outside the frame is drawn exactly where it overlaps the frame.
    ox = np.clip(np.floor(centers[:, 0]).astype(np.int64) - size // 2, 0, width - size)
    oy = np.clip(np.floor(centers[:, 1]).astype(np.int64) - size // 2, 0, height - size)
    steps = np.arange(size)
    cols = ox[:, None] + steps
    rows = oy[:, None] + steps
    x = cols.astype(np.float32)[:, None, :]
    y = rows.astype(np.float32)[:, :, None]
    alpha = np.clip(0.5 - field(x, y), 0.0, 1.0)
    value = shade(x, y) if callable(shade) else np.float32(shade)
    index = (np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :])
    patch = canvas[index]
    canvas[index] = patch + alpha * (value - patch)


def vertical_bar(canvas: np.ndarray, cx: np.ndarray, half_width: float, shade: float) -> None:
    """Composite a full-height vertical bar centred at column ``cx`` (B,) into ``canvas``."""
    n, height, width = canvas.shape
    size = min(int(np.ceil(2 * half_width)) + 3, width)
    ox = np.clip(np.floor(cx).astype(np.int64) - size // 2, 0, width - size)
    cols = ox[:, None] + np.arange(size)
    alpha = np.clip(0.5 - (np.abs(cols - cx[:, None]) - half_width), 0.0, 1.0)[:, None, :]
    index = (np.arange(n)[:, None, None], np.arange(height)[None, :, None], cols[:, None, :])
    patch = canvas[index]
    canvas[index] = patch + alpha.astype(np.float32) * (np.float32(shade) - patch)


def texture(
    rng: np.random.Generator, height: int, width: int, scales=(2.0, 6.0, 16.0)
) -> np.ndarray:
    """Smooth random texture of unit standard deviation: blurred noise summed over a few scales."""
    out = np.zeros((height, width), dtype=np.float64)
    for sigma in scales:
        layer = ndimage.gaussian_filter(rng.standard_normal((height, width)), sigma, mode="wrap")
        out += layer / max(float(layer.std()), 1e-12)
    return (out / out.std()).astype(np.float32)

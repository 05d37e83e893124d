"""Soft-argmax cost: bicubic x4 upsampling by ``F.interpolate`` vs lpray's two matmuls.

The soft-argmax upsamples every heatmap x4 before its spatial softmax; in training it runs with
its gradient on every unlabeled frame of every step, in prediction on every frame. Both
upsamplings compute the same numbers (tests/models/test_coordinates.py); this times them side by side,
forward only (prediction, 128 frames) and forward + backward (a training step's 16 unlabeled
frames), 17 keypoints on 64x64 heatmaps (256x256 input), medians of repeats.

    python bench/softargmax.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, write_json  # noqa: E402

from lpray.models import coordinates  # noqa: E402


def interpolate_upsample(heatmaps: torch.Tensor, factor: int) -> torch.Tensor:
    h, w = heatmaps.shape[-2:]
    size = ((h - 1) * factor + 1, (w - 1) * factor + 1)
    return F.interpolate(heatmaps, size=size, mode="bicubic", align_corners=True)


def time_soft_argmax(frames: int, backward: bool, device: torch.device, repeats: int) -> float:
    """Median milliseconds of one soft-argmax call (with its backward when asked)."""
    heatmaps = torch.randn(frames, 17, 64, 64, device=device, requires_grad=backward)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats + 3):  # 3 warm-up calls
        sync()
        started = time.perf_counter()
        xy, _ = coordinates.soft_argmax(heatmaps, 100.0)
        if backward:
            xy.sum().backward()
        sync()
        times.append(1000 * (time.perf_counter() - started))
    return median(times[3:])


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats = 20 if device.type == "cuda" else 3
    rows = []
    for label, frames, backward in (
        ("predict, 128 frames", 128, False),
        ("train, 16 frames fwd+bwd", 16, True),
    ):
        matmul_ms = time_soft_argmax(frames, backward, device, repeats)
        original = coordinates._upsample
        coordinates._upsample = interpolate_upsample
        try:
            interpolate_ms = time_soft_argmax(frames, backward, device, repeats)
        finally:
            coordinates._upsample = original
        rows.append(
            {
                "case": label,
                "interpolate_ms": interpolate_ms,
                "matmul_ms": matmul_ms,
                "speedup": interpolate_ms / matmul_ms,
            }
        )
        print(rows[-1], flush=True)
    print(f"device: {device}; soft_argmax of (N, 17, 64, 64) at x4, float32, median of {repeats}")
    print_table(rows, ["case", "interpolate_ms", "matmul_ms", "speedup"])
    write_json(f"softargmax_{device.type}", {"rows": rows})


if __name__ == "__main__":
    main()

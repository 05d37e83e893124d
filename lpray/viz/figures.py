"""Matplotlib figures drawn by more than one layer: the shared PNG writer and the
labels-vs-predictions grid written after training (train -> inference) and shown in reports.

Below train, inference, tune and report, so each of them can draw without importing a layer above
it (the report's own figures stay in :mod:`lpray.report.figures`). Importing this module imports
matplotlib with the headless Agg backend, which is why callers on hot paths import it lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

if TYPE_CHECKING:
    from lpray.inference.labeled import LabeledResult


def save_figure(fig: plt.Figure, path: str | Path) -> None:
    """Save atomically (PNG) and close."""
    import io

    from lpray.io.storage import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def labels_vs_predictions(result: LabeledResult, path: str | Path, n_frames: int = 8) -> None:
    """A grid of labeled frames: labels (green circles), predictions (red crosses), error lines."""
    frames = result.frames
    count = min(n_frames, len(frames))
    chosen = np.linspace(0, len(frames) - 1, count).astype(int) if count else []
    cols = min(4, max(count, 1))
    rows = int(np.ceil(count / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        image = np.asarray(Image.open(frames.root / frames.image_paths[i]).convert("L"))
        ax.imshow(image, cmap="gray")
        truth, pred = frames.keypoints[i], result.predicted[i]
        for t, p in zip(truth, pred):
            if np.isfinite(t).all():
                ax.plot([t[0], p[0]], [t[1], p[1]], color="yellow", lw=0.8)
        ax.scatter(truth[:, 0], truth[:, 1], s=18, facecolors="none", edgecolors="lime", lw=1.0)
        ax.scatter(pred[:, 0], pred[:, 1], s=18, c="red", marker="x", lw=1.0)
        err = np.nanmean(result.errors[i]) if np.isfinite(result.errors[i]).any() else float("nan")
        ax.set_title(f"{Path(frames.image_paths[i]).name}\nmean error {err:.1f} px", fontsize=8)
    fig.suptitle("labels (green) vs predictions (red)", fontsize=10)
    save_figure(fig, path)

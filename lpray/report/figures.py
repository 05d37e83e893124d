"""PNG figures people look at instead of reading tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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


def _error_bars(
    labels: list[str], values: list[float], colors: list[str], title: str, path: str | Path
) -> None:
    """One bar per label with its value written on it (px)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.4))
    bars = ax.bar(range(len(labels)), values, color=colors)
    for bar, value in zip(bars, values):
        if np.isfinite(value):
            ax.annotate(
                f"{value:.2f}",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("error vs truth, unseen video (px)")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    save_figure(fig, path)


def trial_error_plot(trials: pd.DataFrame, path: str | Path) -> None:
    """Each sweep trial's truth error: the supervised baseline grey, semi-supervised blue.

    ``trials`` needs ``trial_id``, ``video_error_px`` and ``setting``; each bar is labelled with
    the trial's non-zero unsupervised weights.
    """
    rows = trials.sort_values("video_error_px", na_position="last")
    labels, colors = [], []
    for _, row in rows.iterrows():
        supervised = str(row.get("setting", "")).startswith("supervised")
        weights = [
            f"{name.split('.')[1]} {row[name]:.0e}"
            for name in rows.columns
            if name.startswith("losses.") and name.endswith(".weight") and row[name]
        ]
        labels.append(f"{row['trial_id']}\n" + ("supervised" if supervised else ", ".join(weights)))
        colors.append("0.6" if supervised else "tab:blue")
    _error_bars(
        labels,
        [float(v) for v in rows["video_error_px"]],
        colors,
        "sweep trials: supervised (grey) vs semi-supervised (blue)",
        path,
    )


def ensemble_error_plot(comparison: pd.DataFrame, path: str | Path) -> None:
    """Members, their median and EKS against the truth (``video_error_px`` by row name)."""
    names = [str(n) for n in comparison.index]
    colors = [
        "tab:green" if n == "EKS" else "0.45" if n == "member median" else "0.7" for n in names
    ]
    _error_bars(
        names,
        [float(v) for v in comparison["video_error_px"]],
        colors,
        "ensemble members, their median and EKS",
        path,
    )

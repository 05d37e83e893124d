"""The report's PNG figures: sweep trials and ensemble members against the truth.

The PNG writer and the figures other layers draw are in :mod:`lpray.viz.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lpray.viz.figures import plt, save_figure


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

"""The sweep figures: what the labels buy, what each loss weight does, how trials learned.

Each function takes the tidy tables of :mod:`lpray.tune.results` and writes one PNG (through
:func:`lpray.viz.figures.save_figure`, atomically). Trials without a metric yet are left out,
so the figures can be drawn for a sweep that is still running.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lpray.tune.space import LABEL_KEY, SweepSpec
from lpray.viz.figures import plt, save_figure


def plot_error_vs_labels(trials: pd.DataFrame, metric: str, mode: str, path: str) -> None:
    """Metric vs labeled-frame count, one colour per loss setting: every trial as a dot, the best
    trial of each count joined by a line (Lightning Pose's "what do unlabeled videos buy" plot)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    scored = _scored(trials, metric)
    for i, (setting, group) in enumerate(scored.groupby("loss_setting", sort=True)):
        colour = f"C{i}"
        ax.scatter(group["n_train_frames"], group[f"best_{metric}"], color=colour, alpha=0.35, s=18)
        pick = group.groupby("n_train_frames")[f"best_{metric}"]
        best = pick.min() if mode == "min" else pick.max()
        ax.plot(best.index, best.values, "o-", color=colour, label=setting)
    if scored["n_train_frames"].nunique() > 1:
        ax.set_xscale("log", base=2)
    counts = sorted(scored["n_train_frames"].unique())
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("labeled training frames")
    ax.set_ylabel(f"best {metric}")
    ax.set_title("error vs labeled frames (dots: trials, line: best per count)", fontsize=10)
    _legend_or_note(ax, scored)
    save_figure(fig, path)


def plot_error_vs_params(trials: pd.DataFrame, spec: SweepSpec, metric: str, path: str) -> None:
    """Metric vs each numeric swept parameter (log x for weights), coloured by label count."""
    params = [p for p in spec.params if p.key != LABEL_KEY and _numeric(p.candidates())]
    scored = _scored(trials, metric)
    cols = max(1, min(3, len(params)))
    rows = max(1, int(np.ceil(len(params) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(params) :]:
        ax.axis("off")
    labels = _label_order(scored)
    for ax, param in zip(axes.flat, params):
        for i, label in enumerate(labels):
            group = scored[scored["label"] == label]
            n = group["n_train_frames"].iloc[0]
            ax.scatter(group[param.key], group[f"best_{metric}"], color=f"C{i}", s=20, label=f"{n}")
        _x_scale(ax, param.kind, scored[param.key] if len(scored) else pd.Series(dtype=float))
        ax.set_xlabel(param.key)
        ax.set_ylabel(f"best {metric}")
        _legend_or_note(ax, scored, title="labeled frames")
    if not params:
        axes[0, 0].text(0.5, 0.5, "no numeric parameter swept", ha="center", va="center")
    save_figure(fig, path)


def plot_learning_curves(
    trials: pd.DataFrame, epochs: pd.DataFrame, metric: str, path: str
) -> None:
    """Metric per epoch for every trial, one panel per label count; early-stopped trials dashed."""
    scored = _scored(trials, metric)
    labels = _label_order(scored)
    cols = max(1, min(3, len(labels)))
    rows = max(1, int(np.ceil(len(labels) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(labels) :]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels):
        group = scored[scored["label"] == label]
        for _, trial in group.iterrows():
            curve = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
            style = "--" if trial["status"] == "stopped" else "-"
            ax.plot(curve["epoch"] + 1, curve[metric], style, lw=1.0, alpha=0.8)
        ax.set_title(f"{group['n_train_frames'].iloc[0]} labeled frames", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
    if not labels:
        axes[0, 0].text(0.5, 0.5, "no trial has reported yet", ha="center", va="center")
    save_figure(fig, path)


def _scored(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    column = f"best_{metric}"
    if trials.empty or column not in trials:
        return pd.DataFrame(columns=["label", "n_train_frames", "loss_setting", column])
    return trials[trials[column].notna()]


def _label_order(scored: pd.DataFrame) -> list[str]:
    order = scored.drop_duplicates("label").sort_values("n_train_frames", kind="stable")
    return list(order["label"])


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _x_scale(ax: Any, kind: str, values: pd.Series) -> None:
    """Log x for log-uniform parameters and for values spanning 10x or more; symlog with zeros."""
    positive = values[values > 0]
    if positive.empty:
        return
    spans = positive.max() / positive.min() >= 10
    if kind != "loguniform" and not spans:
        return
    if (values <= 0).any():
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    else:
        ax.set_xscale("log")


def _legend_or_note(ax: Any, scored: pd.DataFrame, title: str | None = None) -> None:
    if scored.empty:
        ax.text(
            0.5, 0.5, "no trial has reported yet", ha="center", va="center", transform=ax.transAxes
        )
    else:
        ax.legend(fontsize=8, title=title, title_fontsize=8)

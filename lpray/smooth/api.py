"""Public EKS entry points: ensemble member tables in, smoothed pose table out.

The output table has the reference package's layout (scorer ``ensemble-kalman_tracker``; per
keypoint x, y, likelihood, x_ens_median, y_ens_median, x_ens_var, y_ens_var, x_posterior_var,
y_posterior_var) so that tools reading the reference's CSVs read lpray's.

A keypoint that no member predicted in any frame cannot be smoothed; rather than failing a whole
corpus run for one empty keypoint, its outputs are NaN and a :class:`UserWarning` names it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lpray.io.tables import arrays_to_table
from lpray.smooth.ensemble import EnsembleStats, ensemble_stats
from lpray.smooth.fit import FrameWindows, frame_selection
from lpray.smooth.members import majority_keypoints, stack_members
from lpray.smooth.multiview import smooth_multiview
from lpray.smooth.singleview import Smoothed, smooth_single_view

SCORER = "ensemble-kalman_tracker"
SmoothParam = float | dict[str, float] | None


def _per_keypoint_param(smooth_param: SmoothParam, names: Sequence[str]) -> np.ndarray:
    """``(K,)`` s per keypoint, NaN where it is to be fitted; checks the user's values."""
    if smooth_param is None:
        return np.full(len(names), np.nan)
    if isinstance(smooth_param, dict):
        unknown = sorted(set(smooth_param) - set(names))
        if unknown:
            raise ValueError(f"smooth_param names unknown keypoint(s) {unknown}; have {names}")
        values = np.array([smooth_param.get(n, np.nan) for n in names], dtype=float)
        given = ~np.isnan(values)
    else:
        values = np.full(len(names), float(smooth_param))
        given = np.ones(len(names), dtype=bool)
    if np.any(~np.isfinite(values[given]) | (values[given] <= 0)):
        raise ValueError(f"smoothing parameters must be finite and positive, got {smooth_param}")
    return values


def _output_table(
    stats: EnsembleStats, smoothed: Smoothed, names: list[str], index: pd.Index
) -> pd.DataFrame:
    """The smoothed pose table in the reference's column layout."""
    extra = {
        "x_ens_median": stats.centre[..., 0],
        "y_ens_median": stats.centre[..., 1],
        "x_ens_var": stats.variance[..., 0],
        "y_ens_var": stats.variance[..., 1],
        "x_posterior_var": smoothed.variance[..., 0],
        "y_posterior_var": smoothed.variance[..., 1],
    }
    return arrays_to_table(
        smoothed.mean, names, stats.likelihood, index=index, scorer=SCORER, extra=extra
    )


def _warn_unobserved(smoothed: Smoothed, names: Sequence[str]) -> None:
    empty = [n for n, dead in zip(names, smoothed.unobserved) if dead]
    if empty:
        warnings.warn(
            f"keypoint(s) {empty} not predicted by any member in any usable frame: "
            "their smoothed outputs are NaN",
            UserWarning,
            stacklevel=3,
        )


def _fit_frames(n_frames: int, fit_frames: FrameWindows | None) -> np.ndarray | None:
    return None if not fit_frames else frame_selection(n_frames, fit_frames)


def smooth_ensemble(
    tables: list[pd.DataFrame],
    smooth_param: SmoothParam = None,
    keypoints: list[str] | None = None,
    *,
    fit_frames: FrameWindows | None = None,
    sources: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Smooth one video's ensemble predictions with the single-view EKS.

    Args:
        tables: one pose table per ensemble member (x, y, likelihood per keypoint, same frames).
        smooth_param: s for every keypoint (float), for some keypoints (dict; the others are
            fitted), or None to fit every keypoint's s by maximum likelihood. Smaller s smooths
            more.
        keypoints: the keypoints to smooth (default those most members have).
        fit_frames: ``(start, end)`` half-open frame windows the parameter search uses (default
            all frames; smoothing always covers every frame).
        sources: names of the members for error messages (e.g. file paths).

    Returns:
        ``(table, params)``: the smoothed pose table and the s used per keypoint (NaN for a
        keypoint no member ever predicted).
    """
    members = stack_members(tables, keypoints, sources)
    stats = ensemble_stats(members.xy, members.likelihood)
    smoothed = smooth_single_view(
        stats,
        _per_keypoint_param(smooth_param, members.keypoints),
        _fit_frames(len(members.index), fit_frames),
    )
    _warn_unobserved(smoothed, members.keypoints)
    table = _output_table(stats, smoothed, members.keypoints, members.index)
    return table, dict(zip(members.keypoints, map(float, smoothed.smooth_param)))


def _group_indices(view_groups: list[list[str]], names: list[str]) -> list[list[int]]:
    """Keypoint indices per body part; each group needs >= 2 known, distinct keypoints."""
    seen: set[str] = set()
    groups = []
    for group in view_groups:
        unknown = [k for k in group if k not in names]
        if unknown:
            raise ValueError(f"view group {group} names unknown keypoint(s) {unknown}")
        if len(group) < 2:
            raise ValueError(f"view group {group} needs at least two views of the body part")
        if seen & set(group) or len(set(group)) != len(group):
            raise ValueError(f"keypoint(s) of {group} appear in more than one view group")
        seen |= set(group)
        groups.append([names.index(k) for k in group])
    return groups


def view_groups_by_suffix(keypoints: Sequence[str], views: Sequence[str]) -> list[list[str]]:
    """Group mirror-style keypoints ``<part>_<view>`` by body part.

    Args:
        keypoints: keypoint names (repeats are ignored).
        views: view suffixes, e.g. ``["top", "bot"]``.

    Returns:
        ``[[part_top, part_bot], ...]`` for every part present in all views, in the order the
        parts first appear. Parts missing a view are left out (smoothed one view at a time).

    Raises:
        ValueError: fewer than two views, or no body part present in all of them.
    """
    if len(views) < 2 or len(set(views)) != len(views):
        raise ValueError(f"multi-view EKS needs at least two distinct views, got {list(views)}")
    names = list(dict.fromkeys(keypoints))
    parts = []
    for name in names:
        for view in views:
            if name.endswith(f"_{view}"):
                parts.append(name[: -len(view) - 1])
    groups = [
        [f"{part}_{view}" for view in views]
        for part in dict.fromkeys(parts)
        if all(f"{part}_{view}" in names for view in views)
    ]
    if not groups:
        raise ValueError(f"no keypoint is named <part>_<view> for every view {list(views)}")
    return groups


def _per_group_param(per_keypoint: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """One s per body part from per-keypoint values; the views of a body part must agree."""
    out = np.full(len(groups), np.nan)
    for g, members in enumerate(groups):
        given = {float(v) for v in per_keypoint[members] if not np.isnan(v)}
        if len(given) > 1:
            raise ValueError(f"views of one body part were given different s: {sorted(given)}")
        out[g] = given.pop() if given else np.nan
    return out


def _fill_single_view(
    smoothed: Smoothed,
    stats: EnsembleStats,
    keypoints: list[int],
    smooth_param: np.ndarray,
    frames: np.ndarray | None,
) -> Smoothed:
    """Smooth keypoints that belong to no view group with the single-view EKS, in place."""
    subset = EnsembleStats(
        centre=stats.centre[:, keypoints],
        variance=stats.variance[:, keypoints],
        likelihood=stats.likelihood[:, keypoints],
    )
    single = smooth_single_view(subset, smooth_param, frames)
    smoothed.mean[:, keypoints] = single.mean
    smoothed.variance[:, keypoints] = single.variance
    smoothed.smooth_param[keypoints] = single.smooth_param
    smoothed.unobserved[keypoints] = single.unobserved
    return smoothed


def smooth_ensemble_multiview(
    tables: list[pd.DataFrame],
    view_groups: list[list[str]],
    smooth_param: SmoothParam = None,
    *,
    fit_frames: FrameWindows | None = None,
    sources: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Smooth mirror-style ensemble predictions with the multi-view EKS.

    Args:
        tables: one pose table per ensemble member.
        view_groups: per body part, its keypoint in each view, e.g.
            ``[["paw1LH_top", "paw1LH_bot"], ["paw2LF_top", "paw2LF_bot"]]``. Keypoints in no
            group (an obstacle marker, say) are smoothed by the single-view EKS.
        smooth_param: as for :func:`smooth_ensemble`; a dict may name any view of a body part
            (views of one body part share s and must not be given different values).
        fit_frames: frame windows for the parameter search.
        sources: names of the members for error messages.

    Returns:
        ``(table, params)``: every keypoint most members have, in their column order, in the
        single-view output layout; and s per keypoint (a body part's s on each of its views).
    """
    names = majority_keypoints(tables) if len(tables) else []
    members = stack_members(tables, names, sources)
    groups = _group_indices(view_groups, members.keypoints)
    stats = ensemble_stats(members.xy, members.likelihood)
    per_keypoint = _per_keypoint_param(smooth_param, members.keypoints)
    frames = _fit_frames(len(members.index), fit_frames)
    smoothed = smooth_multiview(stats, groups, _per_group_param(per_keypoint, groups), frames)
    alone = sorted(set(range(len(names))) - {k for g in groups for k in g})
    if alone:
        smoothed = _fill_single_view(smoothed, stats, alone, per_keypoint[alone], frames)
    _warn_unobserved(smoothed, members.keypoints)
    table = _output_table(stats, smoothed, members.keypoints, members.index)
    return table, dict(zip(members.keypoints, map(float, smoothed.smooth_param)))

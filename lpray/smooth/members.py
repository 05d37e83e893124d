"""Ensemble members: the K prediction tables of one video, checked and stacked into arrays.

The smoother works on arrays; users hand it tables (or files). Everything that can be wrong with a
set of members (different keypoints, different frame counts, no likelihoods) is caught here, with
the offending member named, so the numerical code never sees inconsistent input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lpray.io.tables import keypoint_names


@dataclass(frozen=True)
class Members:
    """Stacked predictions of an ensemble.

    Attributes:
        xy: ``(M, T, K, 2)`` member coordinates, NaN where a member has no prediction.
        likelihood: ``(M, T, K)`` member confidences.
        keypoints: the K keypoint names, in column order.
        index: the frame index of the first member (the output table reuses it).
    """

    xy: np.ndarray
    likelihood: np.ndarray
    keypoints: list[str]
    index: pd.Index


def _member_arrays(
    table: pd.DataFrame, names: list[str], source: str
) -> tuple[np.ndarray, np.ndarray]:
    """One member's ``(T, K, 2)`` coordinates and ``(T, K)`` likelihoods, by column name."""
    positions: dict[tuple[str, str], int] = {}
    for i, (_, part, coord) in enumerate(table.columns):
        positions.setdefault((str(part), str(coord)), i)
    wanted = ("x", "y", "likelihood")
    for name in names:
        for coord in wanted:
            if (name, coord) not in positions:
                raise ValueError(f"{source}: keypoint {name!r} has no {coord!r} column")
    order = [positions[(name, coord)] for name in names for coord in wanted]
    try:
        values = table.iloc[:, order].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: non-numeric prediction values ({err})") from err
    picked = values.reshape(len(table), len(names), len(wanted))
    return picked[..., :2], picked[..., 2]


def _check_shapes(
    tables: Sequence[pd.DataFrame], keypoints: list[str], sources: Sequence[str]
) -> None:
    """Raise naming the first member whose keypoints or frame count differ from member 0's."""
    n_frames = len(tables[0])
    for table, source in zip(tables, sources):
        missing = [k for k in keypoints if k not in set(keypoint_names(table))]
        if missing:
            raise ValueError(f"{source}: missing keypoint(s) {missing} that other members have")
        if len(table) != n_frames:
            raise ValueError(
                f"{source}: {len(table)} frames, but {sources[0]} has {n_frames}; "
                "ensemble members must cover the same frames"
            )


def stack_members(
    tables: Sequence[pd.DataFrame],
    keypoints: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
) -> Members:
    """Check ensemble members against each other and stack them.

    Args:
        tables: one pose table per member (3-level ``scorer/bodyparts/coords`` columns) with x, y
            and likelihood per keypoint.
        keypoints: the keypoints to keep; default all of the first member's, in its order.
        sources: a name per member for error messages (file paths in the CLI).

    Returns:
        The stacked :class:`Members`.

    Raises:
        ValueError: no members, a member lacks a keypoint or a coordinate the others have, or
            members differ in frame count. The message names the member.
    """
    if not len(tables):
        raise ValueError("EKS needs at least one ensemble member, got none")
    sources = list(sources) if sources is not None else [f"member {i}" for i in range(len(tables))]
    if len(sources) != len(tables):
        raise ValueError(f"{len(sources)} source names for {len(tables)} members")
    names = list(keypoints) if keypoints is not None else keypoint_names(tables[0])
    if not names:
        raise ValueError(f"{sources[0]}: no keypoints to smooth")
    if len(set(names)) != len(names):
        raise ValueError(f"keypoints listed twice: {names}")
    _check_shapes(tables, names, sources)
    arrays = [_member_arrays(t, names, s) for t, s in zip(tables, sources)]
    xy = np.stack([a[0] for a in arrays])
    likelihood = np.stack([a[1] for a in arrays])
    return Members(xy=xy, likelihood=likelihood, keypoints=names, index=tables[0].index)

"""Ensemble members: the K prediction tables of one video, checked and stacked into arrays.

The smoother works on arrays; users hand it tables (or files). Everything that can be wrong with a
set of members (different keypoints, different frame counts, no likelihoods) is caught here, with
the offending member named, so the numerical code never sees inconsistent input. Members are
compared with the majority, not with the first one, so the member that differs is the one named,
wherever it comes in the list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lpray.errors import UserError
from lpray.io.tables import keypoint_names


class MemberError(UserError, ValueError):
    """Ensemble members that cannot be smoothed together; the message names the member."""


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
                raise MemberError(f"{source}: keypoint {name!r} has no {coord!r} column")
    order = [positions[(name, coord)] for name in names for coord in wanted]
    try:
        values = table.iloc[:, order].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise MemberError(f"{source}: non-numeric prediction values ({err})") from err
    picked = values.reshape(len(table), len(names), len(wanted))
    return picked[..., :2], picked[..., 2]


def majority_keypoints(tables: Sequence[pd.DataFrame]) -> list[str]:
    """The keypoint list most members have (ties: the earliest member's)."""
    lists = [tuple(keypoint_names(t)) for t in tables]
    counts = Counter(lists)
    best = max(counts.values())
    return list(next(k for k in lists if counts[k] == best))


def _check_shapes(
    tables: Sequence[pd.DataFrame], keypoints: list[str], sources: Sequence[str]
) -> None:
    """Raise naming the members whose keypoints or frame count differ from the majority's."""
    total = len(tables)
    lacking = {
        source: [k for k in keypoints if k not in set(keypoint_names(table))]
        for table, source in zip(tables, sources)
    }
    odd = {source: missing for source, missing in lacking.items() if missing}
    if odd:
        source, missing = next(iter(odd.items()))
        others = total - len(odd)
        more = f" (also: {', '.join(list(odd)[1:])})" if len(odd) > 1 else ""
        raise MemberError(
            f"{source}: missing keypoint(s) {missing} that {others} of the {total} members "
            f"have{more}; ensemble members must predict the same keypoints: predict it again "
            "with the same model config, or leave it out"
        )
    lengths = Counter(len(t) for t in tables)
    n_frames = max(lengths, key=lambda n: (lengths[n], -[len(t) for t in tables].index(n)))
    odd_frames = [(s, len(t)) for t, s in zip(tables, sources) if len(t) != n_frames]
    if odd_frames:
        source, length = odd_frames[0]
        more = f" (also: {', '.join(s for s, _ in odd_frames[1:])})" if len(odd_frames) > 1 else ""
        raise MemberError(
            f"{source}: {length} frames, but {lengths[n_frames]} of the {total} members have "
            f"{n_frames}{more}; ensemble members must cover the same frames of one video"
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
        keypoints: the keypoints to keep; default those most members have, in their order.
        sources: a name per member for error messages (file paths in the CLI).

    Returns:
        The stacked :class:`Members`.

    Raises:
        ValueError: no members, a member lacks a keypoint or a coordinate the others have, or
            members differ in frame count. The message names the member.
    """
    if not len(tables):
        raise MemberError("EKS needs at least one ensemble member, got none")
    sources = list(sources) if sources is not None else [f"member {i}" for i in range(len(tables))]
    if len(sources) != len(tables):
        raise MemberError(f"{len(sources)} source names for {len(tables)} members")
    names = list(keypoints) if keypoints is not None else majority_keypoints(tables)
    if not names:
        raise MemberError(f"{sources[0]}: no keypoints to smooth")
    if len(set(names)) != len(names):
        raise MemberError(f"keypoints listed twice: {names}")
    _check_shapes(tables, names, sources)
    arrays = [_member_arrays(t, names, s) for t, s in zip(tables, sources)]
    xy = np.stack([a[0] for a in arrays])
    likelihood = np.stack([a[1] for a in arrays])
    return Members(xy=xy, likelihood=likelihood, keypoints=names, index=tables[0].index)

"""Pose tables in the DLC / Lightning Pose layout.

A pose table is a :class:`pandas.DataFrame` whose columns are a 3-level MultiIndex
``(scorer, bodyparts, coords)`` and whose index is the image path (labels) or the frame number
(predictions). On disk it is a CSV with three header rows, which DeepLabCut, Lightning Pose and
EKS all read; large corpora also get a parquet copy (same columns, far faster to load).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lpray.errors import UserError
from lpray.io.storage import atomic_write, filesystem

HEADER_LEVELS = ("scorer", "bodyparts", "coords")


class PoseTableError(UserError, ValueError):
    """A pose table file that cannot be read as the 3-row-header layout."""


def read_pose_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a 3-row-header pose CSV; raise :class:`PoseTableError` naming the file on bad input."""
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        raise FileNotFoundError(f"{path}: pose table not found")
    with fs.open(inner, "rb") as handle:
        raw = handle.read()
    _check_header_rows(raw, path)
    try:
        table = pd.read_csv(io.BytesIO(raw), header=[0, 1, 2], index_col=0)
    except Exception as err:  # pandas raises many types for malformed files
        raise PoseTableError(f"{path}: not a 3-row-header pose CSV ({err})") from err
    names = [str(n).lower() if n is not None else "" for n in table.columns.names]
    first_cells = [str(c).lower() for c in table.columns.get_level_values(0)[:1]]
    if table.columns.nlevels != 3 or not len(table.columns):
        raise PoseTableError(f"{path}: expected 3 header rows (scorer, bodyparts, coords)")
    coords = set(table.columns.get_level_values(2))
    if not {"x", "y"} <= coords:
        # the file's own cells: pandas renames repeated header cells ("earL.1")
        third = _raw_rows(raw, 3)[2:3]
        got = sorted(set(third[0][1:])) if third else sorted(coords)
        raise PoseTableError(
            f"{path}: third header row must name coords x and y for every keypoint, got {got}"
        )
    if names[1:] != ["bodyparts", "coords"] and "scorer" in first_cells:
        raise PoseTableError(f"{path}: header rows are not scorer/bodyparts/coords")
    table.columns = table.columns.set_names(list(HEADER_LEVELS))
    for column in table.columns:
        try:
            table[column] = pd.to_numeric(table[column], errors="raise").astype(float)
        except (ValueError, TypeError) as err:
            numbers = pd.to_numeric(table[column], errors="coerce")
            bad = table.index[numbers.isna() & table[column].notna()]
            row = f" (row {bad[0]}: {table[column][bad[0]]!r})" if len(bad) else ""
            raise PoseTableError(
                f"{path}: column {column[1]}/{column[2]} holds non-numbers{row}; "
                "leave a missing keypoint's cells empty, write numbers in the others"
            ) from err
    return table


def _raw_rows(raw: bytes, n: int) -> list[list[str]]:
    """The first ``n`` rows of a CSV, cell by cell, as the file spells them."""
    import csv

    lines = raw.decode("utf-8", errors="replace").splitlines()[:n]
    return [row for row in csv.reader(lines)]


def _check_header_rows(raw: bytes, path: str | os.PathLike) -> None:
    """Refuse DeepLabCut's multi-animal layout (a 4th header row, ``individuals``) by name."""
    rows = _raw_rows(raw, 4)
    firsts = [row[0].strip().lower() if row else "" for row in rows]
    if "individuals" in firsts or (len(firsts) == 4 and firsts[3] == "coords"):
        animals = []
        if "individuals" in firsts:
            animals = list(dict.fromkeys(c for c in rows[firsts.index("individuals")][1:] if c))
        which = f" ({len(animals)} individuals: {', '.join(animals[:4])})" if animals else ""
        raise PoseTableError(
            f"{path}: a multi-animal DeepLabCut file (4 header rows: scorer, individuals, "
            f"bodyparts, coords){which}; lpray tracks one animal per file: keep one individual, "
            "or name each animal's body parts apart (mouse1_nose, mouse2_nose) in a 3-row header"
        )


def write_pose_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a pose table as a 3-row-header CSV, atomically."""
    with atomic_write(path, "w") as handle:
        table.to_csv(handle)


def write_pose_parquet(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a pose table as parquet (flat ``bodypart|coord`` columns, scorer in the metadata)."""
    flat = table.copy()
    scorer = str(table.columns.get_level_values(0)[0])
    flat.columns = [f"{part}|{coord}" for _, part, coord in table.columns]
    flat.index = flat.index.astype(str) if flat.index.dtype == object else flat.index
    flat.index.name = flat.index.name or "frame"
    flat.attrs = {}
    buffer = io.BytesIO()
    flat.to_parquet(buffer)
    import pyarrow.parquet as pq

    # Record the scorer so read_pose_parquet rebuilds the exact 3-level header.
    arrow = pq.read_table(io.BytesIO(buffer.getvalue()))
    meta = dict(arrow.schema.metadata or {})
    meta[b"lpray.scorer"] = scorer.encode()
    arrow = arrow.replace_schema_metadata(meta)
    out = io.BytesIO()
    pq.write_table(arrow, out)
    with atomic_write(path, "wb") as handle:
        handle.write(out.getvalue())


def read_pose_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_pose_parquet`."""
    import pyarrow.parquet as pq

    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as handle:
        arrow = pq.read_table(handle)
    scorer = (arrow.schema.metadata or {}).get(b"lpray.scorer", b"lpray").decode()
    flat = arrow.to_pandas()
    tuples = [(scorer, *name.split("|", 1)) for name in flat.columns]
    flat.columns = pd.MultiIndex.from_tuples(tuples, names=list(HEADER_LEVELS))
    return flat


def keypoint_names(table: pd.DataFrame) -> list[str]:
    """Keypoint names in column order, each once."""
    return list(dict.fromkeys(table.columns.get_level_values(1)))


def table_to_arrays(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Split a pose table into keypoints ``(T, K, 2)`` and likelihoods ``(T, K)`` (or None)."""
    names = keypoint_names(table)
    parts = table.columns.get_level_values(1)
    coords = table.columns.get_level_values(2)
    values = table.to_numpy(dtype=float)

    def column(name: str, coord: str) -> np.ndarray:
        mask = (parts == name) & (coords == coord)
        if not mask.any():
            return np.full(len(table), np.nan)
        return values[:, np.flatnonzero(mask)[0]]

    xy = np.stack([np.stack([column(n, "x"), column(n, "y")], axis=-1) for n in names], axis=1)
    if "likelihood" not in set(coords):
        return xy, None
    likelihood = np.stack([column(n, "likelihood") for n in names], axis=1)
    return xy, likelihood


def arrays_to_table(
    keypoints: np.ndarray,
    names: Sequence[str],
    likelihood: np.ndarray | None = None,
    index: Sequence | None = None,
    scorer: str = "lpray",
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Build a pose table from ``(T, K, 2)`` keypoints, optional ``(T, K)`` likelihoods.

    ``extra`` adds more per-keypoint columns (``{coord_name: (T, K) array}``), for example the EKS
    variances; they follow x, y, likelihood for each keypoint, in the order given.
    """
    keypoints = np.asarray(keypoints, dtype=float)
    n_frames, n_keypoints, _ = keypoints.shape
    if len(names) != n_keypoints:
        raise ValueError(f"{len(names)} keypoint names for {n_keypoints} keypoints")
    blocks: dict[str, np.ndarray] = {"x": keypoints[..., 0], "y": keypoints[..., 1]}
    if likelihood is not None:
        blocks["likelihood"] = np.asarray(likelihood, dtype=float)
    for coord, values in (extra or {}).items():
        blocks[coord] = np.asarray(values, dtype=float)
    columns, data = [], []
    for k, name in enumerate(names):
        for coord, values in blocks.items():
            columns.append((scorer, name, coord))
            data.append(values[:, k])
    table = pd.DataFrame(
        np.stack(data, axis=1) if data else np.empty((n_frames, 0)),
        columns=pd.MultiIndex.from_tuples(columns, names=list(HEADER_LEVELS)),
        index=pd.Index(range(n_frames) if index is None else list(index)),
    )
    return table

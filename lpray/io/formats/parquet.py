"""Parquet with flat ``bodypart|coord`` columns: fast to load for large corpora."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lpray.io.formats import PoseFormat, PoseMeta

if TYPE_CHECKING:
    import pandas as pd


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    from lpray.io.tables import write_pose_parquet

    write_pose_parquet(table, path)


FORMAT = PoseFormat("parquet", ".parquet", _write, description="parquet, flat columns")

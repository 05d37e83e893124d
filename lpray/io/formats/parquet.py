"""Parquet with flat ``bodypart|coord`` columns: fast to load for large corpora."""

from __future__ import annotations

import pandas as pd

from lpray.io.formats import PoseFormat, PoseMeta
from lpray.io.tables import write_pose_parquet


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    write_pose_parquet(table, path)


FORMAT = PoseFormat("parquet", ".parquet", _write, description="parquet, flat columns")

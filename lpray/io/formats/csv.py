"""The 3-row-header CSV DeepLabCut, Lightning Pose and EKS read (:mod:`lpray.io.tables`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lpray.io.formats import PoseFormat, PoseMeta

if TYPE_CHECKING:
    import pandas as pd


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    from lpray.io.tables import write_pose_csv

    write_pose_csv(table, path)


FORMAT = PoseFormat("csv", ".csv", _write, description="3-row-header CSV (DLC / Lightning Pose)")

"""The 3-row-header CSV DeepLabCut, Lightning Pose and EKS read (:mod:`lpray.io.tables`)."""

from __future__ import annotations

import pandas as pd

from lpray.io.formats import PoseFormat, PoseMeta
from lpray.io.tables import write_pose_csv


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    write_pose_csv(table, path)


FORMAT = PoseFormat("csv", ".csv", _write, description="3-row-header CSV (DLC / Lightning Pose)")

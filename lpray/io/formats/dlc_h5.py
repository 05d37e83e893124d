"""DeepLabCut's analysis ``.h5``: the pose table under the key ``df_with_missing``.

DeepLabCut writes ``DataFrame.to_hdf(path, key="df_with_missing", format="table")`` with the
(scorer, bodyparts, coords) column MultiIndex and frame numbers as the index; its tools
(``deeplabcut.create_labeled_video``, ``filterpredictions``, the GUI's refinement) and
Lightning Pose read that. PyTables writes only to local files, so the file is made in a temporary
folder and copied to its place (a URL too) in one write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from lpray.io.formats import PoseFormat, PoseMeta
from lpray.io.storage import atomic_write

KEY = "df_with_missing"


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    with tempfile.TemporaryDirectory(prefix="lpray-h5-") as folder:
        local = Path(folder) / "table.h5"
        table.to_hdf(local, key=KEY, format="table", mode="w")
        with atomic_write(path, "wb") as handle:
            handle.write(local.read_bytes())


FORMAT = PoseFormat(
    "h5", ".h5", _write, requires=("tables",), description="DeepLabCut analysis .h5"
)

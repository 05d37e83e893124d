"""DeepLabCut's ``.h5`` files: a pose table under the key ``df_with_missing``.

DeepLabCut writes ``DataFrame.to_hdf(path, key="df_with_missing")`` with the
(scorer, bodyparts, coords) column MultiIndex: its analysis files (frame numbers as the index,
``format="table"``; read by ``deeplabcut.create_labeled_video``, ``filterpredictions``, the GUI's
refinement and Lightning Pose) and its label files ``CollectedData_<scorer>.h5`` (rows keyed by
(``labeled-data``, video, image), pandas' default "fixed" format, which is the one that stores
a row MultiIndex). PyTables writes only to local files, so the file is made in a temporary
folder and copied to its place (a URL too) in one write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lpray.io.formats import PoseFormat, PoseMeta

if TYPE_CHECKING:
    import pandas as pd

KEY = "df_with_missing"


def write_h5(table: pd.DataFrame, path: str, layout: Literal["table", "fixed"] = "table") -> None:
    """Write ``table`` under :data:`KEY` as DeepLabCut does, complete or absent (local or URL).

    Args:
        table: a pose table (3-level column MultiIndex).
        path: the ``.h5`` file to write.
        layout: PyTables layout: ``"table"`` (analysis files) or ``"fixed"`` (label files, whose
            rows are a MultiIndex that the table layout cannot store).
    """
    from lpray.io.storage import atomic_write

    with tempfile.TemporaryDirectory(prefix="lpray-h5-") as folder:
        local = Path(folder) / "table.h5"
        table.to_hdf(local, key=KEY, format=layout, mode="w")
        with atomic_write(path, "wb") as handle:
            handle.write(local.read_bytes())


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    write_h5(table, path)


FORMAT = PoseFormat(
    "h5", ".h5", _write, requires=("tables",), description="DeepLabCut analysis .h5"
)

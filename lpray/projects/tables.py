"""Labels tables (DeepLabCut's layout: image rows, (scorer, bodyparts, coords) columns) as
``sleap_io.Labels`` over image sequences, one per ``labeled-data/<video>`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lpray.io.tables import keypoint_names, table_to_arrays
from lpray.projects import ProjectError


def labels_from_table(table: pd.DataFrame, root: Path, source: str) -> Any:
    """``table``'s rows (image paths relative to ``root``) as ``sleap_io.Labels``, keypoints in
    the table's column order.

    Raises:
        ProjectError: a labeled image is missing.
    """
    import sleap_io as sio

    names = keypoint_names(table)
    xy, _ = table_to_arrays(table)
    skeleton = sio.Skeleton(nodes=list(names))  # sleap-io turns the list into Nodes in place
    by_folder: dict[str, list[int]] = {}
    for row, image in enumerate(table.index):
        by_folder.setdefault(str(Path(str(image)).parent), []).append(row)
    frames, sequences = [], []
    for rows in by_folder.values():
        images = [str(root / str(table.index[r])) for r in rows]
        missing = [i for i in images if not Path(i).is_file()]
        if missing:
            raise ProjectError(
                f"{source}: {len(missing)} labeled images missing, e.g. {missing[0]}"
            )
        video = sio.Video.from_filename(images)
        sequences.append(video)
        for frame_idx, row in enumerate(rows):
            instance = sio.Instance.from_numpy(xy[row], skeleton=skeleton)
            frames.append(sio.LabeledFrame(video=video, frame_idx=frame_idx, instances=[instance]))
    return sio.Labels(labeled_frames=frames, videos=sequences, skeletons=[skeleton])

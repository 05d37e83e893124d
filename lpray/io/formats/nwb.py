"""NWB with the ndx-pose extension: the standard for pose in neurophysiology archives (DANDI).

One NWB file per video: a ``behavior`` processing module holding a ``Skeletons`` container (the
keypoints as nodes) and a ``PoseEstimation`` with one ``PoseEstimationSeries`` per keypoint
(x, y in video pixels, the likelihood as confidence, timestamps from the video's frame rate).
Labs merge these into their session files with pynwb. Like PyTables, pynwb writes local files
only: the file is made in a temporary folder and copied to its place in one write.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lpray.io.formats import PoseFormat, PoseMeta

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

UNKNOWN_RATE = "frame rate unknown: the timestamps are frame numbers (rate 1 per second)"
REFERENCE_FRAME = "(0, 0) is the top-left corner of the video frame; x right, y down, in pixels"


def _write(table: pd.DataFrame, path: str, meta: PoseMeta) -> None:
    import numpy as np
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.image import ImageSeries

    import lpray
    from lpray.io.storage import atomic_write
    from lpray.io.tables import keypoint_names, table_to_arrays

    names = keypoint_names(table)
    xy, likelihood = table_to_arrays(table)
    if likelihood is None:
        likelihood = np.full(xy.shape[:2], np.nan)
    fps = float(meta.fps) if meta.fps else 1.0
    timing = {"rate": fps, "starting_time": 0.0}
    if not meta.fps:  # e.g. EKS of prediction files with no video beside them
        logger.warning("%s: frame rate unknown; NWB timestamps count frames (rate 1/s)", path)
        timing["comments"] = UNKNOWN_RATE
    stem = Path(str(path)).stem
    nwb = NWBFile(
        session_description=f"lpray pose estimates of {meta.video or stem}",
        identifier=str(uuid.uuid4()),
        session_start_time=datetime.now(timezone.utc),
    )
    video = None
    if meta.video:  # the source video, by reference (NWB's external-file ImageSeries)
        video = ImageSeries(
            name="video",
            description="the video the poses were estimated from",
            external_file=[meta.video],
            format="external",
            starting_frame=[0],
            num_samples=len(table),
            **timing,
        )
        nwb.add_acquisition(video)
    skeleton = Skeleton(name="skeleton", nodes=names, edges=np.zeros((0, 2), dtype="uint8"))
    series = [
        PoseEstimationSeries(
            name=name,
            description=f"{name}: {meta.description or 'lpray'}",
            data=xy[:, k],
            unit="pixels",
            reference_frame=REFERENCE_FRAME,
            confidence=likelihood[:, k],
            confidence_definition="softmax mass of the heatmap near its peak (0..1)",
            **timing,
        )
        for k, name in enumerate(names)
    ]
    estimation = PoseEstimation(
        name="PoseEstimation",
        pose_estimation_series=series,
        description=meta.description or "lpray predictions",
        source_video=video,
        scorer=str(table.columns.get_level_values(0)[0]),
        source_software="lpray",
        source_software_version=lpray.__version__,
        skeleton=skeleton,
    )
    behavior = nwb.create_processing_module(name="behavior", description="pose estimates")
    behavior.add(Skeletons(skeletons=[skeleton]))
    behavior.add(estimation)
    with tempfile.TemporaryDirectory(prefix="lpray-nwb-") as folder:
        local = Path(folder) / "pose.nwb"
        with NWBHDF5IO(str(local), "w") as io:
            io.write(nwb)
        with atomic_write(path, "wb") as handle:
            handle.write(local.read_bytes())


FORMAT = PoseFormat(
    "nwb",
    ".nwb",
    _write,
    requires=("pynwb", "ndx_pose"),
    description="NWB with ndx-pose (one file per video)",
)

"""Lightning Pose projects: ``CollectedData.csv`` (DeepLabCut's CSV layout, image paths relative to
the project) with ``labeled-data/`` and ``videos/``. Read with lpray's own table reader (sleap-io's
DLC CSV reader sorts the keypoints by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpray.projects import ProjectError, ProjectSource


def _csv(path: Path) -> Path:
    return path / "CollectedData.csv" if path.is_dir() else path


def detect(path: Path) -> bool:
    csv = _csv(path)
    return csv.suffix == ".csv" and csv.is_file()


def load(path: Path) -> tuple[Any, list[Path], str]:
    csv = _csv(path)
    if not csv.is_file():
        raise ProjectError(f"{csv}: no CollectedData.csv")
    from lpray.io.tables import PoseTableError, read_pose_csv
    from lpray.projects.tables import labels_from_table

    try:
        table = read_pose_csv(csv)
    except PoseTableError as error:
        raise ProjectError(str(error)) from error
    labels = labels_from_table(table, csv.parent, str(csv))
    videos = sorted(p for p in (csv.parent / "videos").glob("*") if p.is_file())
    return labels, videos, f"Lightning Pose project {csv.parent}"


SOURCE = ProjectSource("lightning-pose", detect, load)

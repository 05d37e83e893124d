"""SLEAP labels files (``.slp``; ``.pkg.slp`` with the labeled frames embedded), read with
sleap-io. Only user-labeled instances count; a frame with two is a multi-animal project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lpray.projects import ProjectError, ProjectSource


def detect(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".slp")


def load(path: Path) -> tuple[Any, list[Path], str]:
    import sleap_io as sio

    try:
        labels = sio.load_slp(str(path))
    except Exception as error:  # sleap-io raises h5py/KeyError/... for a damaged file
        raise ProjectError(f"{path}: not a readable SLEAP labels file ({error})") from error
    videos = []
    for video in labels.videos:
        source = video.source_video or video  # a .pkg.slp points back at the original file
        name = source.filename
        if isinstance(name, str) and Path(name).is_file() and not name.endswith(".slp"):
            videos.append(Path(name))
    return labels, videos, f"SLEAP labels {path}"


SOURCE = ProjectSource("sleap", detect, load)

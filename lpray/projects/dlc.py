"""DeepLabCut projects: ``config.yaml`` with ``labeled-data/<video>/CollectedData_<scorer>.h5``
(or ``.csv``) folders. Multi-animal projects are refused: lpray tracks one animal per video.

The label files are read with pandas, keypoints in the config's ``bodyparts`` order (sleap-io's
DLC loader needs the CSVs and sorts the keypoints by name). DeepLabCut 2.2+ keys rows by
(``labeled-data``, video, image); older versions by one ``labeled-data/video/image`` string.
:func:`write_labels` writes the 2.2+ layout (``lpray select-frames``' per-video stubs)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lpray.io.formats.dlc_h5 import write_h5
from lpray.io.storage import filesystem, join, local_file, read_bytes
from lpray.io.tables import HEADER_LEVELS, keypoint_names, write_pose_csv
from lpray.projects import ProjectError, ProjectSource
from lpray.projects.tables import labels_from_table


def _config(path: Path) -> Path:
    return path / "config.yaml" if path.is_dir() else path


def detect(path: Path) -> bool:
    config = _config(path)
    return (
        config.name == "config.yaml"
        and config.is_file()
        and (config.parent / "labeled-data").is_dir()
    )


def _read_labels(folder: Path) -> pd.DataFrame | None:
    """One ``labeled-data/<video>`` folder's labels, rows as ``labeled-data/<video>/<image>``."""
    files = sorted(folder.glob("CollectedData_*.h5")) or sorted(folder.glob("CollectedData_*.csv"))
    return read_label_file(str(files[0])) if files else None


def read_label_file(path: str) -> pd.DataFrame:
    """A ``CollectedData_<scorer>.h5`` or ``.csv`` (local or URL) as a labels table: rows
    ``labeled-data/<video>/<image>``, (scorer, bodyparts, coords) columns, floats.

    Raises:
        ProjectError: not a DeepLabCut label file, or a multi-animal one.
    """
    try:
        if path.endswith(".h5"):
            with local_file(path) as local:  # pandas reads HDF5 from a local file only
                table = pd.read_hdf(local)
        else:
            data = io.BytesIO(read_bytes(path))
            table = pd.read_csv(data, header=[0, 1, 2], index_col=0)
            if str(table.columns[0][0]).startswith("Unnamed"):  # 2.2+: three index columns
                data.seek(0)
                table = pd.read_csv(data, header=[0, 1, 2], index_col=[0, 1, 2])
    except (OSError, ValueError, KeyError, ImportError) as error:
        raise ProjectError(f"{path}: not a DeepLabCut label file ({error})") from error
    if table.columns.nlevels == 4:
        raise ProjectError(f"{path}: multi-animal labels (an individuals level); not supported")
    rows = table.index
    if isinstance(rows, pd.MultiIndex):
        table.index = ["/".join(map(str, key)) for key in rows]
    else:
        table.index = [str(k).replace("\\", "/") for k in rows]
    table.columns = table.columns.set_names(["scorer", "bodyparts", "coords"])
    return table.astype(float)


def label_files(root: str) -> list[str]:
    """The per-video label files under ``root`` (local or URL), relative to it: in each
    ``labeled-data/<video>`` folder the ``.h5`` of each scorer, or its ``.csv`` where the folder
    has no ``.h5`` of that scorer."""
    fs, inner = filesystem(root)
    found = sorted(fs.glob(f"{inner.rstrip('/')}/labeled-data/*/CollectedData_*"))
    names = ["/".join(f.rstrip("/").split("/")[-3:]) for f in found]
    h5 = {n[: -len(".h5")] for n in names if n.endswith(".h5")}
    return [
        n
        for n in names
        if n.endswith(".h5") or (n.endswith(".csv") and n[: -len(".csv")] not in h5)
    ]


def label_file(video: str, scorer: str, suffix: str = ".h5") -> str:
    """``labeled-data/<video>/CollectedData_<scorer>.h5``: where DeepLabCut keeps a video's labels."""
    return f"labeled-data/{video}/CollectedData_{scorer}{suffix}"


def write_labels(table: pd.DataFrame, root: str, scorer: str) -> list[str]:
    """Write a labels table as DeepLabCut's per-video label files under ``root`` (local or URL).

    Each ``labeled-data/<video>`` folder gets ``CollectedData_<scorer>.h5`` (key
    ``df_with_missing``) and ``.csv``, rows keyed by (``labeled-data``, video, image) and columns
    (scorer, bodyparts, coords) with x and y, as DeepLabCut 2.2+ writes them; :func:`load` reads
    them back.

    Args:
        table: image paths ``labeled-data/<video>/<image>`` as rows, (scorer, bodyparts, coords)
            columns; coords other than x and y are dropped.
        root: the folder the image paths are relative to.
        scorer: the scorer name in the files' header and names (DeepLabCut uses its config's).

    Returns:
        The files written, relative to ``root``.

    Raises:
        ProjectError: a row that is not ``labeled-data/<video>/<image>``.
    """
    keys = [tuple(str(row).split("/")) for row in table.index]
    bad = [row for row, key in zip(table.index, keys) if len(key) != 3 or key[0] != "labeled-data"]
    if bad:
        raise ProjectError(
            f"{root}: row {bad[0]} is not labeled-data/<video>/<image>; DeepLabCut keeps each "
            "video's frames in its own labeled-data folder"
        )
    columns = [c for c in table.columns if c[2] in ("x", "y")]
    labels = table[columns].astype(float)
    labels.columns = pd.MultiIndex.from_tuples(
        [(scorer, part, coord) for _, part, coord in columns], names=list(HEADER_LEVELS)
    )
    labels.index = pd.MultiIndex.from_tuples(keys)
    written = []
    for video in dict.fromkeys(key[1] for key in keys):
        rows = labels.xs(video, level=1, drop_level=False)
        for suffix in (".h5", ".csv"):
            name = label_file(video, scorer, suffix)
            if suffix == ".h5":
                write_h5(rows, join(root, name), layout="fixed")
            else:
                write_pose_csv(rows, join(root, name))
            written.append(name)
    return written


def load(path: Path) -> tuple[Any, list[Path], str]:
    config_path = _config(path)
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ProjectError(f"{config_path}: not a readable DeepLabCut config ({error})") from error
    if config.get("multianimalproject"):
        individuals = config.get("individuals") or []
        raise ProjectError(
            f"{config_path}: a multi-animal DeepLabCut project ({len(individuals)} individuals); "
            "lpray tracks one animal per video: convert a single-animal project"
        )
    root = config_path.parent
    tables = [_read_labels(folder) for folder in sorted((root / "labeled-data").iterdir())]
    tables = [t for t in tables if t is not None]
    if not tables:
        raise ProjectError(f"{root}/labeled-data: no CollectedData_<scorer>.h5/.csv in any folder")
    table = pd.concat(tables)
    bodyparts = list(config.get("bodyparts") or keypoint_names(table))
    missing = [b for b in bodyparts if b not in keypoint_names(table)]
    if missing:
        raise ProjectError(f"{config_path}: bodyparts {missing} are in no label file")
    scorer = table.columns.get_level_values(0)[0]
    table = table[[(scorer, b, c) for b in bodyparts for c in ("x", "y")]]
    labels = labels_from_table(table, root, str(root))
    skeleton = labels.skeletons[0]
    for a, b in config.get("skeleton") or []:
        if a in bodyparts and b in bodyparts:
            skeleton.add_edge(a, b)
    videos = []
    for name in config.get("video_sets") or {}:
        video = Path(name)
        video = video if video.is_absolute() else root / video
        if not video.is_file():  # DLC keeps absolute paths of the machine that made the project
            video = root / "videos" / Path(name).name
        if video.is_file():
            videos.append(video)
    return labels, videos, f"DeepLabCut project {root} (scorer {config.get('scorer', '?')})"


SOURCE = ProjectSource("dlc", detect, load)

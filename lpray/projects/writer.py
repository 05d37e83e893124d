"""A ``sleap_io.Labels`` written as an lpray project.

Layout (what ``lpray train`` reads with ``data.root`` = the folder)::

    DIR/CollectedData.csv          3-row-header labels, image paths relative to DIR
    DIR/labeled-data/<video>/*.png the labeled frames (extracted from videos or embedded files)
    DIR/videos/                    the source videos found, copied (the unlabeled training data)
    DIR/config.yaml                a starter config naming the keypoints
    DIR/project.json               keypoints, skeleton edges, where it came from

The project is written into a temporary folder beside DIR and renamed into place at the end, so
a failed conversion leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lpray.io.tables import arrays_to_table, write_pose_csv
from lpray.projects import ProjectError

log = logging.getLogger(__name__)


def _frame_name(video: Any, frame_idx: int) -> str:
    """``<video stem>/<image name>``: an image sequence keeps its file names (DLC's
    ``img0042.png``), a video gets ``img<frame>.png``."""
    names = video.filename
    if isinstance(names, list):  # one image per frame (DLC labeled-data, LP)
        image = Path(names[frame_idx])
        return f"{image.parent.name}/{image.stem}.png"
    source = video.source_video.filename if video.source_video is not None else names
    return f"{Path(str(source)).name.split('.')[0]}/img{frame_idx:05d}.png"


def _instance(frame: Any, where: str) -> Any:
    """The frame's one user-labeled instance (None if it has none)."""
    users = [i for i in frame.user_instances if not i.is_empty]
    if len(users) > 1:
        raise ProjectError(
            f"{where}: frame {frame.frame_idx} has {len(users)} labeled animals; lpray tracks one "
            "animal per video (multi-animal projects are not supported)"
        )
    return users[0] if users else None


def write_project(
    labels: Any, videos: list[Path], out: Path, source: str, image_size: int = 256
) -> dict[str, Any]:
    """Write ``labels`` (one skeleton, one animal per frame) as an lpray project at ``out``.

    Args:
        labels: a ``sleap_io.Labels``.
        videos: source videos to copy into ``videos/``.
        out: the project folder to create (must not exist).
        source: one line saying where the labels came from.
        image_size: the starter config's model input size (square).

    Returns:
        The ``project.json`` record (keypoints, skeleton, frame and video counts).

    Raises:
        ProjectError: ``out`` exists, several skeletons, several animals in a frame, or no
            labeled frame.
    """
    from PIL import Image

    out = Path(out)
    if out.exists():
        raise ProjectError(f"{out} exists: choose a new folder for the converted project")
    if len(labels.skeletons) != 1:
        raise ProjectError(f"{source}: {len(labels.skeletons)} skeletons; lpray needs exactly one")
    skeleton = labels.skeletons[0]
    names = list(skeleton.node_names)
    edges = [[names.index(a.name), names.index(b.name)] for a, b in skeleton.edges]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        rows, points = [], []
        for frame in labels.labeled_frames:
            instance = _instance(frame, source)
            if instance is None:
                continue
            relative = f"labeled-data/{_frame_name(frame.video, frame.frame_idx)}"
            image = np.asarray(frame.image)
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
            rows.append(relative)
            points.append(instance.numpy()[:, :2])
        if not rows:
            raise ProjectError(f"{source}: no labeled frame with a user-labeled animal")
        if len(set(rows)) != len(rows):
            raise ProjectError(f"{source}: two labeled frames map to one image name")
        table = arrays_to_table(np.stack(points).astype(float), names, index=rows, scorer="lpray")
        write_pose_csv(table, staging / "CollectedData.csv")
        if videos:
            (staging / "videos").mkdir()
        for video in videos:
            shutil.copy2(video, staging / "videos" / video.name)
        record = {
            "source": source,
            "keypoints": names,
            "skeleton": edges,
            "labeled_frames": len(rows),
            "videos": [v.name for v in videos],
        }
        (staging / "project.json").write_text(json.dumps(record, indent=2) + "\n")
        (staging / "config.yaml").write_text(_starter_config(out, names, edges, source, image_size))
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not videos:
        log.warning("%s: no source video found; add videos to %s/videos for training", source, out)
    return record


def _starter_config(
    out: Path, names: list[str], edges: list[list[int]], source: str, size: int
) -> str:
    import yaml

    root = out.resolve()
    config = {
        "data": {
            "root": str(root),
            "videos": ["videos/*"],
            "image_size": [size, size],
            "keypoints": names,
        },
        # a real project starts from ImageNet weights (downloaded once, lpray.models.weights)
        "model": {"backbone": "resnet50", "pretrained": True},
        "training": {"output_dir": str(root / "model")},
    }
    skeleton = ", ".join(f"{names[a]}-{names[b]}" for a, b in edges) or "none"
    header = (
        f"# lpray project converted from {source}\n"
        f"# skeleton (project.json): {skeleton}\n"
        f"#   lpray train {root}/config.yaml\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)

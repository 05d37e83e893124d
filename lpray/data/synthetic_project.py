"""A synthetic project's description: what ``lpray synthetic`` generates (the spec, codecs and
context offsets) and the project a folder holds (:func:`load_synthetic_project`).

Apart from the generator (:mod:`lpray.data.synthetic`, which imports PyAV, SciPy and pandas):
the CLI builds its parser with the spec's defaults, and the ``lpray track`` driver reads a
demo model's view groups from its project, neither needing those (importing them cost every
``lpray`` command ~1 s at start-up).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Bump when the rendering or the motion changes, so cached projects are rebuilt.
GENERATOR_VERSION = 1
CONTEXT = (-2, -1, 1, 2)  # neighbours a context model reads around each labeled frame
# codec name -> (PyAV encoder, file suffix, pixel format, encoder options)
CODECS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "h264": ("libx264", ".mp4", "yuv420p", {"crf": "12", "preset": "medium"}),
    "vp9": (
        "libvpx-vp9",
        ".webm",
        "yuv420p",
        {"crf": "10", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    ),
    "mjpeg": ("mjpeg", ".avi", "yuvj420p", {}),
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; defaults train a ResNet-18 at 128x128 on 2 CPU cores in minutes.

    Attributes:
        seed: everything random derives from it; the same spec gives the same bytes.
        n_train_videos: videos labeled frames are drawn from (and unlabeled training video).
        n_test_videos: unseen videos, for pixel error on every frame.
        frames_per_video: length of every video.
        n_labeled: labeled frames, spread evenly over the training videos.
        frame_size: (height, width) of ONE view; the two-view frame stacks two of them.
        two_view: add a side view (x, z) below the top view (x, y), as in mirror setups.
        occlusion: a moving vertical bar hides keypoints; hidden ones are missing labels.
        codec: "h264" (.mp4), "vp9" (.webm) or "mjpeg" (.avi); DALI's CPU reader needs the last two.
        fps: frame rate written into the videos.
        noise_std: sensor noise, in grey levels.
        motion_blur: average sub-frame samples so fast parts smear, as in real video.
    """

    seed: int = 0
    n_train_videos: int = 2
    n_test_videos: int = 1
    frames_per_video: int = 300
    n_labeled: int = 80
    frame_size: tuple[int, int] = (128, 128)
    two_view: bool = False
    occlusion: bool = True
    codec: str = "h264"
    fps: int = 30
    noise_std: float = 5.0
    motion_blur: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        height, width = self.frame_size
        if height % 2 or width % 2 or min(height, width) < 64:
            raise ValueError(f"frame_size {self.frame_size}: need even sides of at least 64 px")
        if self.codec not in CODECS:
            raise ValueError(f"codec {self.codec!r}: choose one of {sorted(CODECS)}")
        if self.frames_per_video < 2 * max(CONTEXT) + 1:
            raise ValueError(f"frames_per_video {self.frames_per_video}: need at least 5")
        usable = self.n_train_videos * (self.frames_per_video - 2 * max(CONTEXT))
        if not 0 <= self.n_labeled <= usable:
            raise ValueError(f"n_labeled {self.n_labeled}: the training videos hold {usable}")
        if self.n_train_videos < 1 or self.n_test_videos < 0 or self.fps < 1:
            raise ValueError("need n_train_videos >= 1, n_test_videos >= 0 and fps >= 1")

    def to_dict(self) -> dict:
        """Plain types only, for YAML and hashing."""
        out = dataclasses.asdict(self)
        out["frame_size"] = list(self.frame_size)
        return out

    def hash(self) -> str:
        """Identifies the bytes this spec generates (the generator version included)."""
        text = json.dumps({"generator": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class SyntheticProject:
    """A generated project on disk: paths, names and the spec that made it."""

    root: Path
    csv_path: Path
    train_videos: list[Path]
    test_videos: list[Path]
    truth_paths: dict[str, Path]
    keypoint_names: list[str]
    view_groups: list[list[str]]
    spec: SyntheticSpec = field(default_factory=SyntheticSpec)
    frame_size: tuple[int, int] = (128, 128)  # (height, width) of a whole frame, all views

    @property
    def fps(self) -> int:
        return self.spec.fps


def load_synthetic_project(root: str | os.PathLike) -> SyntheticProject:
    """Read a project written by :func:`make_synthetic_project`."""
    root = Path(root)
    meta_path = root / "project.yaml"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no synthetic project here")
    meta = yaml.safe_load(meta_path.read_text())
    if not isinstance(meta, dict) or meta.get("format") != "lpray-synthetic":
        raise ValueError(f"{meta_path}: not an lpray synthetic project")
    spec = SyntheticSpec(**meta["spec"])
    return SyntheticProject(
        root=root,
        csv_path=root / meta["csv"],
        train_videos=[root / p for p in meta["train_videos"]],
        test_videos=[root / p for p in meta["test_videos"]],
        truth_paths={stem: root / p for stem, p in meta["truth"].items()},
        keypoint_names=list(meta["keypoint_names"]),
        view_groups=[list(g) for g in meta["view_groups"]],
        spec=spec,
        frame_size=tuple(meta["frame_size"]),
    )

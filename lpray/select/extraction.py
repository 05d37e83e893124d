"""Frames out of videos: decoding chosen frames, thumbnails, PNGs and the labels stub.

The labeling folder follows the DeepLabCut / Lightning Pose layout, so their labelers open it as
any project: ``labeled-data/<video>/img<frame, 8 digits>.png`` (Lightning Pose's naming, which
its context models rely on: the neighbours of ``img00000042.png`` are ``img00000040.png`` ...
``img00000044.png`` in the same folder, see :func:`lpray.data.labeled.context_paths`) and
``CollectedData.csv`` with three header rows and the image paths relative to the folder. The stub's keypoints are the ensemble's EKS guess, marked as a guess by
its scorer name :data:`GUESS_SCORER`; ``lpray merge-labels`` refuses rows still marked so unless
told they were checked.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from lpray.io.storage import atomic_write, local_file
from lpray.io.tables import arrays_to_table

GUESS_SCORER = "lpray-eks-guess"
THUMBNAIL = 24  # side of the square grey thumbnail k-means compares frames by


def image_name(key: str, frame: int) -> str:
    """``labeled-data/<key>/img00000042.png``: the frame's path inside the labeling folder."""
    return f"labeled-data/{key}/img{frame:08d}.png"


def context_frames(picks: Sequence[int], context: int, frames: int) -> list[int]:
    """The picks and their neighbours ``t-context..t+context``, clamped to ``[0, frames)``,
    sorted, each once."""
    wanted = {
        min(max(t + offset, 0), frames - 1)
        for t in picks
        for offset in range(-context, context + 1)
    }
    return sorted(wanted)


def decode_frames(video: str, frames: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame, (H, W, 3) uint8 RGB)`` for each wanted frame, in increasing frame order.

    One reader per video, downloaded once when the video is on an object store; only one
    decoded frame is held at a time.
    """
    from lpray.data.video import PyAVReader

    with local_file(video) as path, PyAVReader(path) as reader:
        for t in sorted(set(int(f) for f in frames)):
            yield t, reader.read(t, 1)[0]


def thumbnail(frame: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """A ``size * size`` grey vector of the frame, zero mean and unit variance (so appearance,
    not overall brightness, separates frames)."""
    grey = Image.fromarray(frame).convert("L").resize((size, size), Image.Resampling.BOX)
    vector = np.asarray(grey, dtype=np.float64).ravel()
    return (vector - vector.mean()) / (vector.std() + 1e-6)


def png_bytes(frame: np.ndarray) -> bytes:
    """The frame as PNG (RGB, lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(frame: np.ndarray, path: str) -> None:
    """Write the frame losslessly, atomically (local or URL)."""
    data = png_bytes(frame)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def labels_stub(images: list[str], xy: np.ndarray, keypoints: list[str]) -> pd.DataFrame:
    """The ``CollectedData.csv`` table: one row per image, the guess's x and y per keypoint."""
    return arrays_to_table(xy, keypoints, index=images, scorer=GUESS_SCORER)

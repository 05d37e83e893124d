"""``lpray predict`` on videos: one model, every frame, its tables and per-frame metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lpray.inference.engine import predict_range
from lpray.inference.graphs import ChunkPasses
from lpray.inference.network import PoseNetwork
from lpray.io.formats import DEFAULT_FORMATS, PoseMeta, save_pose
from lpray.io.storage import atomic_write, join
from lpray.io.tables import arrays_to_table
from lpray.losses.registry import frame_metrics


def predict_video_arrays(
    network: PoseNetwork,
    video: str,
    chunk_size: int | None = None,
    backend: str = "auto",
    decoders: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (T, K, 2) in frame pixels and confidences (T, K) for every frame of ``video``."""
    result = predict_range(
        [network], video, chunk_size=chunk_size, backend=backend, decoders=decoders
    )
    return result.xy[0], result.confidence[0]


def video_metrics(network: PoseNetwork, xy: np.ndarray) -> pd.DataFrame:
    """Per-frame, per-keypoint metrics of every registered loss that has one with this network
    (:func:`lpray.losses.registry.frame_metrics`: temporal norm, PCA reprojection errors), as
    ``<metric>|<keypoint>`` columns."""
    names = network.keypoint_names
    columns = {}
    for metric in frame_metrics(xy, network.loss_states):
        for k, values in zip(metric.keypoints, metric.values.T):
            columns[f"{metric.column}|{names[k]}"] = values
    return pd.DataFrame(columns)


def write_video_outputs(
    network: PoseNetwork,
    stem: str,
    out_dir: str,
    xy: np.ndarray,
    confidence: np.ndarray,
    scorer: str = "lpray",
    formats: Sequence[str] = DEFAULT_FORMATS,
    meta: PoseMeta | None = None,
) -> list[str]:
    """Write ``<stem>.<format>`` for each of ``formats`` (:mod:`lpray.io.formats`) and
    ``<stem>.metrics.csv``; returns the paths."""
    table = arrays_to_table(xy, network.keypoint_names, confidence, scorer=scorer)
    paths = save_pose(table, join(out_dir, stem), formats, meta)
    paths.append(join(out_dir, f"{stem}.metrics.csv"))
    with atomic_write(paths[-1], "w") as handle:
        video_metrics(network, xy).to_csv(handle, index_label="frame")
    return paths


def predict_video(
    network: PoseNetwork,
    video: str,
    out_dir: str | Path,
    backend: str = "auto",
    chunk_size: int | None = None,
    decoders: int | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    cuda_graphs: bool = False,
) -> dict[str, float]:
    """Predict every frame; write ``<stem>.<format>`` for each format and ``<stem>.metrics.csv``
    (``cuda_graphs``: see :class:`~lpray.inference.graphs.ChunkPasses`).

    Returns:
        ``frames``, ``seconds`` (prediction), ``frames_per_second``, ``first_chunk_seconds``
        (decoder start-up), ``first_chunk_at`` (``time.time()`` of the first decoded chunk),
        ``mean_confidence``.
    """
    result = predict_range(
        [network],
        video,
        chunk_size=chunk_size,
        backend=backend,
        decoders=decoders,
        passes=ChunkPasses([network], cuda_graphs),
    )
    xy, confidence = result.xy[0], result.confidence[0]
    stem = Path(video).name.rsplit(".", 1)[0]
    meta = PoseMeta(str(video), result.fps, f"lpray predict of {network.model_dir or 'a network'}")
    write_video_outputs(network, stem, str(out_dir), xy, confidence, formats=formats, meta=meta)
    return {
        "frames": len(xy),
        "seconds": result.seconds,
        "frames_per_second": len(xy) / result.seconds,
        "first_chunk_seconds": result.first_chunk_seconds,
        "first_chunk_at": result.first_chunk_at,
        "mean_confidence": float(np.nanmean(confidence)),
    }

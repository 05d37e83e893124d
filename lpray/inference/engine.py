"""Predict a video, or one frame range of it, with every member of an ensemble: decode once.

Each decoded chunk is run through all K networks while it is on the device, and results stay
on the device until the range is done (one read-back at the end: a read-back per chunk would
make the host wait for each chunk's network pass before queueing the next). Members that share
the input size share the decoding; members of another input size get their own pass.

Thread-safe for concurrent calls on one device: the network passes of concurrent calls are
serialised by a lock (``lock``), so one call's decoders (their own threads and CUDA streams)
run while another call's chunks are in the networks. The tracking worker uses that to overlap
the next video's decoder start-up with the current video's compute.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lpray.data.video import VideoInfo, validate_video
from lpray.inference.chunks import iter_prediction_chunks
from lpray.inference.network import PoseNetwork, map_points


@dataclass
class RangePrediction:
    """Every member's predictions for frames ``[start, stop)`` of one video.

    Attributes:
        xy: (M, T, K, 2) float32 keypoints in frame pixels, members in the order given.
        confidence: (M, T, K) float32.
        start: first frame.
        stop: end frame (exclusive).
        decode_passes: times the range was decoded (1 unless members differ in input size).
        seconds: wall time of the call.
        first_chunk_seconds: from the call to the first decoded chunk (decoder start-up).
    """

    xy: np.ndarray
    confidence: np.ndarray
    start: int
    stop: int
    decode_passes: int
    seconds: float
    first_chunk_seconds: float
    extra: dict = field(default_factory=dict)


def _groups(networks: Sequence[PoseNetwork]) -> dict[tuple[int, int], list[int]]:
    """Member indices by model input size (members of one size share one decoding)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, network in enumerate(networks):
        groups.setdefault(network.image_size, []).append(index)
    return groups


@torch.inference_mode()
def predict_range(
    networks: Sequence[PoseNetwork],
    video: str,
    start: int = 0,
    stop: int | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
    decoders: int | None = None,
    info: VideoInfo | None = None,
    lock: threading.Lock | None = None,
) -> RangePrediction:
    """Keypoints of frames ``[start, stop)`` of ``video`` from every network.

    Args:
        networks: the members (all on one device).
        video: a local video file.
        start: first frame.
        stop: end frame, exclusive (None: the video's end).
        chunk_size: central frames per network pass.
        backend: "auto", "pyav" or "dali".
        decoders: DALI pipelines decoding in parallel (None: the reader's default).
        info: the video's validation result, when the caller has it.
        lock: held around each chunk's network passes (see the module docstring).

    Returns:
        A :class:`RangePrediction`.

    Raises:
        VideoError: the video is missing, corrupt, truncated or unreadable.
    """
    if not networks:
        raise ValueError("no networks to predict with")
    started = time.perf_counter()
    info = info or validate_video(video)
    stop = info.n_frames if stop is None else stop
    device = networks[0].device
    lock = lock or contextlib.nullcontext()
    xy_parts: list[list[torch.Tensor]] = [[] for _ in networks]
    conf_parts: list[list[torch.Tensor]] = [[] for _ in networks]
    first_chunk = None
    groups = _groups(networks)
    for image_size, members in groups.items():
        # a per-frame network gives the same output for a frame whatever its neighbours, so
        # members needing less context than the group's can share its chunks
        context = max(networks[m].context for m in members)
        order = []
        for chunk in iter_prediction_chunks(
            video,
            image_size,
            chunk_size=chunk_size,
            context=context,
            backend=backend,
            device=str(device),
            decoders=decoders,
            start=start,
            stop=stop,
            info=info,
        ):
            if first_chunk is None:
                first_chunk = time.perf_counter() - started
            first, last = chunk["valid_rows"]
            to_frame = chunk["to_frame"].float()
            with lock:
                for m in members:
                    xy, confidence = networks[m].predict_sequence(chunk["frames"])
                    xy = xy[first:last]
                    xy_parts[m].append(map_points(to_frame[None].expand(xy.shape[0], 2, 3), xy))
                    conf_parts[m].append(confidence[first:last])
            order.append(chunk["valid_frames"])
        frames = np.concatenate(order)
        if not np.array_equal(frames, np.arange(start, stop)):
            raise RuntimeError(f"{video}: prediction chunks did not cover frames in order")
    xy = torch.stack([torch.cat(parts) for parts in xy_parts]).cpu().numpy()
    confidence = torch.stack([torch.cat(parts) for parts in conf_parts]).cpu().numpy()
    return RangePrediction(
        xy=xy,
        confidence=confidence,
        start=start,
        stop=stop,
        decode_passes=len(groups),
        seconds=time.perf_counter() - started,
        first_chunk_seconds=first_chunk or 0.0,
    )

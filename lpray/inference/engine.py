"""Predict a video, or one frame range of it, with every member of an ensemble: decode once.

Each decoded chunk is run through all K networks while it is on the device, and results stay
on the device until the range is done (one read-back at the end: a read-back per chunk would
make the host wait for each chunk's network pass before queueing the next). Members that share
the input size share the decoding; members of another input size get their own pass.

On a GPU the range is cut into ``decoders`` contiguous parts, each decoded by its own DALI
reader on its own thread (one seek per part, then sequential decoding); the parts' network
passes take turns under one lock, so every reader keeps decoding while another part's chunk is
in the networks. Parts carry real context frames from their neighbours
(:mod:`lpray.inference.chunks`), so the result equals one sequential pass. (The earlier scheme,
pieces of 512 frames dealt round-robin to the readers and consumed in frame order, seeked to a
keyframe for every piece: with ~250-frame GOPs that decoded up to half the frames twice, and it
reached 3,762 frames/s with 4 readers on the 396x406 clip where one reader alone runs 2,131
after its start-up; one H200.)

Thread-safe for concurrent calls on one device sharing ``lock``: the tracking worker overlaps
the next video's decoder start-up with the current video's compute that way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from lpray.data.video import VideoInfo, validate_video
from lpray.inference.chunks import DEFAULT_GPU_DECODERS, iter_prediction_chunks, reader_for
from lpray.inference.graphs import ChunkPasses
from lpray.inference.network import PoseNetwork, map_points

# A part decoded by its own reader has at least this many chunks: shorter parts pay a reader's
# start-up (~0.4-1 s for DALI) for little decoding.
MIN_CHUNKS_PER_PART = 8


@dataclass
class RangePrediction:
    """Every member's predictions for frames ``[start, stop)`` of one video.

    Attributes:
        xy: (M, T, K, 2) float32 keypoints in frame pixels, members in the order given.
        confidence: (M, T, K) float32.
        start: first frame.
        stop: end frame (exclusive).
        decode_passes: times the range was decoded (1 unless members differ in input size).
        parts: contiguous parts decoded in parallel (readers).
        seconds: wall time of the call.
        first_chunk_seconds: from the call to the first decoded chunk (decoder start-up).
        first_chunk_at: when that chunk arrived (``time.time()``), to relate it to a command's
            start.
        fps: the video's nominal frame rate.
    """

    xy: np.ndarray
    confidence: np.ndarray
    start: int
    stop: int
    decode_passes: int
    parts: int
    seconds: float
    first_chunk_seconds: float
    first_chunk_at: float
    fps: float | None = None


def default_chunk(device_type: str) -> int:
    """Frames per network pass: 128 on a GPU (5 ResNet-50 256 members on one H200: 1,818 vs
    1,665 video-frames/s for the networks alone at 64, whole ``lpray track`` 963 vs 824;
    bench/results/track_gpu_clip.json), 64 on a CPU (short clips are padded to a whole chunk)."""
    return 128 if device_type == "cuda" else 64


def split_range(start: int, stop: int, parts: int, min_frames: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into at most ``parts`` near-equal contiguous ranges of at least
    ``min_frames`` frames (one range when it is shorter than that)."""
    count = max(1, min(parts, (stop - start) // max(1, min_frames)))
    edges = np.linspace(start, stop, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _groups(networks: Sequence[PoseNetwork]) -> dict[tuple[int, int], list[int]]:
    """Member indices by model input size (members of one size share one decoding)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, network in enumerate(networks):
        groups.setdefault(network.image_size, []).append(index)
    return groups


def predict_range(
    networks: Sequence[PoseNetwork],
    video: str,
    start: int = 0,
    stop: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    decoders: int | None = None,
    info: VideoInfo | None = None,
    lock: threading.Lock | None = None,
    passes: ChunkPasses | None = None,
) -> RangePrediction:
    """Keypoints of frames ``[start, stop)`` of ``video`` from every network.

    Args:
        networks: the members (all on one device).
        video: a local video file.
        start: first frame.
        stop: end frame, exclusive (None: the video's end).
        chunk_size: central frames per network pass (None: :func:`default_chunk`).
        backend: "auto", "pyav" or "dali".
        decoders: parts decoded in parallel, one reader each (None: ``DEFAULT_GPU_DECODERS``
            with DALI on a GPU, else 1).
        info: the video's validation result, when the caller has it.
        lock: held around each chunk's network passes (see the module docstring).
        passes: runs the members over a chunk, keeping its CUDA graphs between calls (None: a
            new :class:`~lpray.inference.graphs.ChunkPasses` with graphs on a GPU). Callers
            sharing ``lock`` share it.

    Returns:
        A :class:`RangePrediction`.

    Raises:
        VideoError: the video is missing, corrupt, truncated or unreadable.
    """
    if not networks:
        raise ValueError("no networks to predict with")
    if decoders is not None and decoders < 1:
        raise ValueError(f"decoders must be >= 1, got {decoders}")
    started = time.perf_counter()
    info = info or validate_video(video)
    stop = info.n_frames if stop is None else stop
    if not 0 <= start < stop <= info.n_frames:
        raise ValueError(f"{video}: frame range [{start}, {stop}) not inside 0..{info.n_frames}")
    device = str(networks[0].device)
    chunk_size = chunk_size or default_chunk(networks[0].device.type)
    lock = lock or threading.Lock()
    passes = passes or ChunkPasses(networks)
    reader = reader_for(info, backend, device, stop - start)
    if decoders is None:
        decoders = DEFAULT_GPU_DECODERS if reader == "dali" and device.startswith("cuda") else 1
    parts = split_range(start, stop, decoders, MIN_CHUNKS_PER_PART * chunk_size)
    first_chunk: list[float] = []
    xy_parts = [[[] for _ in parts] for _ in networks]
    conf_parts = [[[] for _ in parts] for _ in networks]
    groups = _groups(networks)

    def run_part(part: int, image_size: tuple[int, int], members: list[int]) -> None:
        # a per-frame network gives the same output for a frame whatever its neighbours, so
        # members needing less context than the group's can share its chunks
        context = max(networks[m].context for m in members)
        a, b = parts[part]
        frames_seen = []
        with torch.inference_mode():
            for chunk in iter_prediction_chunks(
                video, image_size, chunk_size, context, reader, device, 1, a, b, info
            ):
                if not first_chunk:
                    first_chunk.extend([time.perf_counter() - started, time.time()])
                first, last = chunk["valid_rows"]
                to_frame = chunk["to_frame"].float()
                with lock:
                    # a graph replay's outputs are overwritten by the next replay: copy the
                    # valid rows out (stream-ordered) before another chunk runs
                    for m, (xy, confidence) in zip(members, passes(members, chunk["frames"])):
                        xy = xy[first:last]
                        mapped = map_points(to_frame[None].expand(xy.shape[0], 2, 3), xy)
                        xy_parts[m][part].append(mapped)
                        conf_parts[m][part].append(confidence[first:last].clone())
                frames_seen.append(chunk["valid_frames"])
        if not np.array_equal(np.concatenate(frames_seen), np.arange(a, b)):
            raise RuntimeError(f"{video}: prediction chunks did not cover frames {a}..{b} in order")

    for image_size, members in groups.items():
        if len(parts) == 1:
            run_part(0, image_size, members)
            continue
        with ThreadPoolExecutor(len(parts), thread_name_prefix="lpray-part") as pool:
            futures = [pool.submit(run_part, p, image_size, members) for p in range(len(parts))]
            for future in futures:
                future.result()  # re-raises a part's error
    with torch.inference_mode():
        xy = torch.stack([torch.cat([t for p in m for t in p]) for m in xy_parts]).cpu().numpy()
        conf = torch.stack([torch.cat([t for p in m for t in p]) for m in conf_parts])
    return RangePrediction(
        xy=xy,
        confidence=conf.cpu().numpy(),
        start=start,
        stop=stop,
        decode_passes=len(groups),
        parts=len(parts),
        seconds=time.perf_counter() - started,
        first_chunk_seconds=first_chunk[0],
        first_chunk_at=first_chunk[1],
        fps=info.fps,
    )

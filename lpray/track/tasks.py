"""The work of corpus tracking: what each Ray task and tracking worker runs.

- :func:`probe_video`: a CPU task per video that validates it (a corrupt video fails here, alone,
  without taking a GPU worker's time) and reads its frame count, from which the driver cuts long
  videos into segments.
- :class:`TrackWorker`: a long-lived worker (a Ray actor, one per GPU by default) holding every
  ensemble member, loaded once. Each call predicts one segment of one video with all members,
  decoding it once (:func:`lpray.inference.engine.predict_range`). Several calls run at once on
  its threads (``videos_in_flight``): the network passes take turns under one lock while the
  next segment's decoders start and decode, so decoder start-up is off the GPU's critical path.
- :func:`smooth_video`: a CPU task per video that takes the results of its segments (Ray passes
  them as arguments when the last one is ready), stitches them, writes each member's table,
  runs EKS, writes the smoothed tables and overlays and, last, ``done.json``.

They are plain functions and a plain class so they can be tested and reused without Ray;
:mod:`lpray.track.corpus` wraps them.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lpray.data.video import VideoInfo
from lpray.io.formats import DEFAULT_FORMATS, PoseMeta, parse_formats, save_pose
from lpray.io.storage import local_copy, local_file
from lpray.io.tables import arrays_to_table
from lpray.options import BACKENDS, OVERLAYS, PRECISIONS
from lpray.raywork import limit_torch_threads, node_id
from lpray.track.manifest import VideoJob, write_done


@dataclass(frozen=True)
class TrackSettings:
    """How every video is tracked.

    Attributes:
        smooth_param: EKS smoothing parameter s for every keypoint; None fits it per keypoint.
        chunk_size: frames per forward pass (None: 128 on a GPU, 64 on a CPU).
        backend: video reader (``auto``, ``pyav``, ``dali``).
        decoders: DALI pipelines per segment on a GPU (None: the reader's default, 4).
        segment_frames: videos longer than this are cut into segments of about this many
            frames, predicted by any worker (one long video can use several GPUs) and stitched;
            0 never cuts.
        compile: ``torch.compile`` the members, one graph for all (CUDA; compiled once per
            worker on its first chunk).
        precision: ``auto`` (bf16 on a GPU), ``bf16`` or ``fp32``.
        cuda_graphs: on a GPU, replay every member's pass over a chunk from one CUDA graph
            (:mod:`lpray.inference.graphs`).
        overlay: ``strip`` (PNG of sample frames), ``video`` (labeled mp4), ``both`` or ``none``.
        strip_frames: frames in the PNG strip.
        formats: table formats of the member and EKS outputs (:mod:`lpray.io.formats`).
        view_groups: multi-view body parts; non-empty selects the multi-view EKS.
        members: the ensemble's member names, recorded in ``done.json`` (a video finished by
            other members is redone).
    """

    smooth_param: float | None = None
    chunk_size: int | None = None
    backend: str = "auto"
    decoders: int | None = None
    segment_frames: int = 20_000
    compile: bool = False
    precision: str = "auto"
    cuda_graphs: bool = False
    overlay: str = "strip"
    strip_frames: int = 6
    formats: tuple[str, ...] = DEFAULT_FORMATS
    view_groups: list[list[str]] = field(default_factory=list)
    members: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        choices = {"overlay": OVERLAYS, "backend": BACKENDS, "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "formats", parse_formats(self.formats))  # "csv,h5" too
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(
                f"chunk size (--chunk-size, track.chunk_size) must be >= 1, got {self.chunk_size}"
            )
        if self.decoders is not None and self.decoders < 1:
            raise ValueError(f"--decoders must be >= 1 (readers per segment), got {self.decoders}")
        if self.segment_frames < 0:
            raise ValueError(
                f"--segment-frames must be >= 0 (0: never cut videos), got {self.segment_frames}"
            )
        if self.smooth_param is not None and not self.smooth_param > 0:
            raise ValueError(
                f"smoothing parameter (--smooth-param, track.smooth_param) must be > 0, got {self.smooth_param}"
            )


def plan_segments(n_frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """Cut ``n_frames`` into near-equal consecutive ranges of at most ~``segment_frames``.

    Each range is predicted on its own (with real context frames from its neighbours, see
    :mod:`lpray.inference.chunks`), so the concatenated results equal the whole video's.
    """
    if segment_frames <= 0 or n_frames <= segment_frames:
        return [(0, n_frames)]
    count = -(-n_frames // segment_frames)
    edges = np.linspace(0, n_frames, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def probe_video(job: VideoJob) -> VideoInfo:
    """Validate one video and count its frames (a CPU task; workers reuse the result).

    Raises:
        VideoError: the video is missing, corrupt, truncated or unreadable.
    """
    from lpray.data.video import validate_video

    with local_file(job.path) as path:
        return validate_video(path)


class TrackWorker:
    """Every member of an ensemble on one device, predicting segments of videos.

    Args:
        model_dirs: the members' model directories, in member order.
        settings: reader, chunk, precision and compile settings.
        device: "cpu", "cuda" (default: CUDA when present).
    """

    def __init__(
        self, model_dirs: list[str], settings: TrackSettings, device: str | None = None
    ) -> None:
        self.created_at = time.time()
        from lpray.inference.graphs import ChunkPasses
        from lpray.inference.network import compile_shared, load_network

        limit_torch_threads()
        self.settings = settings
        # model directories on an object store are fetched to this node (nodes share no disk)
        self.networks = [
            load_network(
                local_copy(d), device, precision=settings.precision, compile=settings.compile
            )
            for d in model_dirs
        ]
        if settings.compile:  # one graph for every member (compiled on the first chunk)
            compile_shared(self.networks)
        self.lock = threading.Lock()
        # its CUDA graphs serve every call (captured on the first chunk of each shape)
        self.passes = ChunkPasses(self.networks, settings.cuda_graphs)
        self.ready_at = time.time()

    def predict(
        self,
        job: VideoJob,
        start: int,
        stop: int,
        before: Callable[[str], None] | None = None,
        info: VideoInfo | None = None,
    ) -> dict[str, Any]:
        """Predict frames ``[start, stop)`` of one video with every member.

        ``info``: the video's :func:`probe_video` result (the file is validated again without
        it: a demux of the whole file and two decodes, ~0.5 s for a 1280x1024 video).

        Returns:
            ``xy`` (M, T, K, 2), ``confidence`` (M, T, K), ``start``, ``stop``, ``keypoints``,
            ``seconds``, ``first_chunk_seconds``, ``first_chunk_at``, ``decode_passes``,
            ``node_id``, ``worker``.

        Raises:
            VideoError: the video cannot be read to its end.
        """
        from lpray.inference.engine import predict_range

        if before is not None:
            before(job.path)
        s = self.settings
        with local_file(job.path) as path:
            result = predict_range(
                self.networks,
                path,
                start,
                stop,
                chunk_size=s.chunk_size,
                backend=s.backend,
                decoders=s.decoders,
                info=dataclasses.replace(info, path=path) if info is not None else None,
                lock=self.lock,
                passes=self.passes,
            )
        return {
            "xy": result.xy,
            "confidence": result.confidence,
            "start": result.start,
            "stop": result.stop,
            "keypoints": self.networks[0].keypoint_names,
            "seconds": result.seconds,
            "first_chunk_seconds": result.first_chunk_seconds,
            "first_chunk_at": result.first_chunk_at,
            "parts": result.parts,
            # start-up of the worker that did it: process up and models loaded at
            "worker_created_at": self.created_at,
            "worker_ready_at": self.ready_at,
            "decode_passes": result.decode_passes,
            "fps": info.fps if info is not None else None,
            "node_id": node_id(),
            "worker": os.getpid(),
        }


def stitch(segments: tuple[dict[str, Any], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate segment results in frame order, checking they tile the video exactly."""
    ordered = sorted(segments, key=lambda r: r["start"])
    position = 0
    for result in ordered:
        if result["start"] != position:
            raise RuntimeError(f"segments do not tile the video: gap or overlap at {position}")
        position = result["stop"]
    xy = np.concatenate([r["xy"] for r in ordered], axis=1)
    confidence = np.concatenate([r["confidence"] for r in ordered], axis=1)
    return xy, confidence


def _smooth(
    tables: list[pd.DataFrame], settings: TrackSettings
) -> tuple[pd.DataFrame, dict[str, float]]:
    """EKS over the members' predictions (multi-view when the model has view groups)."""
    from lpray.smooth.api import smooth_ensemble, smooth_ensemble_multiview

    sources = list(settings.members) or [f"member-{k}" for k in range(len(tables))]
    if settings.view_groups:
        return smooth_ensemble_multiview(
            tables, settings.view_groups, settings.smooth_param, sources=sources
        )
    return smooth_ensemble(tables, settings.smooth_param, sources=sources)


def _column_mean(table: pd.DataFrame, coords: tuple[str, ...]) -> float:
    values = table.loc[:, table.columns.get_level_values(2).isin(coords)].to_numpy(dtype=float)
    return float(np.nanmean(values)) if values.size else float("nan")


def _write_overlays(job: VideoJob, xy: np.ndarray, settings: TrackSettings) -> list[str]:
    from lpray.viz.overlay import write_frame_strip, write_labeled_video

    written = []
    if settings.overlay == "none":
        return written
    with local_file(job.path) as path:
        if settings.overlay in ("strip", "both"):
            write_frame_strip(path, xy, job.file(".labeled.png"), settings.strip_frames)
            written.append(job.file(".labeled.png"))
        if settings.overlay in ("video", "both"):
            write_labeled_video(path, xy, job.file(".labeled.mp4"))
            written.append(job.file(".labeled.mp4"))
    return written


def smooth_video(
    job: VideoJob, settings: TrackSettings, *segments: dict[str, Any]
) -> dict[str, Any]:
    """Stitch one video's segments; write member tables, EKS, overlays and ``done.json``.

    Args:
        job: the video.
        settings: smoothing and overlay settings (``members`` names the tables' scorers).
        *segments: the :meth:`TrackWorker.predict` results of every segment (Ray passes the
            values of the workers' object refs here, so this runs only after they all succeed).

    Returns:
        The video's ``done.json`` record (also its row in the corpus summary).
    """
    from lpray.io.tables import table_to_arrays

    started = time.perf_counter()
    xy, confidence = stitch(segments)
    names = segments[0]["keypoints"]
    members = list(settings.members) or [f"member-{k}" for k in range(len(xy))]
    tables = []
    files = []
    fps = segments[0].get("fps")
    for index, member in enumerate(members):
        table = arrays_to_table(xy[index], names, confidence[index], scorer=member)
        meta = PoseMeta(job.path, fps, f"ensemble member {member}")
        files += save_pose(table, job.file(f".rng={index}"), settings.formats, meta)
        tables.append(table)
    smoothed, params = _smooth(tables, settings)
    meta = PoseMeta(job.path, fps, f"EKS over {len(members)} members")
    files = [*save_pose(smoothed, job.file(".eks"), settings.formats, meta), *files]
    smoothed_xy, _ = table_to_arrays(smoothed)
    files += _write_overlays(job, smoothed_xy, settings)
    smooth_seconds = time.perf_counter() - started
    predict_seconds = sum(r["seconds"] for r in segments)
    here = node_id()
    predict_nodes = [r["node_id"] for r in segments]
    record = {
        "video": job.key,
        "path": job.path,
        "status": "done",
        "frames": int(len(smoothed)),
        "mean_confidence": _column_mean(smoothed, ("likelihood",)),
        "mean_posterior_var": _column_mean(smoothed, ("x_posterior_var", "y_posterior_var")),
        "seconds": predict_seconds + smooth_seconds,
        "predict_seconds": predict_seconds,
        "smooth_seconds": smooth_seconds,
        "error": None,
        "node_ids": ";".join(sorted(set(predict_nodes + [here]))),
        "predict_nodes": predict_nodes,
        "smooth_node": here,
        "segments": [[r["start"], r["stop"]] for r in sorted(segments, key=lambda r: r["start"])],
        "decode_passes": sum(r["decode_passes"] for r in segments),
        "first_chunk_at": min(r["first_chunk_at"] for r in segments),
        "worker_created_at": min(r["worker_created_at"] for r in segments),
        "worker_ready_at": min(r["worker_ready_at"] for r in segments),
        "readers": [r["parts"] for r in segments],
        "members": settings.members,
        "smooth_param": params,
        "multiview": bool(settings.view_groups),
        "files": files,
    }
    write_done(job, record)
    return record

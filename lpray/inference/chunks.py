"""Ordered prediction chunks of a video (or of one frame range of it), each frame decoded once.

The readers of :mod:`lpray.data.reader_registry` behind one iterator
(:func:`iter_prediction_chunks`), each through its prediction producer: PyAV on the CPU
(:func:`pyav_blocks`: any codec FFmpeg reads; on a GPU its raw 4:2:0 planes are uploaded and
converted there), DALI on the CPU (VP8/VP9/MJPEG) and on the GPU (:func:`dali_blocks`: NVDEC,
several pipelines in parallel). ``auto`` picks as
:func:`lpray.data.readers.choose_backend` does, plus PyAV for short clips on a GPU
(``DALI_MIN_PIXELS``).

A frame range ``[start, stop)`` is a *segment*: its chunks carry the same real neighbours as the
whole video's (context frames are decoded from outside the range where they exist), so the
predictions of consecutive segments, concatenated, equal those of the whole video.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lpray.data.clip_augment import augment_source
from lpray.data.dali_pipeline import build_checked, check_decoded_size
from lpray.data.geometry import to_frame_matrix
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD
from lpray.data.prefetch import prefetched
from lpray.data.reader_registry import VideoReader, get_reader
from lpray.data.readers import choose_backend, cuda_index, decoder_threads, local_video_path
from lpray.data.video import PyAVReader, VideoError, VideoInfo, validate_video
from lpray.data.warp import warp_normalise
from lpray.data.yuv import Yuv420Layout, yuv420_layout, yuv420_to_rgb

if TYPE_CHECKING:
    from nvidia.dali.pipeline import Pipeline

# Below this many decoded pixels (frames x width x height) "auto" predicts a video on a GPU with
# PyAV (FFmpeg's threaded CPU decoder, colour conversion on the GPU) instead of DALI: building DALI
# pipelines costs over a second, more than PyAV needs for a whole short clip. One H100 with 16
# CPU cores, ResNet-50 256x256 (bench/results/predict_cuda_crossover.json), 396x406 H.264:
# PyAV ~1,550-1,660 frames/s at any length; DALI 686 (994 frames), 2,280 (9,940), 2,860 (29,820),
# i.e. ~1.3 s of start-up then ~3,300 frames/s: equal at ~4,000 frames, 6.4e8 pixels.
DALI_MIN_PIXELS = 600_000_000
# DALI pipelines that decode one video in parallel on a GPU: one reaches ~2,500 frames/s on
# NVDEC for a 396x406 clip, 4 about 8,000 (DESIGN.md section 8); a 1280x1024 H.264 video decodes
# at 614 frames/s with one reader, 2,262 with 4, 3,722 with 8 (one H200).
DEFAULT_GPU_DECODERS = 4
# Frames in one decoder's segment when prediction decodes with several DALI pipelines: long
# enough that the seek to the segment's keyframe (GOPs are often ~250 frames) costs little, short
# enough that the blocks a decoder holds ahead of the consumer stay small (decoders x segment).
SEGMENT_FRAMES = 512


def short_for_dali(info: VideoInfo, frames: int | None = None) -> bool:
    """Whether ``frames`` (default: all) of a video are too few for DALI's start-up to pay off."""
    n = info.n_frames if frames is None else frames
    return n * info.width * info.height < DALI_MIN_PIXELS


def reader_for(info: VideoInfo, backend: str, device: str, frames: int | None = None) -> str:
    """The reader ``backend`` means for ``frames`` (default: all) of this video on ``device``:
    ``"pyav"`` or ``"dali"`` (``auto``: DALI on a GPU unless the frames are too few to repay
    its start-up, DALI on a CPU for VP8/VP9/MJPEG, else PyAV)."""
    kind = choose_backend(backend, [info], device)
    if kind == "dali-gpu" and backend == "auto" and short_for_dali(info, frames):
        kind = "pyav"
    return get_reader(kind).backend


def frame_span(n_frames: int, start: int, stop: int, context: int) -> tuple[int, int]:
    """The frames a segment ``[start, stop)`` decodes: itself plus ``context`` real neighbours
    each side where the video has them."""
    return max(0, start - context), min(n_frames, stop + context)


def iter_prediction_chunks(
    video: str,
    image_size: tuple[int, int],
    chunk_size: int = 96,
    context: int = 0,
    backend: str = "auto",
    device: str = "cpu",
    decoders: int | None = None,
    start: int = 0,
    stop: int | None = None,
    info: VideoInfo | None = None,
) -> Iterator[dict[str, Any]]:
    """Ordered, overlapping chunks that cover frames ``[start, stop)``, each frame decoded once.

    Every chunk has ``chunk_size + 2 * context`` frames: ``context`` frames before and after its
    ``chunk_size`` central frames. Indices before 0 or after the last frame repeat the edge frame,
    so each valid frame t has frames t - context .. t + context around it (real frames from
    outside ``[start, stop)`` where they exist). ``valid`` marks the central frames inside the
    range; over all chunks the valid frames are ``start .. stop - 1``, once each, in order (the
    last chunk is padded to full length with repeats, valid=False).

    Args:
        video: a local video path (validated first unless ``info`` is given).
        image_size: model input (H, W).
        chunk_size: central frames per chunk.
        context: frames of context on each side.
        backend: "auto", "pyav" or "dali".
        device: "cpu" or "cuda[:N]"; where tensors are delivered (and, for DALI, decoded).
        decoders: DALI pipelines decoding the range in parallel (None: ``DEFAULT_GPU_DECODERS``
            on a GPU, 1 on the CPU). Ignored by PyAV.
        start: first frame of the range.
        stop: end of the range (exclusive; None: the end of the video).
        info: the video's :func:`~lpray.data.video.validate_video` result, when already known.

    Returns:
        An iterator of dicts: ``frames`` float32 (L, 3, H, W) normalised; ``frame_index`` int64
        (L,) the frame each row shows (edge-clamped); ``valid`` bool (L,); ``to_frame`` float32
        (2, 3) (resize only); all on ``device``. On the host: ``valid_rows`` (first, stop), the
        contiguous rows that ``valid`` marks, and ``valid_frames`` int64, their frame numbers.
    """
    if chunk_size < 1 or context < 0:
        raise ValueError("chunk_size must be >= 1 and context >= 0")
    if decoders is not None and decoders < 1:
        raise ValueError(f"decoders must be >= 1, got {decoders}")
    path = local_video_path(video)
    info = info or validate_video(path)
    stop = info.n_frames if stop is None else stop
    if not 0 <= start < stop <= info.n_frames:
        raise ValueError(f"{path}: frame range [{start}, {stop}) not inside 0..{info.n_frames}")
    lo, hi = frame_span(info.n_frames, start, stop, context)
    reader = get_reader(choose_backend(reader_for(info, backend, device, hi - lo), [info], device))
    image_size = tuple(image_size)
    to_frame = to_frame_matrix(np.eye(2, 3), (info.height, info.width), image_size)
    to_frame_t = torch.from_numpy(to_frame).float().to(device)
    blocks = reader.producer("prediction")(
        reader, path, info, chunk_size, image_size, to_frame_t, device, decoders, lo, hi
    )
    return _assemble_chunks(blocks, (lo, hi), (start, stop), chunk_size, context, to_frame_t)


def pyav_blocks(
    reader: VideoReader,
    path: str,
    info: VideoInfo,
    chunk: int,
    image_size: tuple[int, int],
    to_frame: torch.Tensor,
    device: str,
    decoders: int | None,
    lo: int,
    hi: int,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Consecutive blocks of ``chunk`` frames from ``lo`` (the last one shorter), sequential
    decoding up to ``hi``.

    On a CPU the blocks are decoded, converted and warped in turn. On a GPU a background thread
    decodes ahead of the network (:func:`~lpray.data.prefetch.prefetched`), uploads each block's
    raw 4:2:0 planes (half the bytes of RGB) and converts and warps them there
    (:mod:`lpray.data.yuv`), so the CPU only runs FFmpeg's decoder; formats that module cannot
    convert exactly upload RGB.

    The signature is every reader's prediction producer's (:mod:`lpray.data.reader_registry`):
    blocks of normalised frames on ``device`` (warped by ``to_frame``'s resize) with their frame
    numbers. One sequential decoder: ``reader``, ``info`` and ``decoders`` choose nothing here.
    """
    del reader, info, decoders
    if torch.device(device).type != "cuda":
        yield from _pyav_decoded_blocks(path, chunk, image_size, to_frame, device, None, lo, hi)
        return
    layout = yuv420_layout(path)
    source = _pyav_decoded_blocks(path, chunk, image_size, to_frame, device, layout, lo, hi)
    stream = prefetched([source], device, depth=3)
    with contextlib.closing(stream):
        yield from stream


def _pyav_decoded_blocks(
    path: str,
    chunk: int,
    image_size: tuple[int, int],
    to_frame: torch.Tensor,
    device: str,
    layout: Yuv420Layout | None,
    lo: int,
    hi: int,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Decode, upload (from pinned memory on a GPU), convert to RGB when given planar ``layout``,
    warp and normalise."""
    pin = torch.device(device).type == "cuda"
    with PyAVReader(path) as reader:
        for first in range(lo, hi, chunk):
            count = min(chunk, hi - first)
            block = reader.read(first, count, planes=layout is not None)
            host = torch.from_numpy(block)
            raw = (host.pin_memory() if pin else host).to(device, non_blocking=pin)
            rgb = yuv420_to_rgb(raw, layout) if layout is not None else raw
            yield warp_normalise(rgb, to_frame, image_size), np.arange(first, first + count)


def prediction_segments(
    n_frames: int, chunk: int, decoders: int, start: int = 0
) -> list[tuple[int, int]]:
    """Cut frames ``start .. start + n_frames`` into consecutive pieces of whole chunks for
    ``decoders`` pipelines.

    Pieces are dealt round-robin (piece j to decoder j mod ``decoders``), so each decoder reads
    ahead one piece while the consumer works through the others in order. Each piece has at most
    ``SEGMENT_FRAMES`` frames (rounded up to a whole chunk), and there are at least ``decoders``
    of them when the range has that many chunks.

    Returns:
        ``(first, stop)`` frame ranges (stop exclusive) covering the range in order.
    """
    n_blocks = math.ceil(n_frames / chunk)
    blocks_per_piece = max(
        1, min(math.ceil(SEGMENT_FRAMES / chunk), math.ceil(n_blocks / decoders))
    )
    if decoders == 1:
        blocks_per_piece = n_blocks  # one sequential reader: no seeks at all
    frames = blocks_per_piece * chunk
    end = start + n_frames
    return [(first, min(first + frames, end)) for first in range(start, end, frames)]


def dali_blocks(
    reader: VideoReader,
    path: str,
    info: VideoInfo,
    chunk: int,
    image_size: tuple[int, int],
    to_frame: torch.Tensor,
    device: str,
    decoders: int | None,
    lo: int,
    hi: int,
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Consecutive blocks of ``chunk`` frames of ``[lo, hi)`` from ``decoders`` DALI pipelines
    (None: ``DEFAULT_GPU_DECODERS`` on a GPU, 1 on the CPU) on ``reader.decodes_on``.

    One pipeline reads a video at a few thousand frames/s on a GPU, below what the network
    consumes. Several pipelines, each drained by its own thread, decode in parallel (NVDEC has
    capacity for many streams; DESIGN.md section 8): the range is cut into pieces
    (:func:`prediction_segments`), decoder ``p`` reads pieces ``p, p + n, ...`` through a
    frame-range file list, and blocks are handed out in frame order. The tail is padded by the
    reader (``pad_mode="edge"``) because the experimental reader otherwise drops it.
    """
    from lpray.data import dali_pipeline as dp  # noqa: PLC0415

    del path, to_frame  # DALI opens info.path and resizes inside its graph
    gpu = reader.decodes_on == "gpu"
    decoders = decoders or (DEFAULT_GPU_DECODERS if gpu else 1)
    pieces = prediction_segments(hi - lo, chunk, max(1, decoders), lo)
    n_pipes = min(max(1, decoders), len(pieces))
    folder = tempfile.TemporaryDirectory(prefix="lpray-dali-predict-")
    pipes = []
    for p in range(n_pipes):
        mine = pieces[p::n_pipes]
        sub = os.path.join(folder.name, str(p))
        os.makedirs(sub)
        pipe = dp.build_video_pipeline(
            reader_device="gpu" if gpu else "cpu",
            device_id=cuda_index(device) if gpu else None,
            batch_size=1,
            sequence_length=chunk,
            image_size=image_size,
            augment_source=augment_source(np.random.default_rng(0), None, image_size, 1),
            mean=[255.0 * m for m in IMAGENET_MEAN],
            std=[255.0 * s for s in IMAGENET_STD],
            file_list=dp.write_file_list(
                [(0, first, stop) for first, stop in mine], [info.path], sub
            ),
            step=chunk,
            pad_tail=True,
            num_threads=decoder_threads() if n_pipes == 1 else 1,
        )
        expected = sum(math.ceil((stop - first) / chunk) for first, stop in mine)
        pipes.append(
            build_checked(
                pipe,
                expected,
                lambda found, expected=expected: (
                    f"{info.path}: DALI finds {found} chunks of {chunk} frames, lpray's frame "
                    f"index {info.n_frames} frames ({expected} chunks); the decoders disagree on "
                    f"the frame count"
                ),
            )
        )

    size = np.array([[info.height, info.width]])

    def decoded_blocks(pipe: Pipeline) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        for batch in dp.make_iterator(pipe, finite=True):
            item = batch[0]
            check_decoded_size(
                item["decoded_shape"], size, [info.path], torch.zeros(1, dtype=torch.long)
            )
            yield item["frames"][0], item["frame_index"][0].cpu().numpy().astype(np.int64)

    # Piece j is decoder j mod n's; its blocks are taken from that decoder in a row. Each
    # decoder may run one piece ahead of the consumer (and no further: bounded memory).
    schedule = [
        j % n_pipes
        for j, (first, stop) in enumerate(pieces)
        for _ in range(math.ceil((stop - first) / chunk))
    ]
    blocks_per_piece = math.ceil((pieces[0][1] - pieces[0][0]) / chunk)
    # several pipelines: each may run a whole piece ahead (the consumer reads pieces in turn);
    # one pipeline read in order needs only a few blocks ahead (not the whole range in memory)
    depth = blocks_per_piece + 1 if n_pipes > 1 else 3
    try:
        stream = prefetched(
            [decoded_blocks(pipe) for pipe in pipes],
            device if gpu else "cpu",
            depth=depth,
            schedule=schedule,
        )
        with contextlib.closing(stream):
            for frames, index in stream:
                yield frames.to(device), index
    finally:
        del pipes
        folder.cleanup()


def _assemble_chunks(
    blocks: Iterable[tuple[torch.Tensor, np.ndarray]],
    span: tuple[int, int],
    segment: tuple[int, int],
    chunk: int,
    context: int,
    to_frame: torch.Tensor,
) -> Iterator[dict[str, Any]]:
    """Build context-padded chunks of ``segment`` from consecutive decoded blocks of ``span``,
    keeping only the blocks a chunk still needs (each frame is decoded and preprocessed once).

    Block ``b`` holds frames ``lo + b * chunk ..``; rows outside the decoded span repeat its edge
    frames (the video's own edges when the span reaches them)."""
    lo, hi = span
    start, stop = segment
    block_iter = iter(blocks)
    cache: dict[int, torch.Tensor] = {}
    read = 0
    device = to_frame.device
    for first in range(start, stop, chunk):
        raw = np.arange(first - context, first + chunk + context)
        wanted = np.clip(raw, lo, hi - 1)
        first_block, last_block = (
            (int(wanted.min()) - lo) // chunk,
            (int(wanted.max()) - lo) // chunk,
        )
        while read <= last_block:
            frames, index = next(block_iter)
            begin = lo + read * chunk
            expected = np.minimum(np.arange(begin, begin + len(index)), hi - 1)
            if not np.array_equal(index, expected):
                raise VideoError(
                    f"decoder returned frames {index[:3]}...{index[-3:]} for block {read}, "
                    f"expected {expected[:3]}...{expected[-3:]}"
                )
            cache[read] = frames
            read += 1
        for b in [b for b in cache if b < first_block]:
            del cache[b]
        window = _gather_rows(cache, wanted - lo, chunk)
        valid = (raw >= first) & (raw < min(first + chunk, stop))
        rows = np.flatnonzero(valid)
        yield {
            "frames": window.to(device),
            "frame_index": torch.from_numpy(wanted).long().to(device),
            "valid": torch.from_numpy(valid).to(device),
            "to_frame": to_frame,
            # the same facts on the host (valid rows are one contiguous run), so a GPU consumer
            # can slice and label its outputs without reading anything back from the device
            "valid_rows": (int(rows[0]), int(rows[-1]) + 1),
            "valid_frames": wanted[valid].astype(np.int64),
        }


def _gather_rows(cache: dict[int, torch.Tensor], wanted: np.ndarray, chunk: int) -> torch.Tensor:
    """Rows ``wanted`` (frame offsets into the decoded span) from the cached blocks, copied one
    run at a time: a run is either consecutive frames inside one block (one slice copy) or one
    frame repeated (edge padding, one broadcast copy). Much cheaper than a gather over a
    concatenation."""
    sample = next(iter(cache.values()))
    out = torch.empty((len(wanted), *sample.shape[1:]), dtype=sample.dtype, device=sample.device)
    row = 0
    while row < len(wanted):
        block, offset = divmod(int(wanted[row]), chunk)
        end = row + 1
        if end < len(wanted) and wanted[end] == wanted[row]:
            while end < len(wanted) and wanted[end] == wanted[row]:
                end += 1
            out[row:end] = cache[block][offset]
        else:
            while (
                end < len(wanted)
                and wanted[end] == wanted[end - 1] + 1
                and int(wanted[end]) // chunk == block
            ):
                end += 1
            out[row:end] = cache[block][offset : offset + end - row]
        row = end
    return out

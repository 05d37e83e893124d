"""The DALI video pipeline: decode -> affine warp to the model input -> photometric -> normalise.

One pipeline definition serves training (random contiguous sequences from a shard's frame ranges,
augmented) and prediction (consecutive blocks of one video, resize only), on CPU
(``device_id=None``: VP8, VP9 and MJPEG only) and on GPU (NVDEC: also H.264, HEVC, AV1, MPEG-4).
The only difference between CPU and GPU is the reader's ``device``; every later operator follows
its input's device.

The geometry is fed, never sampled inside DALI: the caller passes one 2x3 matrix per sample
through an external source (the augmentation in model-input pixels, from
:func:`lpray.data.clip_augment.draw_clips`, written in DALI's pixel-corner convention).
The pipeline multiplies it by the per-sample frame/model scale, which only DALI knows once it has
read the frame, and warps with it. The matrix comes back out of the pipeline so the caller
computes ``to_frame`` with the same function the PyAV backend uses.

Sharding is deliberate: lpray cuts the data into per-worker frame ranges itself
(:func:`lpray.data.sharding.shard_ranges`) and hands each worker's reader only its own ranges
through a ``file_list`` in frame units, so the reader runs with ``num_shards=1``. DALI's own
sharding shuffles the list of all sequences with a hard-coded seed and deals it out, which puts
every worker on every video (a decoder rebuilt at almost every sample) and cannot be reproduced by
the PyAV backend; lpray's partition gives whole videos to workers when there are enough of them
and is identical for both backends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lpray.data.video import VideoError, VideoInfo

if TYPE_CHECKING:
    import torch
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

# Codecs each DALI decoder reads (DESIGN.md section 6; DALI 2.4 docs).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "mjpeg", "av1", "mpeg4"})
# NVDEC decodes 4:2:0 on every supported GPU; other chroma layouts depend on the GPU generation.
DALI_GPU_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "nv12"})

READER_NAME = "reader"
# Sequence descriptors (not frames) held by the reader's shuffle buffer; large enough to mix a
# shard thoroughly, small enough to stay a few MB.
MAX_SHUFFLE_BUFFER = 4096

AugmentSource = Callable[[], tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]]


def dali_available() -> bool:
    """True when ``nvidia.dali`` imports (it does on machines without a GPU)."""
    try:
        import nvidia.dali  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def dali_support_problem(info: VideoInfo, device: str) -> str | None:
    """Why DALI on ``device`` ("cpu" or "gpu") cannot decode this video, or None if it can."""
    if device == "cpu":
        if info.codec not in DALI_CPU_CODECS:
            return (
                f"DALI's CPU decoder reads only VP8, VP9 and MJPEG, not {info.codec}; use "
                f"backend='pyav', a GPU, or re-encode to VP9 "
                f"(ffmpeg -i IN -c:v libvpx-vp9 -crf 20 -b:v 0 OUT.webm)"
            )
        return None
    if info.codec not in DALI_GPU_CODECS:
        return f"DALI's GPU decoder (NVDEC) does not read {info.codec}; use backend='pyav'"
    if info.pix_fmt not in DALI_GPU_PIX_FMTS:
        return (
            f"NVDEC decodes 8-bit 4:2:0 video, not {info.pix_fmt}; use backend='pyav' or "
            f"re-encode with -pix_fmt yuv420p"
        )
    return None


def write_file_list(
    ranges: Sequence[tuple[int, int, int]], videos: Sequence[str], folder: str | os.PathLike
) -> str:
    """Write a DALI ``file_list`` (``path label start stop``, frame units) into ``folder``.

    ``ranges`` holds ``(video_index, start, stop)`` triples (stop exclusive).

    The label is the video's index in ``videos``, so the reader's label output is the loader's
    ``video_index``. DALI splits each line on whitespace, so a path containing whitespace is
    replaced by a symlink in ``folder`` (which must outlive the pipeline: DALI reopens files by
    name while it runs).
    """
    lines = []
    for video_index, start, stop in ranges:
        path = os.path.abspath(videos[video_index])
        if any(ch.isspace() for ch in path):
            link = os.path.join(folder, f"video{video_index}{os.path.splitext(path)[1]}")
            if not os.path.lexists(link):
                os.symlink(path, link)
            path = link
        lines.append(f"{path} {video_index} {start} {stop}\n")
    list_path = os.path.join(folder, "file_list.txt")
    with open(list_path, "w") as handle:
        handle.writelines(lines)
    return list_path


def build_video_pipeline(
    *,
    reader_device: str,
    device_id: int | None,
    batch_size: int,
    sequence_length: int,
    image_size: tuple[int, int],
    augment_source: AugmentSource,
    mean: Sequence[float],
    std: Sequence[float],
    file_list: str | None = None,
    filenames: Sequence[str] | None = None,
    step: int = 1,
    random_shuffle: bool = False,
    shuffle_buffer: int = 1,
    pad_tail: bool = False,
    photometric: bool = False,
    seed: int = 0,
    num_threads: int = 2,
    prefetch_queue_depth: int = 2,
) -> Pipeline:
    """Build (but do not start) the DALI pipeline.

    Args:
        reader_device: "cpu" or "gpu"; where the video decodes and every later step runs.
        device_id: the CUDA device (a Ray Train worker's local device); None for a CPU pipeline.
        batch_size: sequences per batch.
        sequence_length: frames per sequence.
        image_size: model input (H, W).
        augment_source: called once per batch, in batch order; returns three lists of
            ``batch_size`` arrays: the 2x3 float32 model-input augmentation matrix in DALI's
            pixel-corner convention, the contrast factor (shape (1,)) and the brightness shift
            in grey levels (shape (1,)).
        mean: per-channel mean in grey levels (0..255).
        std: per-channel standard deviation in grey levels.
        file_list: DALI file list in frame units (training: the shard's ranges); exclusive with
            ``filenames``.
        filenames: whole videos (prediction); labels are their positions.
        step: frames between the starts of consecutive sequences (1: every start is a sample).
        random_shuffle: shuffle sequences (training) or keep file order (prediction).
        shuffle_buffer: the reader's ``initial_fill`` when shuffling.
        pad_tail: emit the last partial sequence padded by repeating the last frame
            (``pad_mode="edge"``), so prediction covers the whole video.
        photometric: apply contrast/brightness (augmentation); off for prediction.
        seed: the reader's shuffle seed (derive it from the run seed and the shard).
        num_threads: CPU worker threads of the pipeline.
        prefetch_queue_depth: batches decoded ahead.

    Returns:
        The pipeline; outputs ``frames`` (B, S, 3, H, W) float32 normalised, ``video_index``
        (B, 1) int32, ``frame_index`` (B, S) int32 (the padded tail repeats the last index),
        ``augment`` (B, 2, 3) float32 (the matrices that were fed), ``decoded_shape`` (B, 4)
        int64 (F, H, W, C of the decoded sequence, to check against the probed frame size).
    """
    from nvidia.dali import fn, pipeline_def, types  # noqa: PLC0415
    from nvidia.dali import math as dmath  # noqa: PLC0415

    if (file_list is None) == (filenames is None):
        raise ValueError("give exactly one of file_list and filenames")
    height, width = image_size
    reader_args: dict = {
        "device": reader_device,
        "name": READER_NAME,
        "sequence_length": sequence_length,
        "step": step,
        "enable_frame_num": "sequence",
        "random_shuffle": random_shuffle,
        "seed": int(seed),
        # lpray shards itself (see the module docstring); the reader sees one shard.
        "shard_id": 0,
        "num_shards": 1,
        "stick_to_shard": True,
        # The training loader is infinite and prediction reads batch_size=1, so the last batch
        # needs no padding by the reader.
        "pad_last_batch": False,
        "pad_mode": "edge" if pad_tail else "none",
        "image_type": types.RGB,
    }
    if random_shuffle:
        reader_args["initial_fill"] = int(max(1, shuffle_buffer))
    if file_list is not None:
        reader_args.update(
            file_list=file_list, file_list_format="frames", file_list_include_end=False
        )
    else:
        reader_args.update(filenames=list(filenames), labels=list(range(len(filenames))))

    @pipeline_def
    def video_pipeline():
        video, label, frame_num = fn.experimental.readers.video(**reader_args)
        if photometric:
            corner_affine, contrast, shift = fn.external_source(
                source=augment_source, num_outputs=3, batch=True, dtype=types.FLOAT
            )
        else:  # feed only the matrices (DALI warns about unused external-source outputs)
            corner_affine = fn.external_source(
                source=lambda: augment_source()[0], batch=True, dtype=types.FLOAT
            )
        shape = video.shape()  # (F, H, W, C) on the CPU even for GPU video
        scale_x = fn.cast(shape[2], dtype=types.FLOAT) / float(width)
        scale_y = fn.cast(shape[1], dtype=types.FLOAT) / float(height)
        # Corner convention: model pixel p -> frame pixel diag(sx, sy) @ (A @ p); the scale has
        # no offset in this convention (it is the align_corners=False resize).
        matrix = fn.transforms.combine(
            corner_affine, fn.transforms.scale(scale=fn.stack(scale_x, scale_y))
        )
        frames = fn.warp_affine(
            video,
            matrix=matrix,
            size=[height, width],
            dtype=types.FLOAT,
            interp_type=types.INTERP_LINEAR,
            # black outside the frame, like grid_sample(padding_mode="zeros") in the PyAV
            # backend and the labeled-frame augmentation
            fill_value=0.0,
        )
        if photometric:
            frames = fn.brightness_contrast(
                frames, contrast=contrast, contrast_center=128.0, brightness_shift=shift
            )
            frames = dmath.clamp(frames, 0.0, 255.0)
        frames = fn.crop_mirror_normalize(
            frames,
            dtype=types.FLOAT,
            output_layout="FCHW",
            mean=[float(m) for m in mean],
            std=[float(s) for s in std],
        )
        return frames, label, frame_num, corner_affine, shape

    return video_pipeline(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=int(seed),
        prefetch_queue_depth=prefetch_queue_depth,
    )


OUTPUT_MAP = ["frames", "video_index", "frame_index", "augment", "decoded_shape"]


def make_iterator(pipeline: Pipeline, finite: bool) -> DALIGenericIterator:
    """Wrap a built pipeline in DALI's PyTorch iterator.

    Args:
        pipeline: from :func:`build_video_pipeline`, already built.
        finite: True for prediction: stop after one pass over the reader
            (``reader_name`` gives the size; ``LastBatchPolicy.PARTIAL`` returns the last batch
            without duplicated samples). False for training: no size, so it never stops (the
            reader wraps around its shard).
    """
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy  # noqa: PLC0415

    if finite:
        return DALIGenericIterator(
            [pipeline],
            OUTPUT_MAP,
            reader_name=READER_NAME,
            last_batch_policy=LastBatchPolicy.PARTIAL,
            auto_reset=False,
        )
    return DALIGenericIterator(
        [pipeline], OUTPUT_MAP, size=-1, last_batch_policy=LastBatchPolicy.FILL, auto_reset=True
    )


def build_checked(pipe: Pipeline, expected: int, problem: Callable[[int], str]) -> Pipeline:
    """Build ``pipe`` and check that its reader sees ``expected`` samples, the count lpray's own
    frame index gives; a mismatch means the decoders disagree about a video's frames."""
    pipe.build()
    found = pipe.epoch_size(READER_NAME)
    if found != expected:
        raise VideoError(f"{problem(found)}: re-encode the video or use backend='pyav'")
    return pipe


def check_decoded_size(
    decoded_shape: torch.Tensor, sizes: np.ndarray, paths: list[str], video_index: torch.Tensor
) -> None:
    """Refuse frames whose decoded size differs from the probed size ``to_frame`` assumes (a
    decoder that does not crop coded padding would otherwise shift every prediction)."""
    decoded = decoded_shape.cpu().numpy()[:, 1:3]
    bad = np.flatnonzero(np.any(decoded != sizes, axis=1))
    if len(bad):
        b = int(bad[0])
        raise VideoError(
            f"{paths[int(video_index[b])]}: DALI decodes {decoded[b][1]}x{decoded[b][0]} frames, "
            f"the file declares {sizes[b][1]}x{sizes[b][0]}; use backend='pyav'"
        )

"""Unlabeled-video loaders for training: random augmented sequences, and the pieces shared with
prediction (backend choice, geometry, the DALI build checks, the prefetching drain). Prediction's
ordered chunks are :mod:`lpray.inference.chunks`.

Three backends chosen by a config string:

- ``"pyav"``: CPU decoding with :class:`lpray.data.video.PyAVReader` (any codec FFmpeg reads),
  warped on ``device`` with ``torch.nn.functional.grid_sample`` (``interpolate`` when the
  matrix is a plain resize: the same samples, faster).
- ``"dali"``: :mod:`lpray.data.dali_pipeline`; on a GPU any codec NVDEC reads, on the CPU only
  VP8/VP9/MJPEG.
- ``"auto"``: DALI on the GPU when ``device`` is CUDA and NVDEC reads every video (for prediction
  only when the video is long enough to repay DALI's start-up,
  :func:`lpray.inference.chunks.short_for_dali`); else DALI
  on the CPU when every video is VP8/VP9/MJPEG; else PyAV. (Deliberately keyed on ``device``, not on
  whether a GPU exists: a caller that asks for CPU tensors gets CPU decoding.)

Geometry is one set of numpy functions for both backends. :func:`sample_augmentation` draws a
model-input affine ``A`` (rotation, scale, translation about the image centre) plus contrast and
brightness; :func:`to_frame_matrix` composes ``A`` with the resize into ``to_frame``, the 2x3
matrix from model-input pixel coordinates to original frame pixel coordinates (centre of pixel
column j is x = j). PyAV warps with ``to_frame`` directly; DALI receives ``A`` (pixel-corner
convention) and multiplies in the resize once it knows the frame size, which is the same matrix.
Both sample bilinearly and fill outside the frame with black (like lpray.data.augment for
labeled frames and imgaug's default in Lightning Pose), so their outputs agree to decoder
rounding.

Sharding (:func:`shard_ranges`) is lpray's own and identical for both backends: with at least as
many videos as shards, shard k takes whole videos k, k + n, k + 2n, ...; otherwise every video is
cut into n contiguous frame ranges and shard k takes range k of each. Shards never share a frame;
each shard's stream is deterministic given (seed, shard_id). The augmentation stream depends only
on (seed, shard_id) and is the same for both backends; the order in which sequences are drawn is
backend-specific (PyAV: uniform over all sequence starts; DALI: its reader's seeded shuffle).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from lpray.data.video import PyAVReader, VideoError, VideoInfo, validate_video
from lpray.errors import UserError
from lpray.io import storage
from lpray.options import BACKENDS

if TYPE_CHECKING:
    from nvidia.dali.pipeline import Pipeline

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Open PyAV readers kept per training loader; older ones are closed.
_MAX_OPEN_READERS = 8
# Frames warped per call in the PyAV backend, bounding its float32 working memory (a 96-frame
# prediction block is one slice).
_WARP_SLICE = 128


class FrameRange(NamedTuple):
    """Frames ``[start, stop)`` of ``videos[video_index]``."""

    video_index: int
    start: int
    stop: int


@dataclass(frozen=True)
class AugmentSpec:
    """Ranges of the random augmentation applied to each training sequence (one draw per sequence,
    so the temporal losses see a consistent clip).

    Attributes:
        rotation_deg: maximum absolute rotation, degrees.
        scale: (min, max) zoom factor; > 1 enlarges the content.
        translate: maximum absolute shift as a fraction of the model input width/height.
        brightness: maximum absolute brightness shift as a fraction of the grey range.
        contrast: (min, max) contrast factor about mid-grey.
    """

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)


@dataclass(frozen=True)
class Augmentation:
    """Drawn augmentation parameters for ``n`` sequences.

    Attributes:
        affine: (n, 2, 3) map from augmented model-input pixels to un-augmented (resized) model
            input pixels, centre convention; it moves pixels.
        contrast: (n,) contrast factors about grey level 128.
        brightness: (n,) shifts as fractions of the 0..255 range.
    """

    affine: np.ndarray
    contrast: np.ndarray
    brightness: np.ndarray


def identity_augmentation(n: int) -> Augmentation:
    """No geometric or photometric change (prediction, or training without augmentation)."""
    affine = np.broadcast_to(np.eye(2, 3), (n, 2, 3)).copy()
    return Augmentation(affine=affine, contrast=np.ones(n), brightness=np.zeros(n))


def sample_augmentation(
    rng: np.random.Generator, spec: AugmentSpec, image_size: tuple[int, int], n: int
) -> Augmentation:
    """Draw ``n`` augmentations; the one function both backends use.

    The content transform is: a point u of the resized frame appears at
    ``c + s R(theta) (u - c) + t`` in the model input (c the image centre). The returned affine
    is its inverse, the sampling map the warp needs.
    """
    height, width = image_size
    theta = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg, n))
    scale = rng.uniform(spec.scale[0], spec.scale[1], n)
    shift = rng.uniform(-spec.translate, spec.translate, (n, 2)) * np.array([width, height])
    contrast = rng.uniform(spec.contrast[0], spec.contrast[1], n)
    brightness = rng.uniform(-spec.brightness, spec.brightness, n)
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    cos, sin = np.cos(theta), np.sin(theta)
    # inverse rotation/scale: (1/s) R(-theta)
    linear = (
        np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], -2) / scale[:, None, None]
    )
    offset = centre - np.einsum("nij,nj->ni", linear, centre + shift)
    affine = np.concatenate([linear, offset[:, :, None]], axis=2)
    return Augmentation(affine=affine, contrast=contrast, brightness=brightness)


def _homogeneous(m: np.ndarray) -> np.ndarray:
    bottom = np.broadcast_to(np.array([0.0, 0.0, 1.0]), m.shape[:-2] + (1, 3))
    return np.concatenate([m, bottom], axis=-2)


def to_frame_matrix(
    affine: np.ndarray, frame_size: np.ndarray | tuple[int, int], image_size: tuple[int, int]
) -> np.ndarray:
    """Compose the augmentation with the resize: model-input pixel -> original frame pixel.

    Args:
        affine: (..., 2, 3) from :func:`sample_augmentation` (identity for resize only).
        frame_size: (height, width) of the original frame, or (..., 2) per matrix.
        image_size: model input (height, width).

    Returns:
        (..., 2, 3) ``to_frame``, centre convention: the resize maps x to
        ``(x + 0.5) * W_frame / W_model - 0.5`` (the align_corners=False resize).
    """
    frame = np.asarray(frame_size, dtype=np.float64)
    sx = frame[..., 1] / image_size[1]
    sy = frame[..., 0] / image_size[0]
    resize = np.zeros(np.broadcast_shapes(np.shape(sx), np.shape(sy)) + (2, 3))
    resize[..., 0, 0] = sx
    resize[..., 0, 2] = 0.5 * sx - 0.5
    resize[..., 1, 1] = sy
    resize[..., 1, 2] = 0.5 * sy - 0.5
    return (_homogeneous(resize) @ _homogeneous(np.asarray(affine, np.float64)))[..., :2, :]


def to_corner_convention(matrix: np.ndarray) -> np.ndarray:
    """Rewrite a centre-convention 2x3 map for DALI, whose pixel (0, 0) spans [0, 1)."""
    m = np.array(matrix, dtype=np.float64)
    linear = m[..., :2]
    m[..., 2] = m[..., 2] + 0.5 - 0.5 * linear.sum(axis=-1)
    return m


def from_corner_convention(matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_corner_convention`."""
    m = np.array(matrix, dtype=np.float64)
    linear = m[..., :2]
    m[..., 2] = m[..., 2] - 0.5 + 0.5 * linear.sum(axis=-1)
    return m


def _is_plain_resize(
    to_frame: torch.Tensor, frame_size: tuple[int, int], image_size: tuple[int, int]
) -> bool:
    """True when every matrix is exactly the align_corners=False resize (no augmentation) and it
    does not enlarge the frame: then every sample lies inside the frame, and ``F.interpolate``
    takes the same samples as the black-filled ``grid_sample``."""
    if frame_size[0] < image_size[0] or frame_size[1] < image_size[1]:
        return False
    resize = to_frame_matrix(np.eye(2, 3), frame_size, image_size)
    return bool(torch.allclose(to_frame.double().cpu(), torch.from_numpy(resize), atol=1e-6))


def _sampling_grid(
    m: torch.Tensor, frame_size: tuple[int, int], image_size: tuple[int, int]
) -> torch.Tensor:
    """``grid_sample`` grid (align_corners=False) of the frame positions ``m`` sends each
    model-input pixel centre to."""
    (frame_h, frame_w), (height, width) = frame_size, image_size
    ys, xs = torch.meshgrid(
        torch.arange(height, device=m.device, dtype=torch.float32),
        torch.arange(width, device=m.device, dtype=torch.float32),
        indexing="ij",
    )
    src_x = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys + m[:, 0, 2, None, None]
    src_y = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys + m[:, 1, 2, None, None]
    return torch.stack([(2 * src_x + 1) / frame_w - 1, (2 * src_y + 1) / frame_h - 1], dim=-1)


def warp_normalise(
    frames: torch.Tensor,
    to_frame: torch.Tensor,
    image_size: tuple[int, int],
    contrast: torch.Tensor | None = None,
    brightness: torch.Tensor | None = None,
) -> torch.Tensor:
    """The PyAV backend's twin of the DALI graph: warp, photometric, ImageNet-normalise, CHW.

    Args:
        frames: (N, H_frame, W_frame, 3) uint8 RGB.
        to_frame: (N, 2, 3) or (2, 3) model-input pixel -> frame pixel, centre convention.
        image_size: model input (H, W).
        contrast: (N,) factors about grey 128, or None.
        brightness: (N,) shifts as fractions of the grey range, or None.

    Returns:
        (N, 3, H, W) float32 on ``frames.device``.
    """
    n, frame_h, frame_w, _ = frames.shape
    height, width = image_size
    device = frames.device
    m = to_frame.to(device=device, dtype=torch.float32).expand(n, 2, 3)
    plain = _is_plain_resize(m, (frame_h, frame_w), image_size)
    grid = None if plain else _sampling_grid(m, (frame_h, frame_w), image_size)
    pieces = []
    for lo in range(0, n, _WARP_SLICE):
        hi = min(n, lo + _WARP_SLICE)
        source = frames[lo:hi].permute(0, 3, 1, 2).float()
        if plain:  # same samples as the grid below, about 3x faster on CPU
            pieces.append(
                F.interpolate(source, size=(height, width), mode="bilinear", align_corners=False)
            )
        else:
            pieces.append(
                F.grid_sample(
                    source, grid[lo:hi], mode="bilinear", padding_mode="zeros", align_corners=False
                )
            )
    out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if contrast is not None and brightness is not None:
        c = contrast.to(device=device, dtype=torch.float32).view(n, 1, 1, 1)
        b = brightness.to(device=device, dtype=torch.float32).view(n, 1, 1, 1)
        out = out.sub_(128.0).mul_(c).add_(128.0 + 255.0 * b).clamp_(0.0, 255.0)
    # (x - mean) / std in place, as x * (1 / std) - mean / std: no full-size temporaries
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
    return out.mul_(1.0 / std).sub_(mean / std)


def shard_ranges(
    n_frames: Sequence[int], sequence_length: int, shard_id: int, num_shards: int
) -> list[FrameRange]:
    """The frame ranges shard ``shard_id`` of ``num_shards`` reads (see the module docstring).

    Ranges shorter than ``sequence_length`` are dropped.

    Raises:
        ValueError: bad shard arguments, or the shard gets no range long enough for a sequence.
    """
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in 0..{num_shards - 1}")
    if len(n_frames) >= num_shards:
        ranges = [FrameRange(v, 0, int(n)) for v, n in enumerate(n_frames)][shard_id::num_shards]
    else:
        ranges = [
            FrameRange(v, n * shard_id // num_shards, n * (shard_id + 1) // num_shards)
            for v, n in enumerate(int(n) for n in n_frames)
        ]
    ranges = [r for r in ranges if r.stop - r.start >= sequence_length]
    if not ranges:
        raise ValueError(
            f"shard {shard_id} of {num_shards} has no frame range of at least {sequence_length} "
            f"frames (video lengths {list(n_frames)}); use fewer shards or shorter sequences"
        )
    return ranges


def local_video_path(path: str | os.PathLike) -> str:
    if not storage.is_local(path):
        raise VideoError(f"{path}: videos must be local files (copy remote videos first)")
    return str(storage.local_path(path))


class DaliMissing(UserError, ImportError):
    """The DALI reader was asked for where DALI is not installed."""


def choose_backend(backend: str, infos: Sequence[VideoInfo], device: str) -> str:
    """Resolve a backend string to ``"pyav"``, ``"dali-cpu"`` or ``"dali-gpu"``.

    Raises:
        ValueError: unknown backend, or a CUDA device without CUDA.
        VideoError: ``backend="dali"`` and DALI cannot decode one of the videos (named).
        DaliMissing: ``backend="dali"`` without DALI installed.
    """
    from lpray.data.dali_pipeline import dali_available, dali_support_problem  # noqa: PLC0415

    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    wants_gpu = torch.device(device).type == "cuda"
    if wants_gpu and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if backend == "pyav":
        return "pyav"
    if not dali_available():
        if backend == "dali":
            raise DaliMissing(
                "backend='dali' (data.video_backend / --backend): DALI is not installed; "
                "pip install nvidia-dali-cuda120, or use backend 'auto' or 'pyav'"
            )
        return "pyav"
    first_problem = None
    for dali_device in (["gpu"] if wants_gpu else []) + ["cpu"]:
        problems = [(i.path, dali_support_problem(i, dali_device)) for i in infos]
        problems = [(p, why) for p, why in problems if why is not None]
        if not problems:
            return f"dali-{dali_device}"
        first_problem = first_problem or problems[0]
    if backend == "dali":
        raise VideoError(f"{first_problem[0]}: {first_problem[1]}")
    return "pyav"


def cuda_index(device: str) -> int:
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def _dali_seed(seed: int, shard_id: int, reader: int = 0) -> int:
    key = [seed, shard_id, 2] + ([reader] if reader else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _augment_rng(seed: int, shard_id: int, reader: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, shard_id, 1] + ([reader] if reader else []))


def _draw(
    rng: np.random.Generator, spec: AugmentSpec | None, image_size: tuple[int, int], n: int
) -> Augmentation:
    return (
        identity_augmentation(n) if spec is None else sample_augmentation(rng, spec, image_size, n)
    )


def decoder_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _resolve_augment(augment: bool | AugmentSpec | None) -> AugmentSpec | None:
    if isinstance(augment, AugmentSpec):
        return augment
    return AugmentSpec() if augment else None


def make_unlabeled_loader(
    videos: list[str],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    backend: str = "auto",
    augment: bool | AugmentSpec = False,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    device: str = "cpu",
    readers: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """An infinite stream of random contiguous sequences for the unsupervised losses.

    Every video is validated first, so one bad file fails here with its name, not inside DALI.

    Args:
        videos: local video paths; ``video_index`` refers to positions in this list.
        sequence_length: S, frames per sequence.
        batch_size: B, sequences per item.
        image_size: model input (H, W).
        backend: "auto", "pyav" or "dali" (module docstring).
        augment: False, True (default :class:`AugmentSpec`) or a spec.
        seed: run seed; with ``shard_id`` it fixes the stream.
        shard_id: this worker's shard (Ray Train world rank).
        num_shards: number of shards (world size).
        device: "cpu" or "cuda[:N]"; where the tensors are delivered (and, for DALI, decoded).
        readers: DALI pipelines decoding in parallel, their batches taken in turn (each with
            its own seeds; 1 keeps the single-reader stream). A random 16-frame sequence of
            long-GOP H.264 costs a seek and a decode from the previous keyframe. Ignored by PyAV.

    Returns:
        An iterator of dicts: ``frames`` float32 (B, S, 3, H, W) normalised; ``frame_index``
        int64 (B, S); ``video_index`` int64 (B,); ``to_frame`` float32 (B, 2, 3) mapping
        model-input pixel coordinates to original frame pixel coordinates. All on ``device``.
    """
    if sequence_length < 1 or batch_size < 1 or readers < 1:
        raise ValueError("sequence_length, batch_size and readers must be >= 1")
    if not videos:
        raise ValueError("make_unlabeled_loader needs at least one video")
    paths = [local_video_path(v) for v in videos]
    infos = [validate_video(p) for p in paths]
    ranges = shard_ranges([i.n_frames for i in infos], sequence_length, shard_id, num_shards)
    kind = choose_backend(backend, infos, device)
    spec = _resolve_augment(augment)
    args = (paths, infos, ranges, sequence_length, batch_size, tuple(image_size), spec)
    if kind == "pyav":
        return _pyav_training(*args, seed, shard_id, device)
    return _dali_training(*args, seed, shard_id, device, kind == "dali-gpu", readers)


def _pyav_training(
    paths: list[str],
    infos: list[VideoInfo],
    ranges: list[FrameRange],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    spec: AugmentSpec | None,
    seed: int,
    shard_id: int,
    device: str,
) -> Iterator[dict[str, torch.Tensor]]:
    """Uniform draws over every sequence start of the shard, decoded with PyAV."""
    pick_rng = np.random.default_rng([seed, shard_id, 0])
    aug_rng = _augment_rng(seed, shard_id)
    starts = np.array([r.stop - r.start - sequence_length + 1 for r in ranges])
    cumulative = np.cumsum(starts)
    readers: OrderedDict[int, PyAVReader] = OrderedDict()
    sizes = np.array([(i.height, i.width) for i in infos])
    try:
        while True:
            draws = pick_rng.integers(0, cumulative[-1], batch_size)
            which = np.searchsorted(cumulative, draws, side="right")
            video_index = np.array([ranges[k].video_index for k in which])
            first = np.array(
                [ranges[k].start + d - (cumulative[k] - starts[k]) for k, d in zip(which, draws)]
            )
            aug = _draw(aug_rng, spec, image_size, batch_size)
            to_frame = to_frame_matrix(aug.affine, sizes[video_index], image_size)
            frames = []
            for b in range(batch_size):
                reader = _cached_reader(readers, int(video_index[b]), paths)
                clip = torch.from_numpy(reader.read(int(first[b]), sequence_length)).to(device)
                s = sequence_length
                frames.append(
                    warp_normalise(
                        clip,
                        torch.from_numpy(to_frame[b]).float(),
                        image_size,
                        torch.from_numpy(np.repeat(aug.contrast[b], s)) if spec else None,
                        torch.from_numpy(np.repeat(aug.brightness[b], s)) if spec else None,
                    )
                )
            frame_index = first[:, None] + np.arange(sequence_length)[None, :]
            yield {
                "frames": torch.stack(frames),
                "frame_index": torch.from_numpy(frame_index).long().to(device),
                "video_index": torch.from_numpy(video_index).long().to(device),
                "to_frame": torch.from_numpy(to_frame).float().to(device),
            }
    finally:
        for reader in readers.values():
            reader.close()


def _cached_reader(
    readers: OrderedDict[int, PyAVReader], index: int, paths: list[str]
) -> PyAVReader:
    if index in readers:
        readers.move_to_end(index)
        return readers[index]
    if len(readers) >= _MAX_OPEN_READERS:
        readers.popitem(last=False)[1].close()
    readers[index] = PyAVReader(paths[index])
    return readers[index]


def augment_source(
    rng: np.random.Generator, spec: AugmentSpec | None, image_size: tuple[int, int], n: int
):
    """The DALI external-source callable: one batch of augmentation parameters per call."""

    def source() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        aug = _draw(rng, spec, image_size, n)
        corner = to_corner_convention(aug.affine).astype(np.float32)
        return (
            list(corner),
            [np.array([c], np.float32) for c in aug.contrast],
            [np.array([255.0 * b], np.float32) for b in aug.brightness],
        )

    return source


def _dali_training(
    paths: list[str],
    infos: list[VideoInfo],
    ranges: list[FrameRange],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    spec: AugmentSpec | None,
    seed: int,
    shard_id: int,
    device: str,
    gpu: bool,
    readers: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """The shard's ranges through DALI's reader: every start is a sample, shuffled by a seed.

    With ``readers`` > 1, that many pipelines (own shuffle and augmentation seeds) decode in
    parallel and their batches are taken in turn.
    """
    from lpray.data import dali_pipeline as dp  # noqa: PLC0415

    n_samples = sum(r.stop - r.start - sequence_length + 1 for r in ranges)
    sizes = np.array([(i.height, i.width) for i in infos])
    with tempfile.TemporaryDirectory(prefix="lpray-dali-") as folder:
        file_list = dp.write_file_list(ranges, paths, folder)
        pipes = []
        for reader in range(readers):
            pipe = dp.build_video_pipeline(
                reader_device="gpu" if gpu else "cpu",
                device_id=cuda_index(device) if gpu else None,
                batch_size=batch_size,
                sequence_length=sequence_length,
                image_size=image_size,
                augment_source=augment_source(
                    _augment_rng(seed, shard_id, reader), spec, image_size, batch_size
                ),
                mean=[255.0 * m for m in IMAGENET_MEAN],
                std=[255.0 * s for s in IMAGENET_STD],
                file_list=file_list,
                step=1,
                random_shuffle=True,
                shuffle_buffer=min(n_samples, dp.MAX_SHUFFLE_BUFFER),
                photometric=spec is not None,
                seed=_dali_seed(seed, shard_id, reader),
                num_threads=decoder_threads() if readers == 1 else 1,
            )
            pipes.append(
                build_checked(
                    pipe,
                    n_samples,
                    lambda found: (
                        f"DALI counts {found} sequences in "
                        f"{sorted({paths[r.video_index] for r in ranges})}, lpray's frame index "
                        f"{n_samples}: a video's frame count differs between decoders"
                    ),
                )
            )

        def batches(pipe: Pipeline) -> Iterator[dict[str, torch.Tensor]]:
            for batch in dp.make_iterator(pipe, finite=False):
                out = batch[0]
                video_index = out["video_index"].view(-1).long().cpu()
                check_decoded_size(
                    out["decoded_shape"], sizes[video_index.numpy()], paths, video_index
                )
                affine = from_corner_convention(out["augment"].cpu().double().numpy())
                to_frame = to_frame_matrix(affine, sizes[video_index.numpy()], image_size)
                yield {
                    "frames": out["frames"].to(device),
                    "frame_index": out["frame_index"].long().to(device),
                    "video_index": video_index.to(device),
                    "to_frame": torch.from_numpy(to_frame).float().to(device),
                }

        # The read-backs above (video index, affine) would stall every training step on a GPU
        # sync if they ran on the training thread: they run ahead on their own threads and
        # streams.
        yield from prefetched([batches(pipe) for pipe in pipes], device)


def build_checked(pipe: Pipeline, expected: int, problem: Callable[[int], str]) -> Pipeline:
    """Build ``pipe`` and check that its reader sees ``expected`` samples, the count lpray's own
    frame index gives; a mismatch means the decoders disagree about a video's frames."""
    from lpray.data import dali_pipeline as dp  # noqa: PLC0415

    pipe.build()
    found = pipe.epoch_size(dp.READER_NAME)
    if found != expected:
        raise VideoError(f"{problem(found)}: re-encode the video or use backend='pyav'")
    return pipe


_END = object()


def prefetched(
    sources: Sequence[Iterator[Any]],
    device: str,
    depth: int = 2,
    schedule: Iterable[int] | None = None,
) -> Iterator[Any]:
    """The sources' items (dicts or tuples of tensors), taken in the order ``schedule`` names
    sources (default: in turn, one from each), each source produced up to ``depth`` items ahead
    on its own background thread.

    On a GPU each thread works on its own CUDA stream and waits for it before handing an item
    over, so its host read-backs wait only for its own copies, never for the training step's
    kernels on the default stream; the consumer marks each tensor as used on its stream so the
    allocator does not recycle it early. The sources' errors are re-raised here; the stream ends
    when the schedule does or when a source it asks ends; closing this iterator stops the threads.
    """
    import queue  # noqa: PLC0415
    import threading  # noqa: PLC0415

    gpu = device.startswith("cuda") and torch.cuda.is_available()
    queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in sources]
    stop = threading.Event()

    def hand_over(ready: queue.Queue, item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce(source: Iterator[Any], ready: queue.Queue) -> None:
        stream = torch.cuda.Stream(device=cuda_index(device)) if gpu else None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                for item in source:
                    if stream is not None:
                        stream.synchronize()
                    if not hand_over(ready, item):
                        return
            hand_over(ready, _END)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            hand_over(ready, error)

    threads = [
        threading.Thread(target=produce, args=(source, ready), daemon=True, name="lpray-prefetch")
        for source, ready in zip(sources, queues, strict=True)
    ]
    for thread in threads:
        thread.start()
    order = itertools.cycle(range(len(queues))) if schedule is None else schedule
    try:
        for which in order:
            item = queues[which].get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if gpu:
                values = item.values() if isinstance(item, dict) else item
                for value in values:
                    if isinstance(value, torch.Tensor) and value.is_cuda:
                        value.record_stream(torch.cuda.current_stream(value.device))
            yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


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

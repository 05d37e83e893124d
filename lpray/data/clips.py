"""Training clips: an endless stream of random contiguous sequences of the unlabeled videos,
augmented, for the unsupervised losses.

Every video is validated first, the shard's frame ranges come from :mod:`lpray.data.sharding`,
the reader from :func:`lpray.data.readers.choose_backend` and the augmentation from
:mod:`lpray.data.clip_augment`. The augmentation stream depends only on (seed, shard id) and is
the same for both readers; the order in which sequences are drawn is reader-specific (PyAV:
uniform over all sequence starts; DALI: its reader's seeded shuffle). Prediction's ordered chunks
are :mod:`lpray.inference.chunks`.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from lpray.data import dali_pipeline as dp
from lpray.data.augment_spec import AUGMENT_PRESETS, DEFAULT_AUGMENT_PRESET, ClipAugmentSpec
from lpray.data.clip_augment import augment_source, draw_or_identity
from lpray.data.geometry import corner_to_centre, to_frame_matrix
from lpray.data.normalise import IMAGENET_MEAN, IMAGENET_STD, grey_levels
from lpray.data.prefetch import prefetched
from lpray.data.reader_registry import VideoReader, get_reader
from lpray.data.readers import choose_backend, cuda_index, decoder_threads, local_video_path
from lpray.data.sharding import (
    FrameRange,
    augment_rng,
    dali_shuffle_seed,
    shard_ranges,
    starts_rng,
)
from lpray.data.video import PyAVReader, VideoInfo, validate_video
from lpray.data.warp import warp_normalise

if TYPE_CHECKING:
    from nvidia.dali.pipeline import Pipeline

# Open PyAV readers kept per training loader; older ones are closed.
_MAX_OPEN_READERS = 8


def _resolve_augment(augment: bool | ClipAugmentSpec | None) -> ClipAugmentSpec | None:
    """The spec to draw from; None leaves the clips untouched (no draws, no photometric)."""
    if augment is True:
        augment = AUGMENT_PRESETS[DEFAULT_AUGMENT_PRESET].clips
    if not isinstance(augment, ClipAugmentSpec) or augment.is_identity:
        return None
    return augment


def make_unlabeled_loader(
    videos: list[str],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    backend: str = "auto",
    augment: bool | ClipAugmentSpec | None = False,
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
        backend: a backend name of :mod:`lpray.data.reader_registry` ("auto", "pyav",
            "dali"), resolved by :func:`lpray.data.readers.choose_backend`.
        augment: a spec, True (the default preset's clips), or False / None / a spec of zeros
            (resize only: no draws, no photometric change).
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
    reader = get_reader(choose_backend(backend, infos, device))
    spec = _resolve_augment(augment)
    return reader.producer("training")(
        reader,
        paths,
        infos,
        ranges,
        sequence_length,
        batch_size,
        tuple(image_size),
        spec,
        seed,
        shard_id,
        device,
        readers,
    )


def pyav_training(
    reader: VideoReader,
    paths: list[str],
    infos: list[VideoInfo],
    ranges: list[FrameRange],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    spec: ClipAugmentSpec | None,
    seed: int,
    shard_id: int,
    device: str,
    readers: int,
) -> Iterator[dict[str, torch.Tensor]]:
    """Uniform draws over every sequence start of the shard, decoded with PyAV.

    The signature is every reader's training producer's (:mod:`lpray.data.reader_registry`):
    the stream :func:`make_unlabeled_loader` returns, for its arguments. PyAV keeps one decoder
    per open video, so ``reader`` and ``readers`` choose nothing here.
    """
    del reader, readers
    pick_rng = starts_rng(seed, shard_id)
    aug_rng = augment_rng(seed, shard_id)
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
            drawn = draw_or_identity(aug_rng, spec, image_size, batch_size)
            to_frame = to_frame_matrix(drawn.model_to_resized, sizes[video_index], image_size)
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
                        torch.from_numpy(np.repeat(drawn.contrast[b], s)) if spec else None,
                        torch.from_numpy(np.repeat(drawn.brightness[b], s)) if spec else None,
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


def dali_training(
    reader: VideoReader,
    paths: list[str],
    infos: list[VideoInfo],
    ranges: list[FrameRange],
    sequence_length: int,
    batch_size: int,
    image_size: tuple[int, int],
    spec: ClipAugmentSpec | None,
    seed: int,
    shard_id: int,
    device: str,
    readers: int = 1,
) -> Iterator[dict[str, torch.Tensor]]:
    """The shard's ranges through DALI's reader (on ``reader.decodes_on``): every start is a
    sample, shuffled by a seed.

    With ``readers`` > 1, that many pipelines (own shuffle and augmentation seeds) decode in
    parallel and their batches are taken in turn.
    """
    gpu = reader.decodes_on == "gpu"
    n_samples = sum(r.stop - r.start - sequence_length + 1 for r in ranges)
    sizes = np.array([(i.height, i.width) for i in infos])
    with tempfile.TemporaryDirectory(prefix="lpray-dali-") as folder:
        file_list = dp.write_file_list(ranges, paths, folder)
        pipes = []
        for pipe_index in range(readers):
            pipe = dp.build_video_pipeline(
                reader_device="gpu" if gpu else "cpu",
                device_id=cuda_index(device) if gpu else None,
                batch_size=batch_size,
                sequence_length=sequence_length,
                image_size=image_size,
                augment_source=augment_source(
                    augment_rng(seed, shard_id, pipe_index), spec, image_size, batch_size
                ),
                mean=grey_levels(IMAGENET_MEAN),
                std=grey_levels(IMAGENET_STD),
                file_list=file_list,
                step=1,
                random_shuffle=True,
                shuffle_buffer=min(n_samples, dp.MAX_SHUFFLE_BUFFER),
                photometric=spec is not None,
                seed=dali_shuffle_seed(seed, shard_id, pipe_index),
                num_threads=decoder_threads() if readers == 1 else 1,
            )
            pipes.append(
                dp.build_checked(
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
                dp.check_decoded_size(
                    out["decoded_shape"], sizes[video_index.numpy()], paths, video_index
                )
                jitter = corner_to_centre(out["augment"].cpu().double().numpy())
                to_frame = to_frame_matrix(jitter, sizes[video_index.numpy()], image_size)
                yield {
                    "frames": out["frames"].to(device),
                    "frame_index": out["frame_index"].long().to(device),
                    "video_index": video_index.to(device),
                    "to_frame": torch.from_numpy(to_frame).float().to(device),
                }

        # The read-backs above (video index, jitter) would stall every training step on a GPU
        # sync if they ran on the training thread: they run ahead on their own threads and
        # streams.
        yield from prefetched([batches(pipe) for pipe in pipes], device)

"""Which frames of the unlabeled videos each training worker reads, and its random streams.

lpray shards the video itself, identically for the PyAV and DALI readers: with at least as many
videos as shards, shard k takes whole videos k, k + n, k + 2n, ...; otherwise every video is cut
into n contiguous frame ranges and shard k takes range k of each. Shards never share a frame.
(DALI's own sharding would put every worker on every video and cannot be reproduced by PyAV,
see :mod:`lpray.data.dali_pipeline`.)

Each shard's streams are deterministic given (run seed, shard id): the sequence starts it picks
(PyAV), the augmentation it draws (both readers) and its DALI reader's shuffle seed, each from
its own key so that one stream never shifts another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# The third element of each stream's seed key.
_STARTS, _AUGMENT, _DALI_SHUFFLE = 0, 1, 2


class FrameRange(NamedTuple):
    """Frames ``[start, stop)`` of ``videos[video_index]``."""

    video_index: int
    start: int
    stop: int


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


def starts_rng(seed: int, shard_id: int) -> np.random.Generator:
    """The stream of sequence starts the PyAV reader picks for this shard."""
    return np.random.default_rng([seed, shard_id, _STARTS])


def augment_rng(seed: int, shard_id: int, reader: int = 0) -> np.random.Generator:
    """The stream of clip augmentations of one reader of this shard (reader 0 keeps the
    single-reader stream)."""
    return np.random.default_rng([seed, shard_id, _AUGMENT] + ([reader] if reader else []))


def dali_shuffle_seed(seed: int, shard_id: int, reader: int = 0) -> int:
    """The shuffle seed of one DALI reader of this shard."""
    key = [seed, shard_id, _DALI_SHUFFLE] + ([reader] if reader else [])
    return int(np.random.SeedSequence(key).generate_state(1)[0])

"""Shards of the unlabeled videos and their random streams (lpray.data.sharding); runs on any
CPU, without DALI."""

from __future__ import annotations

import numpy as np
import pytest

from lpray.data.sharding import (
    FrameRange,
    augment_rng,
    dali_shuffle_seed,
    shard_ranges,
    starts_rng,
)


def test_shard_ranges_whole_videos_or_disjoint_frame_ranges():
    assert shard_ranges([50, 60, 70], 5, 1, 2) == [FrameRange(1, 0, 60)]
    assert shard_ranges([50, 60, 70], 5, 0, 2) == [FrameRange(0, 0, 50), FrameRange(2, 0, 70)]
    assert shard_ranges([50, 61], 5, 1, 3) == [FrameRange(0, 16, 33), FrameRange(1, 20, 40)]
    cover = [r for k in range(3) for r in shard_ranges([50], 5, k, 3)]
    assert sorted((r.start, r.stop) for r in cover) == [(0, 16), (16, 33), (33, 50)]
    with pytest.raises(ValueError, match="no frame range"):
        shard_ranges([12], 5, 0, 4)
    with pytest.raises(ValueError):
        shard_ranges([50], 5, 2, 2)


def test_streams_are_fixed_by_seed_and_shard_and_independent():
    """Each stream keeps the seed key it always had (runs stay reproducible across versions),
    and the streams of one shard, of two shards and of two readers differ."""
    keyed = {
        "starts": np.random.default_rng([7, 1, 0]).random(),
        "augment": np.random.default_rng([7, 1, 1]).random(),
        "augment reader 2": np.random.default_rng([7, 1, 1, 2]).random(),
    }
    assert starts_rng(7, 1).random() == keyed["starts"]
    assert augment_rng(7, 1).random() == augment_rng(7, 1, reader=0).random() == keyed["augment"]
    assert augment_rng(7, 1, reader=2).random() == keyed["augment reader 2"]
    assert len(set(keyed.values())) == 3
    assert augment_rng(7, 0).random() != augment_rng(7, 1).random()
    seed = int(np.random.SeedSequence([7, 1, 2]).generate_state(1)[0])
    assert dali_shuffle_seed(7, 1) == seed != dali_shuffle_seed(7, 1, reader=1)

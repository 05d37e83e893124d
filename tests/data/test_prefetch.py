"""The background drain of reader streams (lpray.data.prefetch); runs without DALI."""

from __future__ import annotations

import threading

import pytest
import torch

from lpray.data.prefetch import prefetched
from lpray.data.video import VideoError


def test_prefetched_keeps_order_reraises_and_stops_on_close():
    """The background producer of the DALI training stream hands items over in order, re-raises
    the source's error in the consumer, and stops when the consumer closes the stream."""

    def source(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise VideoError(f"bad block {i}")
            yield {"i": torch.tensor(i)}

    assert [int(x["i"]) for x in prefetched([source(7)], "cpu", depth=2)] == list(range(7))
    evens, odds = (({"i": torch.tensor(i)} for i in range(r, 8, 2)) for r in (0, 1))
    assert [int(x["i"]) for x in prefetched([evens, odds], "cpu")] == list(range(8))
    stream = prefetched([source(10, fail_at=4)], "cpu")
    assert [int(next(stream)["i"]) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(VideoError, match="bad block 4"):
        next(stream)

    def producers():
        return {t for t in threading.enumerate() if t.name == "lpray-prefetch" and t.is_alive()}

    before = producers()
    endless = prefetched([source(10**9), source(10**9)], "cpu", depth=1)
    next(endless)
    assert len(producers() - before) == 2
    endless.close()
    assert not producers() - before

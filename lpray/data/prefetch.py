"""Items produced ahead of their consumer on background threads (and, on a GPU, their own
CUDA streams): the drain that keeps host read-backs of the DALI readers off the training and
prediction threads."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from lpray.data.readers import cuda_index

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

"""Every member's pass over one chunk, replayed from one CUDA graph.

Eagerly, every one of the ~170 kernels a ResNet-50 member launches per chunk is a PyTorch call
that gives up the GIL and must win it back. A CUDA graph captured once per chunk shape turns
the K members' forward passes and heatmap decoding into one launch. Measured on one H100 (5
ResNet-50 256 members, chunk 128, bench/README.md third round): +4-5% for the networks alone;
beside one Python thread that holds the GIL, eager passes ran 95x slower and the replay 2%; but
tracking's own threads wait in DALI with the GIL released, so ``lpray track`` ran the same with
and without graphs (693 vs 686 video-frames/s), which is why graphs are opt-in. Shapes are
fixed by construction: every prediction chunk has ``chunk + 2 * context`` frames (the last one
is padded).

On a CPU, or with graphs off, :class:`ChunkPasses` runs the members eagerly, one after another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from lpray.inference.network import PoseNetwork

log = logging.getLogger(__name__)

# Eager passes on a side stream before capture: cuDNN/cuBLAS pick their algorithms and
# allocate their workspaces, and a compiled member compiles, outside the graph.
WARMUP_PASSES = 2


class _Graph:
    """One captured replay of ``members`` on a static input of one shape."""

    def __init__(self, networks: Sequence[PoseNetwork], shape: tuple[int, ...]) -> None:
        device = networks[0].device
        self.static_in = torch.zeros(shape, device=device).contiguous(
            memory_format=torch.channels_last
        )
        started = time.perf_counter()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                for network in networks:
                    network.predict_sequence(self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the DALI readers of other segments keep decoding during the capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = [network.predict_sequence(self.static_in) for network in networks]
        self.seconds = time.perf_counter() - started
        log.info(
            "captured %d member(s) on %s frames as one CUDA graph in %.2f s",
            len(networks),
            tuple(shape),
            self.seconds,
        )

    def __call__(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        self.static_in.copy_(frames)
        self.graph.replay()
        return self.static_out


class ChunkPasses:
    """Runs members of one input size over a chunk: eagerly, or from one CUDA graph per chunk
    shape (captured on first use).

    Not thread-safe by itself: callers serialise calls (the engine holds its network lock).
    The tensors returned by a graph replay are overwritten by the next replay; the engine
    slices and copies them before it releases the lock, in stream order.

    Args:
        networks: every member (indexed by the ``members`` argument of :meth:`__call__`).
        cuda_graphs: replay CUDA graphs where the members are on a GPU.
    """

    def __init__(self, networks: Sequence[PoseNetwork], cuda_graphs: bool = False) -> None:
        self.networks = list(networks)
        self.cuda_graphs = cuda_graphs and all(n.device.type == "cuda" for n in self.networks)
        self._graphs: dict[tuple, _Graph] = {}

    @property
    def captures(self) -> int:
        """Graphs captured so far."""
        return len(self._graphs)

    @torch.inference_mode()
    def __call__(
        self, members: Sequence[int], frames: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keypoints (S, K, 2) and confidences (S, K) of each of ``members`` on ``frames``
        (S, 3, H, W), model-input pixels, on the device."""
        if not self.cuda_graphs:
            return [self.networks[m].predict_sequence(frames) for m in members]
        key = (tuple(members), tuple(frames.shape), frames.dtype)
        graph = self._graphs.get(key)
        if graph is None:
            graph = _Graph([self.networks[m] for m in members], tuple(frames.shape))
            self._graphs[key] = graph
        return graph(frames)

"""Lightning's cluster environment and strategy inside a Ray Train worker.

Ray Train starts the processes and the process group; these classes tell Lightning so.
"""

from __future__ import annotations

import torch
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy, Strategy

# Ray's own RayDDPStrategy / RayLightningEnvironment / RayTrainReportCallback subclass
# ``lightning.pytorch`` whenever the ``lightning`` package is installed (the GPU image has both it
# and ``pytorch_lightning``), and lpray's module and trainer are ``pytorch_lightning`` classes: the
# two hierarchies do not mix. These few lines are the same logic on lpray's side.


class RayEnvironment(LightningEnvironment):
    """Ranks and world size come from the Ray Train context (Ray started the processes)."""

    @property
    def creates_processes_externally(self) -> bool:
        return True

    def world_size(self) -> int:
        import ray.train

        return ray.train.get_context().get_world_size()

    def global_rank(self) -> int:
        import ray.train

        return ray.train.get_context().get_world_rank()

    def local_rank(self) -> int:
        import ray.train

        return ray.train.get_context().get_local_rank()

    def node_rank(self) -> int:
        import ray.train

        return ray.train.get_context().get_node_rank()

    def set_world_size(self, size: int) -> None:
        """Ignored: the Ray Train context is the source of truth."""

    def set_global_rank(self, rank: int) -> None:
        """Ignored: the Ray Train context is the source of truth."""

    def teardown(self) -> None:
        """Ray Train owns the process group; nothing to undo here."""


class RayDDP(DDPStrategy):
    """DDP on the process group Ray Train already initialised, on the device Ray assigned."""

    @property
    def root_device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}


def worker_strategy(world_size: int, device: torch.device, find_unused: bool) -> Strategy:
    """DDP across several workers; one worker trains on its device without a DDP wrapper.

    With one rank, DDP would only add gradient-bucket all-reduces and an extra module wrapper per
    step (measured on one H100: part of Ray Train's overhead over the plain trainer).
    """
    if world_size == 1:
        return SingleDeviceStrategy(device=device)
    return RayDDP(find_unused_parameters=find_unused)

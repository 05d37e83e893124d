"""Everything a training run reads, resolved once: labels, split, videos, PCA fits, loaders.

Both the single-process trainer and each Ray Train worker call :func:`prepare_data` and then
:func:`make_train_loader` with their own shard, so a worker builds its own labeled shard and its
own video shard and never receives data over the network from the driver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from lpray.config import Config
from lpray.data.augment_spec import augment_preset
from lpray.data.labeled import (
    EpochSampler,
    LabeledDataset,
    LabeledFrames,
    LabelError,
    Split,
    check_images,
    read_labeled_frames,
    split_frames,
)
from lpray.io.storage import expand
from lpray.losses.registry import FitData, get_loss


@dataclass
class DataBundle:
    """The resolved inputs of a run."""

    root: Path
    frames: LabeledFrames
    split: Split
    videos: list[str]
    view_groups: list[list[str]]
    test_videos: list[str]  # unseen videos with ground truth (synthetic projects only)

    @property
    def keypoint_names(self) -> list[str]:
        return self.frames.keypoint_names


def resolve_root(cfg: Config) -> tuple[Path, list[list[str]] | None, list[str]]:
    """The project folder, its view groups and unseen test videos (synthetic projects only).

    ``data.root == "synthetic"`` builds (or reuses) the built-in synthetic project.
    """
    from lpray.data.synthetic import SyntheticSpec, load_synthetic_project, make_synthetic_project

    if cfg.data.root == "synthetic":
        values = dataclasses.asdict(cfg.data.synthetic)
        spec = SyntheticSpec(**{**values, "frame_size": tuple(values["frame_size"])})
        project = make_synthetic_project(Path(cfg.data.synthetic_dir), spec)
    else:
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise FileNotFoundError(f"data.root: project folder {root} does not exist")
        if not (root / "project.yaml").is_file():
            return root, None, []
        project = load_synthetic_project(root)
    return project.root, project.view_groups, [str(p) for p in project.test_videos]


def prepare_data(cfg: Config) -> DataBundle:
    root, synthetic_groups, test_videos = resolve_root(cfg)
    frames = read_labeled_frames(root, cfg.data.csv_file, cfg.data.keypoints)
    split = split_frames(
        frames,
        cfg.data.train_prob,
        cfg.data.val_prob,
        cfg.data.split_seed,
        cfg.data.train_frames,
        cfg.data.split_file,
    )
    videos: list[str] = []
    if cfg.losses.active():
        patterns = [
            p if "://" in p or Path(p).is_absolute() else str(root / p) for p in cfg.data.videos
        ]
        try:
            videos = expand(patterns)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"data.videos: {err} (unsupervised losses need video)") from err
    groups = cfg.data.view_groups if cfg.data.view_groups is not None else (synthetic_groups or [])
    for group in groups:
        unknown = [k for k in group if k not in frames.keypoint_names]
        if unknown:
            raise LabelError(
                f"data.view_groups: unknown keypoints {unknown}; known: {frames.keypoint_names}"
            )
    return DataBundle(root, frames, split, videos, [list(g) for g in groups], test_videos)


def check_videos(paths: list[str]) -> None:
    """Probe every local unlabeled video (frame count, truncation, frame rate, decodability of
    its start and end); remote ones are checked by the reader that opens them."""
    from lpray.data.video import validate_video
    from lpray.io.storage import is_local, local_path

    for path in paths:
        if is_local(path):
            validate_video(local_path(path))


def validate_inputs(cfg: Config) -> DataBundle:
    """Everything a run can check before it writes anything, checked; returns its data.

    The labels (header, keypoints, values, counts, split), every labeled image (decoded once),
    the unlabeled videos the losses read, the PCA fits and the pretrained weights: each problem
    is a :class:`~lpray.errors.UserError` naming the file or key.
    """
    from lpray.models.backbones import check_pretrained_cached

    bundle = prepare_data(cfg)
    check_images(bundle.frames)
    if cfg.losses.active():
        check_videos(bundle.videos)
    fit_loss_states(cfg, bundle)
    if cfg.model.pretrained:
        check_pretrained_cached(cfg.model.backbone)
    return bundle


def fit_loss_states(cfg: Config, bundle: DataBundle) -> dict[str, Any]:
    """Fit the states of the switched-on losses that have one (the PCAs) on the TRAINING labels,
    in frame pixels; by loss name."""
    data = FitData(
        labels=bundle.frames.keypoints[bundle.split.train],
        keypoint_names=bundle.keypoint_names,
        view_groups=bundle.view_groups,
    )
    states: dict[str, Any] = {}
    for name in cfg.losses.active():
        loss = get_loss(name)
        if loss.fit is not None:
            states[name] = loss.fit(getattr(cfg.losses, name), data)
    return states


def _collate_labeled(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack items; deferred-augmentation frames of different sizes are zero-padded on the right
    and bottom (harmless to the warp, see :func:`lpray.data.augment.warp_images`)."""
    batch: dict[str, Any] = {
        key: torch.stack([item[key] for item in items]) for key in items[0] if key != "raw"
    }
    if "raw" in items[0]:
        height = max(item["raw"].shape[-2] for item in items)
        width = max(item["raw"].shape[-1] for item in items)
        raw = torch.zeros(
            (len(items), *items[0]["raw"].shape[:-2], height, width), dtype=torch.uint8
        )
        for row, item in enumerate(items):
            h, w = item["raw"].shape[-2:]
            raw[row, ..., :h, :w] = item["raw"]
        batch["raw"] = raw
    return batch


def defer_labeled_augment(cfg: Config, device: str) -> bool:
    """Whether labeled-frame augmentation runs on the training device instead of the loader."""
    where = cfg.training.labeled_augment_on
    return where == "device" or (where == "auto" and device.startswith("cuda"))


def labeled_loader(
    cfg: Config,
    bundle: DataBundle,
    indices: np.ndarray,
    train: bool,
    context: int,
    shard_id: int = 0,
    num_shards: int = 1,
    defer_augment: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """Labeled frames for training (augmented, sharded) or evaluation (plain, whole split).

    ``defer_augment``: items carry raw frames and the augmentation draws; the training module
    warps them on its device (see :class:`lpray.data.labeled.LabeledDataset`).
    ``pin_memory``: batches in page-locked memory, so the copy to a GPU is asynchronous (from
    pageable memory it waits for the kernels queued before it).
    """
    frames = bundle.frames.subset(indices)
    length = None
    if train and cfg.training.min_steps_per_epoch:
        length = max(
            len(frames), cfg.training.min_steps_per_epoch * cfg.training.batch_size * num_shards
        )
    dataset = LabeledDataset(
        frames,
        tuple(cfg.data.image_size),
        augment_preset(cfg.training.augmentation).frames if train else None,
        context,
        cfg.training.seed,
        length,
        defer_augment=defer_augment and train,
    )
    generator = torch.Generator().manual_seed(cfg.training.seed)
    if num_shards > 1:
        base = DistributedSampler(
            dataset,
            num_replicas=num_shards,
            rank=shard_id,
            shuffle=train,
            seed=cfg.training.seed,
            drop_last=False,
        )
    else:
        base = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
    workers = cfg.training.num_workers
    if train and workers > 0:
        dataset.preload()  # before the workers fork: they share the decoded images
    return DataLoader(
        dataset,
        batch_size=cfg.training.batch_size if train else max(cfg.training.batch_size, 32),
        sampler=EpochSampler(base),
        num_workers=workers,
        collate_fn=_collate_labeled,
        generator=generator,
        # Workers live for the whole fit: the EpochSampler brings them each epoch's number, and
        # their caches of decoded images survive (re-created per epoch they decoded every image
        # again each epoch).
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
    )


# DALI readers of unlabeled video per training worker on a GPU (training.unlabeled_readers=0).
GPU_UNLABELED_READERS = 4


class UnlabeledStream:
    """An endless stream of unlabeled video batches that survives Lightning's per-epoch ``iter``."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._iterator: Iterator[dict[str, torch.Tensor]] | None = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._iterator is None:
            self._iterator = iter(self._make())
        return self._iterator


def make_train_loader(
    cfg: Config,
    bundle: DataBundle,
    context: int,
    shard_id: int = 0,
    num_shards: int = 1,
    device: str = "cpu",
) -> Any:
    """The labeled loader, combined with the unlabeled video stream when a loss needs it."""
    from pytorch_lightning.utilities import CombinedLoader

    labeled = labeled_loader(
        cfg,
        bundle,
        bundle.split.train,
        True,
        context,
        shard_id,
        num_shards,
        defer_augment=defer_labeled_augment(cfg, device),
        pin_memory=device.startswith("cuda"),
    )
    if not cfg.losses.active():
        return labeled
    from lpray.data.clips import make_unlabeled_loader

    t = cfg.training

    def make() -> Iterator[dict[str, torch.Tensor]]:
        return make_unlabeled_loader(
            bundle.videos,
            t.sequence_length,
            t.unlabeled_sequences,
            tuple(cfg.data.image_size),
            backend=cfg.data.video_backend,
            # the preset's clips: "none" leaves them untouched, like the labeled frames
            augment=augment_preset(t.augmentation).clips,
            seed=t.seed,
            shard_id=shard_id,
            num_shards=num_shards,
            device=device,
            readers=t.unlabeled_readers
            or (GPU_UNLABELED_READERS if device.startswith("cuda") else 1),
        )

    # "min_size": an epoch is one pass over the labeled frames; video never runs out.
    return CombinedLoader({"labeled": labeled, "unlabeled": UnlabeledStream(make)}, mode="min_size")

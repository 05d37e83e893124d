"""The one builder of the Lightning ``Trainer``, for single-process and Ray Train training.

Both paths get the same settings from one config: epochs, precision, the validation and logging
cadence, no sanity validation, no model summary, TensorBoard events in ``tb/`` and a throughput
meter. They differ only where the Ray path must:

- devices: ``training.accelerator`` on one device, against the device Ray Train assigned, with
  :class:`~lpray.train.ray_lightning.RayEnvironment` and one device or DDP on Ray's process group
  (:func:`~lpray.train.ray_lightning.worker_strategy`), and lpray's own sharded loaders instead of
  Lightning's distributed sampler;
- checkpoints: ``best.ckpt`` (Lightning's ``ModelCheckpoint``) and ``last.ckpt``
  (:class:`~lpray.train.callbacks.LastCheckpoint`) in the model directory, against one checkpoint
  per epoch reported to Ray (:class:`~lpray.train.callbacks.ReportCheckpoint`), whose retention,
  ``training.keep_checkpoints``, Ray applies (:func:`lpray.train.distributed.checkpoint_config`);
- logs: the step log by Lightning's ``CSVLogger`` and ``metrics.csv`` by
  :class:`~lpray.train.callbacks.EpochMetricsWriter`, against
  :class:`~lpray.train.callbacks.StepLog` and the epoch log, both carried inside the reported
  checkpoints (a worker may run on another node than the driver's model directory);
- throughput: the training step's total rate for ``summary.json``, against each epoch's rate over
  all ranks (:class:`~lpray.train.callbacks.EpochThroughput`, a metric of every epoch);
- the progress bar: on rank 0 only.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lpray.config import Config
from lpray.io import layout
from lpray.io.layout import ModelDir
from lpray.train.callbacks import (
    TENSORBOARD_NAME,
    EpochMetricsWriter,
    EpochThroughput,
    LastCheckpoint,
    ReportCheckpoint,
    StepLog,
    ThroughputMeter,
    read_epoch_log,
)
from lpray.train.ray_lightning import RayEnvironment, worker_strategy

# The loggers whose INFO lines every training worker printed: Lightning announcing its
# accelerator, seed and checkpoint loading, Ray Train each epoch's report and checkpoint (and
# the logger :func:`_ray_train_report_logger` names).
WORKER_CHATTER = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "ray.train")


def _ray_train_report_logger() -> str:
    # Ray 2.60's Train context logs each report at INFO under a logger named by its file path
    # (logging.getLogger(__file__)), which RunConfig's logging_config does not reach
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing more to quiet
        return "ray.train"
    return context.__file__


# Warnings each training worker printed that a user cannot act on: Lightning asks for
# sync_dist on val_pixel_error, which lpray already all-gathers over the ranks
# (PoseModule.on_validation_epoch_end); Lightning 2.6's pytree helper uses a torch class
# that torch 2.14 deprecates.
WORKER_WARNINGS = (
    r"It is recommended to use `self.log\('val_pixel_error'",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def quiet_training_worker() -> None:
    """In a Ray worker, raise :data:`WORKER_CHATTER` to the workers' log level and, above INFO,
    ignore :data:`WORKER_WARNINGS` (call before seeding: Lightning logs the seed).

    Ray forwards every worker's output to the driver's console, where these made up 171 of the
    main job's 488 lines (Ray Train reporting each epoch's result and checkpoint, Lightning
    announcing its accelerator, seed and checkpoint loading); the command's -v shows them. A
    plain process (``lpray train`` without workers) is left as it is.
    """
    # A Ray worker has imported Ray; a plain process need not import it (0.6 s) to know it is none
    if "ray" not in sys.modules:
        return
    from lpray.raywork import in_worker, worker_log_level

    if not in_worker():
        return
    level = worker_log_level()
    for name in (*WORKER_CHATTER, _ray_train_report_logger()):
        logging.getLogger(name).setLevel(level)
    if logging.getLevelName(level) > logging.INFO:
        for message in WORKER_WARNINGS:
            warnings.filterwarnings("ignore", message=message)


@dataclass(frozen=True)
class RayWorker:
    """The Ray Train worker a trainer is built for.

    Attributes:
        rank: the worker's world rank.
        world_size: how many workers train together.
        device: the device Ray Train assigned to the worker.
        resumes_from: the folder of the checkpoint this attempt restarts from (None: a fresh
            run); its step log, epoch log and TensorBoard events are continued.
    """

    rank: int
    world_size: int
    device: torch.device
    resumes_from: Path | None = None


def build_trainer(
    cfg: Config,
    model_dir: Path,
    *,
    worker: RayWorker | None = None,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> pl.Trainer:
    """The Lightning trainer of one training run, in one process or on one Ray Train worker.

    Args:
        cfg: the run's config.
        model_dir: the model directory; on a Ray Train worker a node-local folder standing in
            for it, of which only ``tb/`` is written (the rest travels in the checkpoints).
        worker: the Ray Train worker this trainer runs on; None for single-process training.
        callbacks: extra callbacks, after lpray's own (on a worker, before the checkpoint is
            reported, so that what they change in an epoch's metrics is reported).
        **overrides: ``pl.Trainer`` arguments that replace the built ones (benchmarks add a
            profiler this way).

    Returns:
        The trainer; :func:`throughput_meter` finds its meter.
    """
    t = cfg.training
    paths = ModelDir(Path(model_dir))
    # Watch a run live with `tensorboard --logdir MODEL_DIR`.
    tensorboard = pl.loggers.TensorBoardLogger(
        str(model_dir), name=layout.TENSORBOARD, version="", default_hp_metric=False
    )
    kwargs: dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        precision=t.precision,
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.val_every_n_epochs,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    if worker is None:
        kwargs.update(_single_process(cfg, paths, tensorboard, callbacks))
    else:
        kwargs.update(_ray_worker(cfg, paths, tensorboard, worker, callbacks))
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def throughput_meter(trainer: pl.Trainer) -> ThroughputMeter:
    """The trainer's throughput meter (every trainer :func:`build_trainer` makes has one)."""
    return next(c for c in trainer.callbacks if isinstance(c, ThroughputMeter))


def _single_process(
    cfg: Config,
    paths: ModelDir,
    tensorboard: pl.loggers.TensorBoardLogger,
    callbacks: Sequence[Callback],
) -> dict[str, Any]:
    t = cfg.training
    best = ModelCheckpoint(
        dirpath=paths.checkpoints,
        filename=layout.BEST,
        monitor="val_pixel_error",
        mode="min",
        save_top_k=1,
        # prediction needs the weights only: a third of the bytes of a resumable checkpoint,
        # and early in training it is rewritten nearly every epoch
        save_weights_only=True,
        enable_version_counter=False,
    )
    # "last" is a callback of its own (ModelCheckpoint's save_last only follows the monitored
    # saves): a rerun resumes after the last epoch it wrote.
    last = LastCheckpoint(paths.last_checkpoint, t.last_checkpoint_every_s)
    return dict(
        accelerator=t.accelerator,
        devices=1,
        callbacks=[best, last, ThroughputMeter(), EpochMetricsWriter(paths.metrics), *callbacks],
        logger=[
            pl.loggers.CSVLogger(str(paths.root), name=layout.LOGS, version=""),
            tensorboard,
        ],
        enable_progress_bar=t.progress_bar,
    )


def _ray_worker(
    cfg: Config,
    paths: ModelDir,
    tensorboard: pl.loggers.TensorBoardLogger,
    worker: RayWorker,
    callbacks: Sequence[Callback],
) -> dict[str, Any]:
    t = cfg.training
    restored = worker.resumes_from
    # Rank 0's events go to a folder of its own node (storage may be s3://, and the driver's
    # model directory may be on another node); each checkpoint carries a copy, and the run
    # continues the copy of the checkpoint it resumes from. The copy is small beside the
    # checkpoint: 6.8 KB after 18 logged steps and 6 epochs (~280 bytes a logged step) against
    # 134 MB for a ResNet-18 checkpoint with its optimizer state.
    if restored is not None and (restored / TENSORBOARD_NAME).is_dir():
        shutil.copytree(restored / TENSORBOARD_NAME, paths.tensorboard)
    step_log = StepLog.from_checkpoint_folder(restored)
    report = ReportCheckpoint(step_log, read_epoch_log(restored), paths.tensorboard)
    return dict(
        accelerator="gpu" if worker.device.type == "cuda" else "cpu",
        devices="auto",
        strategy=worker_strategy(worker.world_size, worker.device, t.unfreeze_epoch > 0),
        plugins=[RayEnvironment()],
        callbacks=[EpochThroughput(), step_log, *callbacks, report],
        # Ray keeps the checkpoints (ReportCheckpoint); Lightning writes none of its own.
        enable_checkpointing=False,
        logger=[tensorboard],
        use_distributed_sampler=False,  # loaders are sharded by lpray itself
        enable_progress_bar=t.progress_bar and worker.rank == 0,
    )

"""lpray.train.trainer.build_trainer: one config, one trainer, differing only where Ray must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies import SingleDeviceStrategy

from lpray.config import Config, config_from_dict
from lpray.io.layout import ModelDir
from lpray.train import callbacks as cb
from lpray.train.ray_lightning import RayDDP, RayEnvironment
from lpray.train.trainer import RayWorker, build_trainer, throughput_meter

from conftest import tiny_config

# Settings away from the defaults, so that each one is seen to come from the config.
TRAINING = {
    "max_epochs": 7,
    "precision": "bf16-mixed",
    "log_every_n_steps": 3,
    "val_every_n_epochs": 2,
    "last_checkpoint_every_s": 12.5,
    "unfreeze_epoch": 1,
}

# What both trainers share, read back from the built pl.Trainer.
SHARED = (
    "max_epochs",
    "precision",
    "log_every_n_steps",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "progress_bar_callback",
)


class Extra(pl.Callback):
    """A caller's callback (tests and benchmarks add their own)."""


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config_from_dict(
        tiny_config(tmp_path / "project", tmp_path / "model", training=TRAINING)
    )


def kinds(trainer: pl.Trainer) -> list[type]:
    return [type(c) for c in trainer.callbacks]


def plain_and_ray(cfg: Config, tmp_path: Path, **worker: Any) -> tuple[pl.Trainer, pl.Trainer]:
    plain = build_trainer(cfg, tmp_path / "model", callbacks=[Extra()])
    on_worker = RayWorker(**{"rank": 0, "world_size": 1, "device": torch.device("cpu"), **worker})
    ray = build_trainer(cfg, tmp_path / "node", worker=on_worker, callbacks=[Extra()])
    return plain, ray


def test_both_paths_get_the_same_settings_loggers_and_meter(cfg: Config, tmp_path: Path) -> None:
    plain, ray = plain_and_ray(cfg, tmp_path)
    for name in SHARED:
        assert getattr(plain, name) == getattr(ray, name), name
    assert (plain.max_epochs, plain.precision, plain.log_every_n_steps) == (7, "bf16-mixed", 3)
    assert (plain.check_val_every_n_epoch, plain.num_sanity_val_steps) == (2, 0)
    assert plain.progress_bar_callback is None  # training.progress_bar: false
    for trainer in (plain, ray):
        assert not any(isinstance(c, pl.callbacks.ModelSummary) for c in trainer.callbacks)
        assert isinstance(throughput_meter(trainer), cb.ThroughputMeter)
    # TensorBoard events in <model dir>/tb on both (a node-local stand-in on the worker)
    boards = [
        [lg for lg in t.loggers if isinstance(lg, pl.loggers.TensorBoardLogger)]
        for t in (plain, ray)
    ]
    assert [len(b) for b in boards] == [1, 1]
    assert Path(boards[0][0].log_dir) == ModelDir(tmp_path / "model").tensorboard
    assert Path(boards[1][0].log_dir) == ModelDir(tmp_path / "node").tensorboard
    assert not boards[0][0]._default_hp_metric and not boards[1][0]._default_hp_metric


def test_the_paths_differ_only_where_ray_must(cfg: Config, tmp_path: Path) -> None:
    plain, ray = plain_and_ray(cfg, tmp_path)
    paths = ModelDir(tmp_path / "model")
    # single process: best.ckpt (weights) and last.ckpt in the model directory, its epoch log
    # and step log there; the caller's callback after lpray's (Lightning puts ModelCheckpoint last)
    assert kinds(plain) == [
        cb.LastCheckpoint,
        cb.ThroughputMeter,
        cb.EpochMetricsWriter,
        Extra,
        ModelCheckpoint,
    ]
    best = plain.checkpoint_callback
    assert (Path(best.dirpath), best.filename) == (paths.checkpoints, "best")
    assert best.save_weights_only and best.monitor == "val_pixel_error" and best.save_top_k == 1
    last = next(c for c in plain.callbacks if isinstance(c, cb.LastCheckpoint))
    assert (last.path, last.every_s) == (paths.last_checkpoint, 12.5)
    writer = next(c for c in plain.callbacks if isinstance(c, cb.EpochMetricsWriter))
    assert writer.path == paths.metrics
    csv = [lg for lg in plain.loggers if isinstance(lg, pl.loggers.CSVLogger)]
    assert [Path(lg.log_dir) for lg in csv] == [paths.step_log.parent]
    assert isinstance(plain.strategy, SingleDeviceStrategy)
    # Ray worker: every epoch reported to Ray with the step log, epoch log and events inside
    # (Ray applies keep_checkpoints); the caller's callback before the report; no Lightning
    # checkpoints, no CSV files, lpray's own sharding, Ray's ranks
    assert kinds(ray) == [cb.EpochThroughput, cb.StepLog, Extra, cb.ReportCheckpoint]
    assert ray.checkpoint_callbacks == []
    assert [type(lg) for lg in ray.loggers] == [pl.loggers.TensorBoardLogger]
    assert ray._accelerator_connector.use_distributed_sampler is False
    assert isinstance(ray.strategy, SingleDeviceStrategy)  # one worker: no DDP wrapper


def test_several_workers_train_under_ddp_on_rays_ranks(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray.train

    class Context:
        """Ray Train's context of rank 1 of 2 (the builder runs outside a Ray worker here)."""

        def get_world_size(self) -> int:
            return 2

        def get_world_rank(self) -> int:
            return 1

        def get_local_rank(self) -> int:
            return 1

        def get_node_rank(self) -> int:
            return 0

    monkeypatch.setattr(ray.train, "get_context", Context)
    plain, ray_trainer = plain_and_ray(cfg, tmp_path, rank=1, world_size=2)
    assert isinstance(ray_trainer.strategy, RayDDP)
    assert isinstance(ray_trainer.strategy.cluster_environment, RayEnvironment)
    # training.unfreeze_epoch > 0: the frozen backbone has no gradients at first
    assert ray_trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    assert (ray_trainer.world_size, ray_trainer.global_rank) == (2, 1)
    assert kinds(ray_trainer) == [cb.EpochThroughput, cb.StepLog, Extra, cb.ReportCheckpoint]


def test_a_resumed_worker_continues_the_logs_of_its_checkpoint(cfg: Config, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint"
    (folder / cb.TENSORBOARD_NAME).mkdir(parents=True)
    (folder / cb.TENSORBOARD_NAME / "events.out").write_text("old events")
    pd.DataFrame([{"epoch": 0, "step": 2, "train/loss": 1.0}]).to_csv(
        folder / cb.STEP_LOG_NAME, index=False
    )
    pd.DataFrame([{"epoch": 0, "step": 2, "val_pixel_error": 3.0}]).to_csv(
        folder / cb.EPOCH_LOG_NAME, index=False
    )
    _, ray = plain_and_ray(cfg, tmp_path, resumes_from=folder)
    tensorboard = ModelDir(tmp_path / "node").tensorboard
    assert (tensorboard / "events.out").read_text() == "old events"
    step_log = next(c for c in ray.callbacks if isinstance(c, cb.StepLog))
    report = next(c for c in ray.callbacks if isinstance(c, cb.ReportCheckpoint))
    assert step_log.rows == [{"epoch": 0, "step": 2, "train/loss": 1.0}]
    assert report.step_log is step_log
    assert report.epoch_rows == [{"epoch": 0, "step": 2, "val_pixel_error": 3.0}]
    assert report.tensorboard_dir == tensorboard

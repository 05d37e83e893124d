"""Distributed training on Ray Train: ``lpray train CONFIG --workers N``.

Each worker runs the same LightningModule under ``RayDDPStrategy``; it reads its own labeled
shard (a ``DistributedSampler`` slice) and its own video shard (``shard_id`` = world rank), so no
data passes through the driver. Every epoch, all ranks save and report a checkpoint with
``RayTrainReportCallback`` to ``storage_path`` (any pyarrow/fsspec filesystem). A worker failure
restarts the workers from the latest reported checkpoint (``FailureConfig``); running the same
config again (same run name and storage) continues from that checkpoint too, e.g. with a larger
``training.max_epochs``.

Batch semantics: ``training.batch_size`` is PER WORKER; the global batch is
``workers * batch_size``. Keep the learning rate when you keep the global batch; when you scale the
global batch up k times, scale ``training.lr`` up to k times (linear scaling), with a warm-up if
training becomes unstable.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lpray.config import Config, config_from_dict, save_config
from lpray.train.fit import ThroughputMeter, build_module, write_summary

CHECKPOINT_NAME = "checkpoint.ckpt"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train
    import ray.train.torch
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    from lpray.train.data import labeled_loader, make_train_loader, prepare_data

    cfg = config_from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    pl.seed_everything(cfg.training.seed, workers=True)  # same init on every rank
    bundle = prepare_data(cfg)
    module = build_module(cfg, bundle)
    device = ray.train.torch.get_device()
    train_loader = make_train_loader(
        cfg, bundle, module.model.context, shard_id=rank, num_shards=world, device=device.type
    )
    # Validation is small: every rank scores the whole val split, so all ranks agree on it.
    val_indices = bundle.split.val if len(bundle.split.val) else bundle.split.train
    val_loader = labeled_loader(cfg, bundle, val_indices, False, module.model.context)
    meter = ThroughputMeter()
    trainer = pl.Trainer(
        max_epochs=cfg.training.max_epochs,
        accelerator="auto",
        devices="auto",
        precision=cfg.training.precision,
        strategy=RayDDPStrategy(find_unused_parameters=cfg.training.unfreeze_epoch > 0),
        plugins=[RayLightningEnvironment()],
        callbacks=[meter, ThroughputReporter(meter), RayTrainReportCallback()],
        enable_checkpointing=False,
        logger=False,
        use_distributed_sampler=False,  # loaders are sharded by lpray itself
        enable_progress_bar=cfg.training.progress_bar and rank == 0,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.training.val_every_n_epochs,
        log_every_n_steps=cfg.training.log_every_n_steps,
    )
    trainer = prepare_trainer(trainer)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.fit(module, train_loader, val_loader)
    else:
        with checkpoint.as_directory() as folder:
            trainer.fit(
                module, train_loader, val_loader, ckpt_path=os.path.join(folder, CHECKPOINT_NAME)
            )


class ThroughputReporter(pl.Callback):
    """Adds the labeled frames/s of all ranks together to each epoch's reported metrics."""

    def __init__(self, meter: ThroughputMeter) -> None:
        self.meter = meter

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        rate = self.meter.frames / self.meter.seconds if self.meter.seconds else 0.0
        total = module.all_gather(torch.tensor(rate, device=module.device)).sum()
        trainer.callback_metrics["labeled_frames_per_second"] = total.detach().cpu()


def storage_and_filesystem(storage_path: str) -> tuple[str, Any]:
    """A storage path Ray accepts: local folders as-is, other URLs via a pyarrow filesystem.

    ``s3://`` and ``gs://`` work natively in pyarrow; any other fsspec protocol is wrapped with
    ``PyFileSystem(FSSpecHandler(...))``.
    """
    if "://" not in storage_path or storage_path.startswith("file://"):
        local = (
            storage_path[len("file://") :] if storage_path.startswith("file://") else storage_path
        )
        return str(Path(local).resolve()), None
    protocol, inner = storage_path.split("://", 1)
    if protocol in ("s3", "gs", "gcs"):
        return storage_path, None
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return inner, PyFileSystem(FSSpecHandler(fsspec.filesystem(protocol)))


def run_name(cfg: Config) -> str:
    return Path(cfg.training.output_dir).resolve().name


def make_torch_trainer(
    cfg: Config,
    num_workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    max_failures: int = 2,
    name: str | None = None,
) -> Any:
    """The ``TorchTrainer`` for one run (also used by Tune trials)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = storage_path or str(Path(cfg.training.output_dir).resolve().parent / "ray")
    storage, filesystem = storage_and_filesystem(storage)
    resources = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict()},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(
            name=name or run_name(cfg),
            storage_path=storage,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=None,  # keep all: the epoch history stays complete after a recovery
                checkpoint_score_attribute="val_pixel_error",
                checkpoint_score_order="min",
            ),
            worker_runtime_env={"env_vars": worker_env()},
        ),
    )


def worker_env() -> dict[str, str]:
    """Environment every worker needs: NVLink multicast off (see the device notes), threads."""
    env = {"NCCL_NVLS_ENABLE": "0"}
    for key in ("NCCL_NVLS_ENABLE", "NCCL_CUMEM_ENABLE", "RAY_AUTH_MODE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def ensure_ray(address: str | None = None) -> None:
    """Connect to a running cluster (RAY_ADDRESS / ``ray job submit``) or start a local one."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=address, include_dashboard=False, log_to_driver=True)


def train_distributed(
    cfg: Config,
    num_workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    max_failures: int = 2,
) -> Path:
    """Train on ``num_workers`` Ray Train workers; returns the local model directory."""
    from lpray.train.data import prepare_data

    ensure_ray()
    model_dir = Path(cfg.training.output_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, model_dir / "config.yaml")
    bundle = prepare_data(cfg)  # builds the synthetic project once, before workers race for it
    trainer = make_torch_trainer(
        cfg, num_workers, gpus_per_worker, cpus_per_worker, storage_path, max_failures
    )
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    if result.error is not None:
        raise RuntimeError(f"Ray Train run failed: {result.error}")
    export_result(cfg, bundle, result, model_dir, seconds)
    return model_dir


def reported_metrics(result: Any) -> list[dict[str, Any]]:
    """Every epoch's reported metrics, in epoch order (one row per reported checkpoint)."""
    rows = [dict(metrics) for _, metrics in (result.best_checkpoints or [])]
    return sorted(rows, key=lambda r: (r.get("epoch", 0), r.get("step", 0)))


def export_result(cfg: Config, bundle: Any, result: Any, model_dir: Path, seconds: float) -> None:
    """Copy best/last checkpoints into the model directory; write metrics.csv and summary.json."""
    import pandas as pd

    from lpray.io.storage import atomic_write

    checkpoints = model_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    pairs = list(result.best_checkpoints or [])
    best = min(pairs, key=lambda p: p[1].get("val_pixel_error", float("inf")))[0] if pairs else None
    for label, checkpoint in (("best", best), ("last", result.checkpoint)):
        if checkpoint is None:
            continue
        with checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / CHECKPOINT_NAME, checkpoints / f".{label}.tmp")
        os.replace(checkpoints / f".{label}.tmp", checkpoints / f"{label}.ckpt")
    rows = reported_metrics(result)
    with atomic_write(model_dir / "metrics.csv", "w") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    last = rows[-1] if rows else {}
    write_summary(
        cfg,
        bundle,
        model_dir,
        seconds,
        int(last.get("step", 0)),
        last.get("labeled_frames_per_second"),
    )
    with open(model_dir / "ray_run.json", "w") as handle:
        json.dump(
            {"path": str(result.path), "epochs_reported": [r.get("epoch") for r in rows]}, handle
        )

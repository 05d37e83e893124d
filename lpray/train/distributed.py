"""Distributed training on Ray Train: ``lpray train CONFIG --workers N``.

Each worker runs the same LightningModule under DDP; it builds its own labeled shard (a
``DistributedSampler`` slice) and its own video shard (``shard_id`` = world rank), so no data passes
through the driver. After every epoch all ranks save one Lightning checkpoint (rank 0 writes it,
together with the step log, the epoch log and its TensorBoard events) and report it, with the
epoch's metrics, to ``storage_path`` on any pyarrow/fsspec filesystem; Ray keeps the latest and
the best of them (``training.keep_checkpoints``, :func:`checkpoint_config`). A worker failure
restarts the workers from the latest reported checkpoint (``FailureConfig``); running the same
config again (same run name, i.e. model directory name, and the same storage) continues from that
checkpoint too, e.g. with a larger ``training.max_epochs``.

Batch semantics: ``training.batch_size`` and ``training.unlabeled_sequences`` are PER WORKER; one
optimizer step sees ``workers * batch_size`` labeled frames (DDP averages the workers' gradients, so
a step on N workers x B frames equals a step on 1 worker x N*B frames) and
``workers * unlabeled_sequences`` video clips. An epoch is one pass over the labeled train split, so
N workers take N times fewer steps per epoch. Keep the learning rate when you keep the global batch;
when you scale the global batch up k times, scale ``training.lr`` up to k times (linear scaling),
with a warm-up if training becomes unstable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy, Strategy

from lpray.config import Config, config_from_dict, save_config
from lpray.errors import UserError
from lpray.io import layout
from lpray.io.layout import ModelDir
from lpray.io.storage import exists, is_local, join, local_path
from lpray.raywork import ensure_ray, worker_env
from lpray.train.fit import ThroughputMeter, build_module, plan_run, report_finished, write_summary
from lpray.train.model_dir import ModelDirError, discard, staging_dir, swap_in, write_fingerprint

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.ckpt"
STEP_LOG_NAME = "steps.csv"
# Every epoch's metrics so far, saved in each checkpoint: with checkpoint retention Ray's own
# record of reported metrics keeps only the retained checkpoints' rows.
EPOCH_LOG_NAME = "epochs.csv"
# Rank 0's TensorBoard event files, saved in each checkpoint like the step log.
TENSORBOARD_NAME = "tb"
# The metric checkpoints are ranked by (the module logs it after each validation).
SCORE_METRIC = "val_pixel_error"
# Longest wait for the controller to register an epoch's checkpoint before training goes on.
COMMIT_TIMEOUT_S = 300.0


# -- Lightning under Ray Train ------------------------------------------------------------------
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


def scalar_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's current one-number metrics as floats (what Ray and CSV files can hold)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


class EpochThroughput(ThroughputMeter):
    """Adds each epoch's labeled and unlabeled frames/s, summed over all ranks, to the metrics.

    The clock runs from the epoch's start to its last training batch, so data loading and video
    decoding count (most of the cost on CPU) and validation and checkpointing do not. The rate is
    all ranks' frames over the slowest rank's time: what the whole job achieves. (The parent's
    totals, which time the training step alone, stay available for the single-process summary.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch_labeled = 0
        self.epoch_unlabeled = 0
        self.epoch_seconds = 0.0
        self._epoch_start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.epoch_labeled, self.epoch_unlabeled, self.epoch_seconds = 0, 0, 0.0
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, idx)
        labeled = batch["labeled"] if "labeled" in batch else batch
        self.epoch_labeled += int(labeled["image"].shape[0])
        if batch.get("unlabeled") is not None:
            self.epoch_unlabeled += int(batch["unlabeled"]["frames"].shape[:2].numel())
        self.epoch_seconds = time.perf_counter() - self._epoch_start

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        counts = torch.tensor([self.epoch_labeled, self.epoch_unlabeled], dtype=torch.float64)
        seconds = torch.tensor([self.epoch_seconds], dtype=torch.float64)
        if trainer.world_size > 1:
            counts = module.all_gather(counts.to(module.device)).sum(0).cpu()
            seconds = module.all_gather(seconds.to(module.device)).max().reshape(1).cpu()
        rate = counts / seconds.clamp(min=1e-9)
        trainer.callback_metrics["labeled_frames_per_second"] = rate[0].float()
        trainer.callback_metrics["unlabeled_frames_per_second"] = rate[1].float()


class StepLog(pl.Callback):
    """Per-step training metrics (every ``log_every_n_steps``), kept on rank 0.

    The log is saved inside every checkpoint, so it reaches the run's storage with it and a restart
    continues the log of the checkpoint it resumes from (steps after it are not double-counted).
    """

    def __init__(self, rows: list[dict[str, float]] | None = None) -> None:
        self.rows = list(rows or [])

    @classmethod
    def from_checkpoint_folder(cls, folder: Path | None) -> StepLog:
        """The log saved with a checkpoint (empty for a fresh run or an old checkpoint)."""
        import pandas as pd

        path = folder / STEP_LOG_NAME if folder is not None else None
        if path is None or not path.is_file():
            return cls()
        return cls(pd.read_csv(path).to_dict("records"))

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not trainer.is_global_zero or trainer.global_step % trainer.log_every_n_steps:
            return
        metrics = {k: v for k, v in scalar_metrics(trainer).items() if k.startswith("train")}
        self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics})

    def write(self, path: Path) -> None:
        import pandas as pd

        pd.DataFrame(self.rows).to_csv(path, index=False)


def read_epoch_log(folder: Path | None) -> list[dict[str, Any]]:
    """The per-epoch metrics saved with a checkpoint ([] for a fresh run or an old checkpoint)."""
    import pandas as pd

    path = folder / EPOCH_LOG_NAME if folder is not None else None
    if path is None or not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


class ReportCheckpoint(pl.Callback):
    """Every epoch: save one Lightning checkpoint (+ step log, epoch log, TensorBoard events) and
    report it with the metrics.

    Every rank calls ``save_checkpoint`` (it is collective) and ``ray.train.report`` (a barrier);
    only rank 0 attaches the folder, so storage receives exactly one copy. Rank 0 then waits until
    the checkpoint is registered, so a failure after an epoch's end never costs that epoch.

    The epoch log (one row of metrics per epoch, continued from the checkpoint the run resumed
    from) travels inside the checkpoint because retention deletes older checkpoints, and Ray's
    record of reported metrics goes with them.
    """

    def __init__(
        self,
        step_log: StepLog,
        epoch_rows: list[dict[str, Any]] | None = None,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.step_log = step_log
        self.epoch_rows = list(epoch_rows or [])
        self.tensorboard_dir = tensorboard_dir

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import ray.train

        epoch = trainer.current_epoch
        metrics = {
            **scalar_metrics(trainer),
            "epoch": epoch,
            "step": trainer.global_step,
            "reported_at": time.time(),
        }
        self.epoch_rows = [r for r in self.epoch_rows if r.get("epoch") != epoch] + [metrics]
        with tempfile.TemporaryDirectory(prefix="lpray-checkpoint-") as folder:
            trainer.save_checkpoint(os.path.join(folder, CHECKPOINT_NAME))
            checkpoint = None
            if trainer.is_global_zero:
                import pandas as pd

                self.step_log.write(Path(folder) / STEP_LOG_NAME)
                pd.DataFrame(self.epoch_rows).to_csv(Path(folder) / EPOCH_LOG_NAME, index=False)
                self._save_tensorboard(trainer, Path(folder) / TENSORBOARD_NAME)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(
                metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{epoch:05d}"
            )
        if trainer.is_global_zero:
            # The controller registers reports when it polls (every ~2 s); a worker dying before
            # then would lose this epoch's checkpoint. Wait until it is committed.
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                timeout_s=COMMIT_TIMEOUT_S,
            )

    def _save_tensorboard(self, trainer: pl.Trainer, target: Path) -> None:
        """Copy rank 0's event files (flushed first) into the checkpoint folder."""
        if self.tensorboard_dir is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.TensorBoardLogger):
                logger.experiment.flush()
        if self.tensorboard_dir.is_dir():
            shutil.copytree(self.tensorboard_dir, target)


@contextlib.contextmanager
def restored_checkpoint() -> Iterator[Path | None]:
    """The folder of the checkpoint Ray Train hands this attempt (None on a fresh run)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs.

    ``loop_config``: ``config`` (``Config.to_dict()``) and optionally ``callbacks``, extra
    Lightning callbacks for this run (tests use them to record batches or kill a worker).
    """
    import ray.train
    import ray.train.torch

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
    # Validation is small: every rank scores the whole val split (the module all-gathers the
    # error sums, so the mean is exact; a sharded split would be padded with repeated frames).
    val_indices = bundle.split.val if len(bundle.split.val) else bundle.split.train
    val_loader = labeled_loader(cfg, bundle, val_indices, False, module.model.context)
    with restored_checkpoint() as folder, tempfile.TemporaryDirectory(prefix="lpray-tb-") as tb:
        step_log = StepLog.from_checkpoint_folder(folder)
        # Rank 0 writes TensorBoard events to a folder of its own node (storage may be s3://, and
        # the driver's model directory may be on another node); each checkpoint carries a copy,
        # and the run continues the copy of the checkpoint it resumes from. The copy is small
        # beside the checkpoint: 6.8 KB after 18 logged steps and 6 epochs (~280 bytes a logged
        # step) against 134 MB for a ResNet-18 checkpoint with its optimizer state.
        tensorboard_dir = Path(tb) / TENSORBOARD_NAME
        if folder is not None and (folder / TENSORBOARD_NAME).is_dir():
            shutil.copytree(folder / TENSORBOARD_NAME, tensorboard_dir)
        callbacks = [
            EpochThroughput(),
            step_log,
            *loop_config.get("callbacks", ()),
            ReportCheckpoint(step_log, read_epoch_log(folder), tensorboard_dir),
        ]
        trainer = pl.Trainer(
            max_epochs=cfg.training.max_epochs,
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices="auto",
            precision=cfg.training.precision,
            strategy=worker_strategy(world, device, cfg.training.unfreeze_epoch > 0),
            plugins=[RayEnvironment()],
            callbacks=callbacks,
            enable_checkpointing=False,
            logger=pl.loggers.TensorBoardLogger(
                tb, name=TENSORBOARD_NAME, version="", default_hp_metric=False
            ),
            use_distributed_sampler=False,  # loaders are sharded by lpray itself
            enable_progress_bar=cfg.training.progress_bar and rank == 0,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=cfg.training.val_every_n_epochs,
            log_every_n_steps=cfg.training.log_every_n_steps,
        )
        resume = str(folder / CHECKPOINT_NAME) if folder is not None else None
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume)


# -- driver side --------------------------------------------------------------------------------


def storage_and_filesystem(storage_path: str) -> tuple[str, Any]:
    """A storage path Ray accepts, and the pyarrow filesystem to use (None: a local folder).

    Local folders and ``file://`` URLs become absolute paths. Every URL (``s3://``, ``gs://``,
    ``abfs://``, ...) is opened by fsspec, exactly as lpray's own reads and writes open it, and
    handed to Ray wrapped as ``PyFileSystem(FSSpecHandler(...))``: so the endpoint and options
    fsspec and botocore take from the environment (``AWS_ENDPOINT_URL`` for an S3-compatible
    store, fsspec's ``FSSPEC_S3_*`` configuration, the standard credential chains) apply to Ray
    Train and Tune too. pyarrow's own S3 client, which Ray would pick for a bare ``s3://`` path,
    reads neither fsspec's configuration nor, in every release, ``AWS_ENDPOINT_URL``.

    Credentials stay in the environment: the filesystem Ray pickles to its workers carries the
    options fsspec was given (none by default), and every worker resolves credentials itself.
    """
    if "://" not in storage_path or storage_path.startswith("file://"):
        local = storage_path.removeprefix("file://")
        return str(Path(local).resolve()), None
    from fsspec.core import url_to_fs
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, inner = url_to_fs(storage_path)
    return inner.rstrip("/"), PyFileSystem(FSSpecHandler(fs))


def run_name(cfg: Config) -> str:
    """The Ray run name: the model directory's name, so a rerun of a model resumes its run."""
    return Path(cfg.training.output_dir).resolve().name


def default_storage(cfg: Config) -> str:
    """Without ``--storage``: a ``ray`` folder beside the model directory."""
    return str(Path(cfg.training.output_dir).resolve().parent / "ray")


def make_torch_trainer(
    cfg: Config,
    num_workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    max_failures: int = 2,
    name: str | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> Any:
    """The ``TorchTrainer`` for one run (also used by Tune trials).

    Args:
        cfg: the run's config.
        num_workers: Ray Train workers (DDP ranks).
        gpus_per_worker: GPUs per worker; > 0 selects NCCL, else gloo on CPU.
        cpus_per_worker: CPUs per worker (Ray sets the worker's OMP_NUM_THREADS from it).
        storage_path: where checkpoints and metrics go; default :func:`default_storage`.
        max_failures: worker-group restarts (from the latest checkpoint) before the run fails.
        name: run name; default :func:`run_name`.
        callbacks: extra Lightning callbacks every worker adds (pickled to the workers).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage, filesystem = storage_and_filesystem(storage_path or default_storage(cfg))
    resources = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "callbacks": list(callbacks)},
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
        ),
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(
            name=name or run_name(cfg),
            storage_path=storage,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=checkpoint_config(cfg.training.keep_checkpoints),
            worker_runtime_env={"env_vars": worker_env()},
        ),
    )


def checkpoint_config(keep: int) -> Any:
    """Ray's retention for ``training.keep_checkpoints``: the latest checkpoint plus the best.

    Ray 2.60's checkpoint manager (``ray/train/v2/_internal/execution/checkpoint/
    checkpoint_manager.py``, ``_save_state_and_delete_old_checkpoints``) ranks the checkpoints by
    the score attribute, deletes all but the ``num_to_keep`` best, and never deletes the latest
    one, whatever its score; restarted workers get that latest checkpoint
    (``before_init_train_context``). So ``num_to_keep = keep - 1`` keeps the ``keep - 1`` best by
    validation pixel error plus the latest: at most ``keep`` folders (``keep - 1`` when the latest
    is among the best), and a restart always resumes from the newest epoch, never from an older
    best one. (``num_to_keep = keep`` would hold ``keep + 1`` folders whenever the latest is not
    among the best.) ``keep = 1`` keeps only the latest (no score: ordered by time); best.ckpt is
    then the last epoch's.
    """
    from ray.train import CheckpointConfig

    if keep <= 1:
        return CheckpointConfig(num_to_keep=1)
    return CheckpointConfig(
        num_to_keep=keep - 1,
        checkpoint_score_attribute=SCORE_METRIC,
        checkpoint_score_order="min",
    )


class TrainRunError(UserError, RuntimeError):
    """A Ray Train run that ended with an error (the message carries the workers' error)."""


def _run_folder(cfg: Config, storage_path: str | None) -> str:
    """Where the run's checkpoints live on storage: ``<storage>/<run name>``."""
    return join(storage_path or default_storage(cfg), run_name(cfg))


def _move_aside(folder: str) -> str | None:
    """Rename an old run folder out of the way (local storage); returns its new path."""
    if not exists(folder):
        return None
    if not is_local(folder):
        raise ModelDirError(
            f"--storage: {folder} holds the old model's Ray Train run; --overwrite replaces runs "
            "on local storage only: delete that folder yourself, or train into another "
            "training.output_dir"
        )
    source = local_path(folder)
    aside = source.with_name(f".{source.name}.lpray-old-{os.getpid()}-{int(time.time())}")
    os.replace(source, aside)
    return str(aside)


def train_distributed(
    cfg: Config,
    num_workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    storage_path: str | None = None,
    max_failures: int = 2,
    callbacks: Sequence[pl.Callback] = (),
    overwrite: bool = False,
) -> Path:
    """Train on ``num_workers`` Ray Train workers; returns the local model directory.

    The model directory gets what the single-process trainer writes (config.yaml, best/last
    checkpoints, metrics.csv, logs/metrics.csv, summary.json, lpray_fingerprint.json, ...) plus
    ``ray_run.json`` naming the run on storage. metrics.csv and summary.json are also copied to
    the run folder on storage.

    As for :func:`lpray.train.fit.train`, every input is checked and the model directory compared
    with the run's inputs before anything is written; ``overwrite`` trains the replacement in a
    temporary sibling (the old run folder on storage moved aside) and swaps it in when complete.
    A run folder on storage without a model directory beside it (a model directory deleted by
    hand) would silently resume someone else's checkpoints: it is an error unless ``overwrite``.
    """
    model_dir = Path(cfg.training.output_dir)
    # also builds the synthetic project once, before workers race for it
    bundle, record, state = plan_run(cfg, overwrite)
    if state == "finished":
        report_finished(model_dir)
        return model_dir
    run_folder = _run_folder(cfg, storage_path)
    if state == "new" and not overwrite and exists(run_folder):
        raise ModelDirError(
            f"--storage: {run_folder} already holds a Ray Train run of this name, but "
            f"{model_dir} holds no model from it; rerun with --overwrite to start afresh, or "
            "train into another training.output_dir"
        )
    ensure_ray()
    aside = _move_aside(run_folder) if overwrite else None
    work = staging_dir(model_dir) if state == "replace" else model_dir
    try:
        _fit_distributed(
            cfg,
            bundle,
            record,
            work,
            num_workers,
            gpus_per_worker,
            cpus_per_worker,
            storage_path,
            max_failures,
            callbacks,
        )
    except BaseException:
        if aside is not None:  # put the old run back, drop the new one
            with contextlib.suppress(OSError):
                shutil.rmtree(local_path(run_folder))
            os.replace(aside, local_path(run_folder))
        if work != model_dir:
            discard(work)
        raise
    if work != model_dir:
        swap_in(work, model_dir)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return model_dir


def _fit_distributed(
    cfg: Config,
    bundle: Any,
    record: dict[str, Any],
    model_dir: Path,
    num_workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    storage_path: str | None,
    max_failures: int,
    callbacks: Sequence[pl.Callback],
) -> None:
    trainer = make_torch_trainer(
        cfg,
        num_workers,
        gpus_per_worker,
        cpus_per_worker,
        storage_path,
        max_failures,
        callbacks=callbacks,
    )
    model_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, ModelDir(model_dir).config)
    write_fingerprint(model_dir, record)
    started_at = time.time()
    started = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - started
    if result.error is not None:
        raise TrainRunError(
            f"{model_dir}: the Ray Train run failed: {describe(result.error)}"
        ) from result.error
    export_result(cfg, bundle, result, model_dir, seconds, started_at)


def describe(error: BaseException) -> str:
    """The first line of the workers' error (Ray wraps it in a traceback-laden message)."""
    cause = error
    while getattr(cause, "__cause__", None) is not None:
        cause = cause.__cause__
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def reported_metrics(result: Any) -> list[dict[str, Any]]:
    """The reported metrics of the checkpoints Ray kept, in epoch order (one row each)."""
    rows = [dict(metrics) for _, metrics in (result.best_checkpoints or [])]
    return sorted(rows, key=lambda r: (r.get("epoch", 0), r.get("step", 0)))


def _copy_files(folder: Path, files: dict[str, Path]) -> None:
    """Copy files out of a checkpoint's local folder, each atomically (missing ones skipped)."""
    for name, target in files.items():
        source = folder / name
        if not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, target)


def _copy_folder(source: Path, target: Path) -> None:
    """Replace ``target`` with a copy of ``source`` (nothing when ``source`` is absent)."""
    if not source.is_dir():
        return
    partial = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def _upload(result: Any, model_dir: Path, names: Sequence[str]) -> None:
    """Copy model-directory files into the run folder on storage (through Ray's filesystem)."""
    filesystem = result.filesystem
    for name in names:
        with filesystem.open_output_stream(f"{result.path}/{name}") as out:
            out.write((model_dir / name).read_bytes())


def export_result(
    cfg: Config,
    bundle: Any,
    result: Any,
    model_dir: Path,
    seconds: float,
    started_at: float = 0.0,
) -> None:
    """Fill the model directory from a finished run.

    best.ckpt is the kept checkpoint with the lowest validation pixel error, last.ckpt the
    latest one (with the step log and the TensorBoard events, into ``tb/``); metrics.csv has one
    row per epoch. summary.json's step count and throughput cover only the epochs this invocation
    trained (``started_at``: its start, unix seconds), like the single-process trainer's.
    """
    import pandas as pd

    from lpray.io.storage import atomic_write

    paths = ModelDir(model_dir)
    pairs = list(result.best_checkpoints or [])
    scored = [p for p in pairs if p[1].get(SCORE_METRIC) is not None]
    if scored:
        best = min(scored, key=lambda p: p[1][SCORE_METRIC])[0]
        with best.as_directory() as folder:
            _copy_files(Path(folder), {CHECKPOINT_NAME: paths.best_checkpoint})
    rows: list[dict[str, Any]] = []
    if result.checkpoint is not None:
        # one download of the latest checkpoint (storage may be remote) for everything in it
        with result.checkpoint.as_directory() as folder:
            latest = Path(folder)
            _copy_files(
                latest,
                {
                    CHECKPOINT_NAME: paths.last_checkpoint,
                    # where the single-process trainer's CSVLogger writes its step log
                    STEP_LOG_NAME: paths.step_log,
                },
            )
            _copy_folder(latest / TENSORBOARD_NAME, paths.tensorboard)
            # Every epoch's metrics: the latest checkpoint's epoch log is complete whatever
            # retention deleted; a run of older checkpoints without one has Ray's rows only.
            rows = read_epoch_log(latest)
        if not scored:
            shutil.copyfile(paths.last_checkpoint, paths.best_checkpoint)
    rows = sorted(rows, key=lambda r: (r.get("epoch", 0), r.get("step", 0)))
    rows = rows or reported_metrics(result)
    with atomic_write(paths.metrics, "w") as handle:
        pd.DataFrame(rows).to_csv(handle, index=False)
    new = [r for r in rows if r.get("reported_at", 0.0) >= started_at]
    before = [r for r in rows if r.get("reported_at", 0.0) < started_at]
    steps = int(new[-1]["step"] - (before[-1]["step"] if before else 0)) if new else 0
    rates = pd.Series([r.get("labeled_frames_per_second") for r in new], dtype=float).dropna()
    write_summary(
        cfg, bundle, model_dir, seconds, steps, float(rates.median()) if len(rates) else None
    )
    with open(paths.ray_run, "w") as handle:
        json.dump({"path": str(result.path), "epochs_reported": [r["epoch"] for r in rows]}, handle)
    _upload(result, model_dir, [layout.METRICS, layout.SUMMARY])

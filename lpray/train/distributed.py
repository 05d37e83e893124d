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

from lpray.config import Config, config_from_dict, save_config
from lpray.errors import UserError
from lpray.io import layout
from lpray.io.layout import ModelDir
from lpray.io.storage import exists, is_local, join, local_path
from lpray.raywork import ensure_ray, worker_env, worker_log_level
from lpray.train.callbacks import (
    CHECKPOINT_NAME,
    SCORE_METRIC,
    STEP_LOG_NAME,
    TENSORBOARD_NAME,
    read_epoch_log,
)
from lpray.train.fit import build_module, plan_run, report_finished, write_summary
from lpray.train.model_dir import ModelDirError, discard, staging_dir, swap_in, write_fingerprint
from lpray.train.trainer import RayWorker, build_trainer, quiet_training_worker

log = logging.getLogger(__name__)


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
    quiet_training_worker()
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
    # The trainer's stand-in for the model directory is a folder of this node (rank 0's
    # TensorBoard events); the rest of the run travels in the checkpoints it reports.
    with (
        restored_checkpoint() as folder,
        tempfile.TemporaryDirectory(prefix="lpray-worker-") as local,
    ):
        worker = RayWorker(rank=rank, world_size=world, device=device, resumes_from=folder)
        trainer = build_trainer(
            cfg, Path(local), worker=worker, callbacks=loop_config.get("callbacks", ())
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
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
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
            # the controller's "requesting resources / started worker group" lines at INFO
            logging_config=LoggingConfig(log_level=worker_log_level()),
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

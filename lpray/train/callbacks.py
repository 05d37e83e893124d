"""The Lightning callbacks of lpray's training runs, for :mod:`lpray.train.trainer` to assemble.

Both paths: :class:`ThroughputMeter` (the summary's frames/s). Single process: the model
directory's ``metrics.csv`` (:class:`EpochMetricsWriter`) and ``last.ckpt``
(:class:`LastCheckpoint`). Ray Train workers: :class:`EpochThroughput` (each epoch's rate, all
ranks together), :class:`StepLog` and :class:`ReportCheckpoint`, which carry the step log, the
epoch log and the TensorBoard events inside each reported checkpoint (storage may be remote and
the driver on another node), under the names below.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lpray.io.storage import atomic_write

# What a Ray Train epoch checkpoint folder holds (lpray.train.distributed.export_result reads them).
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


def scalar_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's current one-number metrics as floats (what Ray and CSV files can hold)."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


class ThroughputMeter(Callback):
    """Counts labeled frames and wall time of training batches (not validation)."""

    def __init__(self) -> None:
        self.frames = 0
        self.seconds = 0.0
        self.steps = 0
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        labeled = batch["labeled"] if "labeled" in batch else batch
        self.frames += int(labeled["image"].shape[0])
        self.steps += 1
        self.seconds += time.perf_counter() - self._start


class EpochMetricsWriter(Callback):
    """Appends one row per epoch to ``metrics.csv`` (rewritten atomically each epoch)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # After the epoch's validation (Lightning validates inside the epoch, before this hook).
    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        import pandas as pd

        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(scalar_metrics(trainer))
        rows = pd.read_csv(self.path).to_dict("records") if self.path.exists() else []
        rows = [r for r in rows if r["epoch"] != row["epoch"]] + [row]
        with atomic_write(self.path, "w") as handle:
            pd.DataFrame(rows).to_csv(handle, index=False)


class LastCheckpoint(Callback):
    """Writes ``last.ckpt``, the full resume state (optimizer included), at the end of an epoch
    once ``every_s`` seconds have passed since the previous write, and always after the final
    epoch. Written to a temporary name and renamed, so a crash mid-write keeps the old one.

    Every epoch would be simplest, but with short epochs the writes dominate: on the
    mirror-mouse example (5 steps an epoch, ResNet-18, 135 MB with Adam's state) they took
    0.4 s of a 2.4 s epoch on 2 CPU cores.
    """

    def __init__(self, path: Path, every_s: float) -> None:
        self.path = path
        self.every_s = every_s
        self._written = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        final = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        if not final and time.monotonic() - self._written < self.every_s:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            partial.replace(self.path)
        self._written = time.monotonic()


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


class StepLog(Callback):
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


class ReportCheckpoint(Callback):
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

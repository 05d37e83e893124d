"""Ray Train on CPU (gloo), for real: shards, storage through fsspec, continuing, recovery, DDP maths.

Every run here is a real multi-process Ray Train run on the session's local cluster, on the tiny
synthetic project. Test-only behaviour (recording batches, killing a worker, freezing BatchNorm)
enters through ``train_distributed(callbacks=...)``: plain Lightning callbacks pickled to the
workers, so the library carries no test switches.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl

from lpray.config import config_from_dict
from lpray.data.labeled import read_labeled_frames
from lpray.io.layout import ModelDir
from lpray.train.data import prepare_data
from lpray.train.distributed import storage_and_filesystem, train_distributed

from conftest import tensorboard_scalars, tiny_config

pytestmark = pytest.mark.slow

SEMI = {"temporal": {"weight": 1e-3, "epsilon": 2.0}, "anneal_rate": 1.0}
HALF_CPU = 0.5  # two workers share the 2-CPU test cluster


@pytest.fixture(scope="module", autouse=True)
def callbacks_travel_by_value(ray_cluster: Any) -> None:
    """Workers cannot import this test module: pickle its callbacks by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class BatchRecorder(pl.Callback):
    """One JSON line per training batch (per rank file): which data this process trained on."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        labeled = batch["labeled"] if "labeled" in batch else batch
        row = {
            "pid": os.getpid(),
            "rank": trainer.global_rank,
            "epoch": trainer.current_epoch,
            "labeled": labeled["index"].tolist(),
        }
        if batch.get("unlabeled") is not None:
            frames = batch["unlabeled"]["frame_index"]
            videos = batch["unlabeled"]["video_index"][:, None].expand_as(frames)
            row["video_frames"] = np.stack([videos.cpu(), frames.cpu()], -1).reshape(-1, 2).tolist()
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.jsonl"), "a") as handle:
            handle.write(json.dumps(row) + "\n")


class KillOnce(pl.Callback):
    """SIGKILLs the worker process of ``rank`` at (``epoch``, ``batch``), on the first attempt only.

    The marker file is created before the kill, so the restarted attempt does not kill again.
    """

    def __init__(self, rank: int, epoch: int, batch: int, marker: Path) -> None:
        self.rank, self.epoch, self.batch, self.marker = rank, epoch, batch, str(marker)

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        hit = (trainer.global_rank, trainer.current_epoch, idx) == (
            self.rank,
            self.epoch,
            self.batch,
        )
        if hit and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class FreezeBatchNorm(pl.Callback):
    """BatchNorm in eval mode: per-rank batch statistics would make N x B differ from 1 x N*B."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int
    ) -> None:
        import torch

        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.eval()


class WorseFromEpoch(pl.Callback):
    """Adds ``offset`` px to the validation pixel error reported from ``epoch`` on, so that the
    best checkpoint is an old one and retention must keep two different folders."""

    def __init__(self, epoch: int, offset: float = 1000.0) -> None:
        self.epoch, self.offset = epoch, offset

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            metrics = trainer.callback_metrics
            metrics["val_pixel_error"] = metrics["val_pixel_error"] + self.offset


class CountCheckpoints(pl.Callback):
    """Rank 0 notes the epoch folders on (local) storage at each epoch's start."""

    def __init__(self, run_folder: Path, record: Path) -> None:
        self.run_folder, self.record = str(run_folder), str(record)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero and os.path.isdir(self.run_folder):
            names = sorted(n for n in os.listdir(self.run_folder) if n.startswith("epoch_"))
            with open(self.record, "a") as handle:
                handle.write(json.dumps({"epoch": trainer.current_epoch, "kept": names}) + "\n")


def read_records(folder: Path) -> pd.DataFrame:
    rows = [json.loads(line) for p in sorted(folder.glob("rank*.jsonl")) for line in p.open()]
    return pd.DataFrame(rows)


def check_model_dir(model_dir: Path, epochs: int) -> pd.DataFrame:
    """The model directory is complete; metrics.csv has epochs 0..epochs-1 exactly once each."""
    for name in (
        "config.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.csv",
        "logs/metrics.csv",
        "summary.json",
        "labeled_predictions.csv",
    ):
        assert (model_dir / name).is_file(), name
    metrics = pd.read_csv(ModelDir(model_dir).metrics)
    assert list(metrics["epoch"]) == list(range(epochs))
    assert np.isfinite(metrics["val_pixel_error"]).all()
    assert (metrics["labeled_frames_per_second"] > 0).all()
    steps = pd.read_csv(ModelDir(model_dir).step_log)
    assert steps["step"].is_unique and steps["step"].is_monotonic_increasing
    assert steps["step"].iloc[-1] == metrics["step"].iloc[-1]
    return metrics


def test_storage_and_filesystem_routes_urls(tmp_path: Path) -> None:
    from pyarrow.fs import PyFileSystem

    assert storage_and_filesystem(str(tmp_path)) == (str(tmp_path.resolve()), None)
    assert storage_and_filesystem(f"file://{tmp_path}") == (str(tmp_path.resolve()), None)
    # object stores through fsspec too (its endpoint and options, not pyarrow's own client's)
    path, fs = storage_and_filesystem("s3://bucket/runs/")
    assert path == "bucket/runs" and isinstance(fs, PyFileSystem)
    assert "s3" in fs.handler.fs.protocol
    path, fs = storage_and_filesystem(f"local://{tmp_path}/runs")
    assert path == f"{tmp_path}/runs" and isinstance(fs, PyFileSystem)
    assert fs.handler.fs.protocol == ("file", "local")


def test_checkpoint_config_keeps_the_latest_plus_the_best() -> None:
    """Ray never deletes the latest checkpoint, so keep - 1 scored ones make at most keep."""
    from lpray.train.distributed import checkpoint_config

    two, five, one = checkpoint_config(2), checkpoint_config(5), checkpoint_config(1)
    assert (two.num_to_keep, two.checkpoint_score_attribute) == (1, "val_pixel_error")
    assert two.checkpoint_score_order == "min" and five.num_to_keep == 4
    assert (one.num_to_keep, one.checkpoint_score_attribute) == (1, None)  # the latest only


@pytest.fixture(scope="module")
def fsspec_run(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 workers, semi-supervised, 2 epochs, storage through an fsspec-only filesystem."""
    root = tmp_path_factory.mktemp("fsspec_run")
    values = tiny_config(
        tiny_project,
        root / "model",
        losses=SEMI,
        data={"train_frames": 20},
        training={"max_epochs": 2},
    )
    storage = f"local://{root}/storage"
    model_dir = train_distributed(
        config_from_dict(values),
        num_workers=2,
        cpus_per_worker=HALF_CPU,
        storage_path=storage,
        callbacks=[BatchRecorder(root / "first")],
    )
    return {"root": root, "values": values, "storage": storage, "model_dir": model_dir}


def test_two_workers_fsspec_storage_and_disjoint_shards(fsspec_run: dict[str, Any]) -> None:
    root, model_dir = fsspec_run["root"], fsspec_run["model_dir"]
    metrics = check_model_dir(model_dir, epochs=2)
    # Storage went through the fsspec wrapper and holds the latest and the best epoch's
    # checkpoint (training.keep_checkpoints' default, 2), each with the step and epoch logs.
    run_folder = root / "storage" / "model"
    best = int(metrics.loc[metrics["val_pixel_error"].idxmin(), "epoch"])
    kept = sorted(p.name for p in run_folder.glob("epoch_*"))
    assert kept == sorted({f"epoch_{best:05d}", "epoch_00001"})
    for name in kept:
        for file in ("checkpoint.ckpt", "steps.csv", "epochs.csv", "tb"):
            assert (run_folder / name / file).exists(), (name, file)
    pd.testing.assert_frame_equal(
        pd.read_csv(ModelDir(run_folder).metrics), pd.read_csv(ModelDir(model_dir).metrics)
    )
    assert json.loads(ModelDir(run_folder).summary.read_text())["test_pixel_error"] > 0

    records = read_records(root / "first")
    bundle = prepare_data(config_from_dict(fsspec_run["values"]))
    n_train = len(bundle.split.train)
    assert n_train == 20
    for epoch, group in records.groupby("epoch"):
        seen = {rank: sum(g["labeled"], []) for rank, g in group.groupby("rank")}
        assert sorted(seen) == [0, 1]
        # Labeled shards: disjoint, equal halves, together the whole train split, every epoch.
        assert not set(seen[0]) & set(seen[1]), epoch
        assert sorted(seen[0] + seen[1]) == list(range(n_train))
    # Video shards: with 2 videos and 2 ranks, rank k reads only video k; no frame is shared.
    frames = {
        rank: {tuple(f) for f in sum(g["video_frames"], [])} for rank, g in records.groupby("rank")
    }
    assert {v for v, _ in frames[0]} == {0} and {v for v, _ in frames[1]} == {1}
    assert not frames[0] & frames[1]


def test_continued_run_survives_a_killed_worker(fsspec_run: dict[str, Any]) -> None:
    """The finished 2-epoch run is continued to 4 epochs (same name and storage); in epoch 3,
    rank 1's process is SIGKILLed mid-epoch. Epochs 0-1 are not re-run, the workers restart from
    epoch 2's checkpoint, and every epoch is reported exactly once."""
    root, values = fsspec_run["root"], dict(fsspec_run["values"])
    values["training"] = {**values["training"], "max_epochs": 4}
    first = pd.read_csv(ModelDir(fsspec_run["model_dir"]).metrics)
    marker = root / "killed"
    model_dir = train_distributed(
        config_from_dict(values),
        num_workers=2,
        cpus_per_worker=HALF_CPU,
        storage_path=fsspec_run["storage"],
        max_failures=1,
        callbacks=[
            BatchRecorder(root / "second"),
            KillOnce(rank=1, epoch=3, batch=1, marker=marker),
        ],
    )
    metrics = check_model_dir(model_dir, epochs=4)
    pd.testing.assert_frame_equal(metrics.iloc[:2][first.columns], first)  # kept, not re-run

    assert marker.is_file()  # the kill really happened
    records = read_records(root / "second")
    first_pids = set(records.loc[records["epoch"] == 2, "pid"])
    killed = records[records["pid"] == int(marker.read_text())]
    assert killed["pid"].iloc[0] in first_pids and set(killed["rank"]) == {1}
    assert list(killed["epoch"]) == [2, 2, 3, 3]  # epoch 2 done, died at epoch 3's batch 1
    retry = records[~records["pid"].isin(first_pids)]
    assert sorted(set(retry["rank"])) == [0, 1]
    assert set(retry["epoch"]) == {3}  # restarted from epoch 2's checkpoint
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert summary["train_steps"] == metrics["step"].iloc[3] - metrics["step"].iloc[1]


def equal_batch_split(project: Path, folder: Path, n_train: int) -> Path:
    """A split file whose train frames are fully labeled: heatmap MSE normalises by the number of
    labeled keypoints per batch, so only then is the mean of two halves the mean of the whole."""
    frames = read_labeled_frames(project, "CollectedData.csv", None)
    complete = [p for p, k in zip(frames.image_paths, frames.keypoints) if np.isfinite(k).all()]
    path = folder / "split.json"
    path.write_text(
        json.dumps({"train": complete[:n_train], "val": complete[n_train:], "test": []})
    )
    return path


def one_worker_losses(values: dict[str, Any], steps: int) -> list[float]:
    """The reference: plain torch, one process, batch = all train frames, BatchNorm frozen.

    Same initialisation path as a worker (seed, data, module), Adam and the LR schedule from the
    module, one optimizer step per epoch on the whole (8-frame) train split.
    """

    from lpray.train.data import labeled_loader
    from lpray.train.fit import build_module

    cfg = config_from_dict(values)
    pl.seed_everything(cfg.training.seed, workers=True)
    bundle = prepare_data(cfg)
    module = build_module(cfg, bundle)
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    loader = labeled_loader(cfg, bundle, bundle.split.train, True, module.model.context)
    module.train()
    losses = []
    for epoch in range(steps):
        loader.sampler.set_epoch(epoch)  # the trainer draws new augmentation every epoch
        (batch,) = list(loader)  # the whole train split in one batch
        FreezeBatchNorm().on_train_batch_start(None, module, batch, 0)
        loss = cfg.losses.supervised_weight * module.supervised_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def test_two_workers_follow_one_worker_with_double_batch(
    tiny_project: Path, tmp_path: Path
) -> None:
    """2 Ray Train workers x B=4 take the same optimizer steps as 1 process x 2B=8.

    The 8 train frames make one step per epoch, so each step of the 1-process reference sees
    exactly the union of the two ranks' batches. Augmentation is a function of (seed, epoch, frame
    index), not of the rank; BatchNorm runs in eval mode (``FreezeBatchNorm``: per-rank batch
    statistics of 4 frames differ from those of 8); DDP averages the ranks' gradients, which is the
    gradient of the mean loss over the 8 frames when both halves have the same number of labeled
    keypoints (all frames fully labeled).
    """
    split = equal_batch_split(tiny_project, tmp_path, n_train=8)
    values = tiny_config(
        tiny_project,
        tmp_path / "model",
        data={"split_file": str(split)},
        training={"max_epochs": 4, "batch_size": 4, "val_every_n_epochs": 4},
    )
    model_dir = train_distributed(
        config_from_dict(values),
        num_workers=2,
        cpus_per_worker=HALF_CPU,
        storage_path=str(tmp_path / "storage"),
        callbacks=[FreezeBatchNorm()],
    )
    steps = pd.read_csv(ModelDir(model_dir).step_log)
    assert list(steps["step"]) == [1, 2, 3, 4]
    two_workers = steps["train_loss"].to_numpy()
    values["training"]["batch_size"] = 8
    reference = np.array(one_worker_losses(values, steps=4))
    # Every step moves the loss by far more than the tolerance (>= 10x), so agreement is
    # informative. (The near-zero-initialised head moves it by 0.4-5% a step here.)
    assert (np.abs(np.diff(reference)) > 1e-3 * reference[1:]).all()
    np.testing.assert_allclose(two_workers, reference, rtol=1e-4)


def test_retention_keeps_latest_and_best_and_recovery_resumes_from_latest(
    tiny_project: Path, tmp_path: Path
) -> None:
    """5 epochs, ``training.keep_checkpoints: 2``, one worker SIGKILLed in epoch 3.

    From epoch 2 on the reported error is made worse (``WorseFromEpoch``), so at the kill the
    best checkpoint (epoch 0 or 1) is older than the latest (epoch 2): the restart must resume
    from epoch 2's. Storage never holds more than 2 epoch folders and ends with exactly the latest
    and the best; metrics.csv, the step log and the TensorBoard events still have every epoch
    once, though the checkpoints that reported epochs 0-3 are gone.
    """
    values = tiny_config(
        tiny_project, tmp_path / "model", training={"max_epochs": 5, "keep_checkpoints": 2}
    )
    storage = tmp_path / "storage"
    run_folder = storage / "model"
    marker = tmp_path / "killed"
    model_dir = train_distributed(
        config_from_dict(values),
        num_workers=1,
        storage_path=str(storage),
        max_failures=1,
        callbacks=[
            BatchRecorder(tmp_path / "batches"),
            WorseFromEpoch(2),
            CountCheckpoints(run_folder, tmp_path / "kept.jsonl"),
            KillOnce(rank=0, epoch=3, batch=1, marker=marker),
        ],
    )
    metrics = check_model_dir(model_dir, epochs=5)
    assert marker.is_file()  # the kill really happened
    best = int(metrics.loc[metrics["val_pixel_error"].idxmin(), "epoch"])
    assert best in (0, 1)
    kept = sorted(p.name for p in run_folder.glob("epoch_*"))
    assert kept == [f"epoch_{best:05d}", "epoch_00004"]
    counts = [json.loads(line) for line in (tmp_path / "kept.jsonl").open()]
    assert [c["epoch"] for c in counts] == [0, 1, 2, 3, 3, 4]  # epoch 3 started twice
    assert max(len(c["kept"]) for c in counts) <= 2
    assert counts[4]["kept"] == [f"epoch_{best:05d}", "epoch_00002"]  # what the restart found

    records = read_records(tmp_path / "batches")
    killed = int(marker.read_text())
    assert sorted(set(records.loc[records["pid"] == killed, "epoch"])) == [0, 1, 2, 3]
    retry = records[records["pid"] != killed]
    assert sorted(set(retry["epoch"])) == [3, 4]  # resumed from the latest (epoch 2), not best
    steps = pd.read_csv(ModelDir(model_dir).step_log)
    assert sorted(set(steps["epoch"])) == [0, 1, 2, 3, 4]

    # TensorBoard: every step's loss once (the killed attempt's epoch-3 steps are not there),
    # every epoch's validation error, the same values as the CSV logs.
    scalars = tensorboard_scalars(model_dir / "tb")
    logged = steps.dropna(subset=["train_loss"])
    # (Lightning's loggers count steps from 0, the step log counts the steps done)
    assert [s + 1 for s, _ in sorted(scalars["train_loss"])] == list(logged["step"])
    np.testing.assert_allclose(
        [v for _, v in sorted(scalars["train_loss"])], logged["train_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        [v for _, v in sorted(scalars["val_pixel_error"])][:2],
        metrics["val_pixel_error"][:2],
        rtol=1e-6,
    )
    assert len(scalars["val_pixel_error"]) == 5


def test_workers_print_their_progress_chatter_only_with_verbose(
    tiny_project: Path, tmp_path: Path
) -> None:
    """`lpray train --workers 1` prints Ray Train's per-epoch report lines from its worker only
    with -v: they were a third of the main job's console (quiet_training_worker)."""
    import subprocess

    import yaml

    config = tmp_path / "config.yaml"
    values = tiny_config(tiny_project, tmp_path / "model", training={"max_epochs": 2})
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    outputs = {}
    for flags in ([], ["-v"]):
        out = tmp_path / f"storage{len(flags)}"
        args = [*flags, "train", str(config), "--workers", "1", "--cpus-per-worker", "0.5"]
        args += [f"training.output_dir={tmp_path / f'model{len(flags)}'}", f"--storage={out}"]
        done = subprocess.run(
            [sys.executable, "-m", "lpray", *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[tuple(flags)] = done.stdout + done.stderr
    for chatter in ("Reporting training result", "Seed set to"):  # Ray Train's, Lightning's
        assert chatter not in outputs[()]
        assert chatter in outputs[("-v",)]  # the chatter reaches the console

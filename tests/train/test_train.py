"""End to end on CPU: train (supervised + unsupervised losses) -> model directory -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lpray import cli
from lpray.config import config_from_dict
from lpray.data.synthetic import load_synthetic_project, load_truth
from lpray.io.layout import ModelDir
from lpray.io.tables import keypoint_names, read_pose_csv, read_pose_parquet, table_to_arrays
from lpray.train.fit import train

from conftest import tensorboard_scalars, tiny_config

SEMI = {
    "temporal": {"weight": 1e-3, "epsilon": 2.0},
    "pca_singleview": {"weight": 1e-3},
    "anneal_rate": 1.0,
}


@pytest.fixture(scope="module")
def trained(tiny_project, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "model"
    cfg = config_from_dict(tiny_config(tiny_project, out, losses=SEMI))
    return train(cfg)


@pytest.mark.slow
def test_model_directory_is_complete(trained, tiny_project):
    for name in (
        "config.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.csv",
        "summary.json",
        "labeled_predictions.csv",
        "labeled_errors.csv",
        "labels_vs_predictions.png",
    ):
        assert (trained / name).is_file(), name
    metrics = pd.read_csv(ModelDir(trained).metrics)
    assert list(metrics["epoch"]) == [0, 1]
    assert np.isfinite(metrics["val_pixel_error"]).all()
    summary = json.loads(ModelDir(trained).summary.read_text())
    assert summary["train_steps"] == 2 * int(np.ceil(summary["n_train_frames"] / 8))
    assert summary["test_pixel_error"] > 0
    assert summary["best_val_pixel_error"] == pytest.approx(metrics["val_pixel_error"].min())
    # The unsupervised losses really ran: the step log holds their values.
    steps = pd.read_csv(ModelDir(trained).step_log)
    for name in ("train/temporal", "train/pca_singleview", "train/supervised"):
        assert steps[name].notna().any(), name
    assert (steps["train/pca_singleview"].dropna() >= 0).all()


@pytest.mark.slow
def test_tensorboard_events_hold_the_logged_values(trained):
    """MODEL_DIR/tb holds the step log's training loss and each epoch's validation pixel error
    as TensorBoard scalars, the very values the CSV logs hold."""
    scalars = tensorboard_scalars(trained / "tb")
    steps = pd.read_csv(ModelDir(trained).step_log)
    logged = steps.dropna(subset=["train_loss"])
    assert len(logged) >= 2
    np.testing.assert_allclose(
        [v for _, v in scalars["train_loss"]], logged["train_loss"], rtol=1e-6
    )
    assert [s for s, _ in scalars["train_loss"]] == list(logged["step"])
    epochs = pd.read_csv(ModelDir(trained).metrics)
    np.testing.assert_allclose(
        [v for _, v in scalars["val_pixel_error"]], epochs["val_pixel_error"], rtol=1e-6
    )
    assert "train/supervised" in scalars


@pytest.mark.slow
def test_best_checkpoint_holds_weights_and_last_the_resume_state(trained):
    import torch  # noqa: PLC0415

    best = torch.load(ModelDir(trained).best_checkpoint, map_location="cpu", weights_only=False)
    last = torch.load(ModelDir(trained).last_checkpoint, map_location="cpu", weights_only=False)
    assert "optimizer_states" not in best and best["state_dict"]
    assert last["optimizer_states"] and last["epoch"] == 1  # the final epoch, always written


@pytest.mark.slow
def test_each_epoch_iterates_the_labeled_loader_with_its_own_epoch(
    tiny_project, tmp_path, monkeypatch
):
    """Lightning sets the EpochSampler's epoch before each epoch's iteration, so persistent
    loader workers (num_workers=1 here) receive each epoch's number with the items."""
    from torch.utils.data import RandomSampler  # noqa: PLC0415

    from lpray.data.labeled import EpochSampler  # noqa: PLC0415

    iterated: list[int] = []
    original = EpochSampler.__iter__

    def recording(self):  # noqa: ANN202
        if isinstance(self.base, RandomSampler):  # the training loader, not validation's
            iterated.append(self.epoch)
        return original(self)

    monkeypatch.setattr(EpochSampler, "__iter__", recording)
    training = {"max_epochs": 3, "num_workers": 1}
    train(config_from_dict(tiny_config(tiny_project, tmp_path / "m", training=training)))
    assert iterated == [0, 1, 2]


class _FakeTrainer:
    """What LastCheckpoint reads from a trainer; records the epochs it saves."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs, self.current_epoch = max_epochs, 0
        self.should_stop, self.is_global_zero = False, True
        self.saved: list[int] = []

    def save_checkpoint(self, path) -> None:
        Path(path).write_text(str(self.current_epoch))
        self.saved.append(self.current_epoch)


@pytest.mark.parametrize(("every_s", "expected"), [(0.0, [0, 1, 2, 3, 4]), (3600.0, [4])])
def test_last_checkpoint_is_written_per_interval_and_after_the_final_epoch(
    tmp_path, every_s, expected
):
    from lpray.train.callbacks import LastCheckpoint  # noqa: PLC0415

    path = tmp_path / "last.ckpt"
    callback, trainer = LastCheckpoint(path, every_s), _FakeTrainer(max_epochs=5)
    for epoch in range(5):
        trainer.current_epoch = epoch
        callback.on_train_epoch_end(trainer, None)
    assert trainer.saved == expected
    assert path.read_text() == "4" and not list(tmp_path.glob("*.partial"))
    trainer.saved, trainer.current_epoch, trainer.should_stop = [], 2, True  # early stop
    callback.on_train_epoch_end(trainer, None)
    assert trainer.saved == [2]


@pytest.mark.slow
def test_predict_video_and_labeled_csv(trained, tiny_project, tmp_path):
    project = load_synthetic_project(tiny_project)
    video = project.test_videos[0]
    assert (
        cli.main(
            ["predict", str(trained), str(video), str(project.csv_path), "--out", str(tmp_path)]
        )
        == 0
    )
    stem = video.name.rsplit(".", 1)[0]
    table = read_pose_csv(tmp_path / f"{stem}.csv")
    truth, _ = load_truth(project.truth_paths[stem])
    assert keypoint_names(table) == project.keypoint_names
    xy, likelihood = table_to_arrays(table)
    assert xy.shape == truth.shape  # one row per video frame, every keypoint
    assert np.isfinite(xy).all() and ((likelihood >= 0) & (likelihood <= 1)).all()
    assert (xy >= -1).all() and (xy[..., 0] <= 64).all() and (xy[..., 1] <= 64).all()
    parquet = read_pose_parquet(tmp_path / f"{stem}.parquet")
    np.testing.assert_allclose(parquet.to_numpy(), table.to_numpy())
    metrics = pd.read_csv(tmp_path / f"{stem}.metrics.csv")
    assert len(metrics) == len(truth)
    expected_norm = np.linalg.norm(xy[5] - xy[4], axis=-1)
    names = project.keypoint_names
    np.testing.assert_allclose(
        metrics.loc[5, [f"temporal_norm|{n}" for n in names]], expected_norm, rtol=1e-4
    )
    assert any(c.startswith("pca_singleview|") for c in metrics.columns)
    errors = pd.read_csv(tmp_path / "CollectedData_errors.csv", index_col=0)
    assert errors.shape == (len(read_pose_csv(project.csv_path)), len(names))


@pytest.mark.slow
def test_cpu_bf16_prediction_is_close_to_float32(trained, tiny_project):
    """``--precision bf16`` really runs the network in bf16 on a CPU (outputs differ from
    float32) and keeps keypoints close; a bad precision is refused."""
    from lpray.inference.network import load_network
    from lpray.inference.video import predict_video_arrays

    video = str(load_synthetic_project(tiny_project).test_videos[0])
    fp32, _ = predict_video_arrays(load_network(trained, "cpu", precision="fp32"), video)
    bf16, _ = predict_video_arrays(load_network(trained, "cpu", precision="bf16"), video)
    auto, _ = predict_video_arrays(load_network(trained, "cpu"), video)
    np.testing.assert_array_equal(auto, fp32)  # float32 is the CPU default
    difference = np.abs(bf16 - fp32)
    assert difference.max() > 0
    assert np.median(difference) < 0.25  # px, on 64x64 frames
    with pytest.raises(ValueError, match="precision must be one of"):
        load_network(trained, "cpu", precision="half")


@pytest.mark.slow
def test_rerun_resumes_and_continues_for_more_epochs(trained, tiny_project):
    # cuda_graphs on a CPU run: refused with a warning, and training goes on eagerly
    training = {"max_epochs": 3, "cuda_graphs": True}
    cfg = config_from_dict(tiny_config(tiny_project, trained, losses=SEMI, training=training))
    with pytest.warns(UserWarning, match="cuda_graphs ignored: it needs a CUDA device"):
        train(cfg)
    metrics = pd.read_csv(ModelDir(trained).metrics)
    assert list(metrics["epoch"]) == [0, 1, 2]  # epochs 0-1 kept, not re-run; epoch 2 added
    summary = json.loads(ModelDir(trained).summary.read_text())
    assert summary["train_steps"] == int(
        np.ceil(summary["n_train_frames"] / 8)
    )  # only the new epoch


@pytest.mark.slow
def test_step_logs_are_made_only_on_the_steps_lightning_writes(tiny_project, tmp_path):
    """training_step logs every ``log_every_n_steps`` optimizer steps (the others cost host time
    and were never written): every written row has all the step's values, and no log call is
    made for steps that are not written."""
    from unittest import mock

    from lpray.train.module import PoseModule

    training = {"log_every_n_steps": 2, "max_epochs": 3, "batch_size": 4}
    cfg = config_from_dict(
        tiny_config(tiny_project, tmp_path / "m", losses=SEMI, training=training)
    )
    calls = []
    original = PoseModule._log_step

    def counting(self, *args, **kwargs):
        calls.append(self.trainer.global_step)
        return original(self, *args, **kwargs)

    with mock.patch.object(PoseModule, "_log_step", counting):
        model_dir = train(cfg)
    logs = pd.read_csv(ModelDir(model_dir).step_log)
    written = logs.dropna(subset=["train_loss"])
    steps = json.loads(ModelDir(model_dir).summary.read_text())["train_steps"]
    assert steps >= 6
    assert calls == [s for s in range(steps) if (s + 1) % 2 == 0]
    assert list(written["step"]) == calls
    assert written[["train/anneal", "train/temporal"]].notna().all().all()

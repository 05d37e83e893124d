"""lpray.io.layout.ModelDir names exactly what training and prediction write."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpray import cli
from lpray.config import config_from_dict
from lpray.data.synthetic import load_synthetic_project
from lpray.io import layout
from lpray.io.layout import ModelDir
from lpray.io.storage import local_copy
from lpray.train.fit import train

from conftest import tiny_config
from members import make_member

# What one single-process training run writes (ray_run.json is Ray Train's; predictions/ is
# lpray predict's).
TRAINED = (
    "config",
    "fingerprint",
    "best_checkpoint",
    "last_checkpoint",
    "metrics",
    "step_log",
    "labeled_predictions",
    "labeled_errors",
    "labeled_figure",
    "summary",
)


@pytest.fixture(scope="module")
def trained(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layout") / "model"
    return train(config_from_dict(tiny_config(tiny_project, out, training={"max_epochs": 1})))


@pytest.mark.slow
def test_every_named_file_is_what_training_writes(trained: Path) -> None:
    paths = ModelDir(trained)
    for name in TRAINED:
        assert getattr(paths, name).is_file(), name
    assert paths.tensorboard.is_dir()
    assert paths.checkpoints.is_dir()
    # nothing at the top of the model directory is left unnamed by the layout
    named = {Path(getattr(paths, name)).relative_to(trained).parts[0] for name in TRAINED}
    named |= {layout.TENSORBOARD, layout.CHECKPOINTS}
    assert {p.name for p in trained.iterdir()} == named


def test_predict_writes_into_the_named_predictions_folder(tiny_project: Path, tmp_path: Path):
    project = load_synthetic_project(tiny_project)
    model_dir = make_member(tmp_path / "model", 0, project.keypoint_names)
    video = project.test_videos[0]
    assert cli.main(["predict", str(model_dir), str(video)]) == 0
    stem = video.name.rsplit(".", 1)[0]
    assert (ModelDir(model_dir).predictions / f"{stem}.csv").is_file()


def test_paths_keep_the_root_kind() -> None:
    local = ModelDir(Path("/runs/m"))
    assert local.best_checkpoint == Path("/runs/m/checkpoints/best.ckpt")
    assert local.checkpoint("last") == local.last_checkpoint
    assert local.step_log == Path("/runs/m/logs/metrics.csv")
    url = ModelDir("s3://bucket/runs/m/")
    assert url.config == "s3://bucket/runs/m/config.yaml"
    assert url.last_checkpoint == "s3://bucket/runs/m/checkpoints/last.ckpt"
    assert ModelDir("/runs/m").summary == "/runs/m/summary.json"


def test_local_copy_of_a_stored_model_skips_the_resume_state(tmp_path: Path) -> None:
    """What prediction fetches from a store is decided by the layout's names."""
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "memory://layout-test/model"
    for relative in (
        layout.CONFIG,
        layout.BEST_CHECKPOINT,
        layout.LAST_CHECKPOINT,
        layout.STEP_LOG,
        layout.SUMMARY,
    ):
        fs.pipe(str(ModelDir(root).path(relative)), b"x")
    copy = local_copy(root, cache=tmp_path)
    fetched = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    assert fetched == sorted([".complete", layout.BEST_CHECKPOINT, layout.CONFIG, layout.SUMMARY])

"""A failed or mistaken run never damages what exists; every user error is one clear message.

Each failure class of issue 16 is run as a user would (through :func:`lpray.cli.main`, against a
finished model directory or an existing output) and must end with exit status 2, one message on
stderr naming the file or key, no traceback, and every pre-existing file byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lpray import cli
from lpray.data.video import PyAVReader, VideoError, probe_video, validate_video
from lpray.errors import UserError
from lpray.io.layout import ModelDir
from lpray.io.tables import arrays_to_table, keypoint_names, read_pose_csv, write_pose_csv

import video_fixtures as vf
from conftest import tiny_config

CSV = "CollectedData.csv"


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (an empty dict when absent)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_user_error(code: int, err: str, *names: str) -> str:
    """Exit 2, one ``error:`` line on stderr naming each of ``names``, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def copy_project(project: Path, where: Path) -> Path:
    return Path(shutil.copytree(project, where))


def edit_labels(project: Path, edit) -> Path:
    """Rewrite the project's label CSV lines with ``edit(lines) -> lines``."""
    path = project / CSV
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


@pytest.fixture(scope="module")
def finished(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished 1-epoch model directory, trained through the CLI, and its config file."""
    root = tmp_path_factory.mktemp("finished")
    model_dir = root / "model"
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(tiny_config(tiny_project, model_dir, training={"max_epochs": 1}))
    )
    assert cli.main(["-q", "train", str(config)]) == 0
    assert ModelDir(model_dir).summary.is_file()
    assert ModelDir(model_dir).fingerprint.is_file()
    return {"root": root, "model_dir": model_dir, "config": config}


# ------------------------------------------------------------------------------------------
# lpray train: bad data against a finished model directory


def _multi_animal(lines: list[str]) -> list[str]:
    cells = lines[1].split(",")
    individuals = ["individuals"] + ["mouse1"] * (len(cells) - 1)
    return [lines[0], ",".join(individuals), *lines[1:]]


def _all_nan_keypoint(lines: list[str]) -> list[str]:
    out = lines[:3]
    for line in lines[3:]:
        cells = line.split(",")
        cells[1] = cells[2] = ""  # nose x, y
        out.append(",".join(cells))
    return out


def _non_numeric(lines: list[str]) -> list[str]:
    cells = lines[5].split(",")
    cells[3] = "twelve"  # earL x
    return [*lines[:5], ",".join(cells), *lines[6:]]


BAD_LABELS = {
    "multi-animal header": (_multi_animal, ["multi-animal", "individuals", CSV]),
    "all-NaN keypoint": (_all_nan_keypoint, ["nose", "missing in every frame", CSV]),
    "non-numeric cell": (_non_numeric, ["earL/x", "non-numbers", "twelve", CSV]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_train_on_bad_labels_leaves_the_finished_model_untouched(
    case, finished, tiny_project, tmp_path, capsys
):
    edit, names = BAD_LABELS[case]
    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, edit)
    before = snapshot(finished["model_dir"])
    code, _, err = run_cli(["train", finished["config"], f"data.root={project}"], capsys)
    line = assert_one_user_error(code, err, *names)
    assert "earL.1" not in line  # the file's own header cells, not pandas' renamed ones
    assert snapshot(finished["model_dir"]) == before


@pytest.mark.slow
def test_train_frames_above_the_label_count_leaves_the_model_untouched(finished, capsys):
    before = snapshot(finished["model_dir"])
    # flags before the override: overrides and flags intermix
    args = ["train", finished["config"], "--workers", "0", "data.train_frames=500"]
    code, _, err = run_cli(args, capsys)
    assert_one_user_error(code, err, "data.train_frames=500", CSV)
    assert snapshot(finished["model_dir"]) == before


@pytest.mark.slow
def test_corrupt_image_is_found_before_the_finished_model_is_resumed(
    finished, tiny_project, tmp_path, capsys
):
    project = copy_project(tiny_project, tmp_path / "project")
    listed = (project / CSV).read_text().splitlines()[3 + 5].split(",")[0]
    image = project / listed  # a labeled image (labeled-data/ also holds context frames)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # cut in half
    before = snapshot(finished["model_dir"])
    assert "logs/hparams.yaml" in before and "logs/metrics.csv" in before
    # more epochs: without the image check this run would resume last.ckpt and rewrite logs/
    args = ["train", finished["config"], f"data.root={project}", "training.max_epochs=2"]
    code, _, err = run_cli(args, capsys)
    assert_one_user_error(code, err, image.name, "do not decode", CSV)
    assert snapshot(finished["model_dir"]) == before


@pytest.mark.slow
def test_distributed_train_on_bad_labels_stops_before_ray_and_writes_nothing(
    finished, tiny_project, tmp_path, capsys
):
    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, _all_nan_keypoint)
    before = snapshot(finished["model_dir"])
    args = ["train", "--workers", "2", finished["config"], f"data.root={project}"]
    code, _, err = run_cli(args, capsys)
    assert_one_user_error(code, err, "nose", CSV)
    assert snapshot(finished["model_dir"]) == before
    assert not (finished["root"] / "ray").exists()  # no Ray run was started


@pytest.mark.slow
def test_truncated_unlabeled_video_stops_training_before_any_write(tiny_project, tmp_path, capsys):
    cut = _cut_faststart(tmp_path, at_keyframe=True)
    model_dir = tmp_path / "new-model"
    config = tmp_path / "config.yaml"
    values = tiny_config(
        tiny_project,
        model_dir,
        training={"max_epochs": 1},
        losses={"temporal": {"weight": 1e-3}},
        data={"videos": [cut]},
    )
    config.write_text(yaml.safe_dump(values))
    code, _, err = run_cli(["train", config], capsys)
    assert_one_user_error(code, err, cut, "truncated")
    assert not model_dir.exists()


# ------------------------------------------------------------------------------------------
# lpray train: another valid dataset, --overwrite, continuing


@pytest.mark.slow
def test_other_valid_dataset_is_refused_then_replaced_with_overwrite(
    finished, tiny_project, tmp_path, capsys
):
    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, lambda lines: lines[:-3])  # three labeled frames fewer: still valid
    model_dir = tmp_path / "model"
    shutil.copytree(finished["model_dir"], model_dir)
    before = snapshot(model_dir)
    args = ["train", finished["config"], f"data.root={project}", f"training.output_dir={model_dir}"]
    code, _, err = run_cli(args, capsys)
    line = assert_one_user_error(code, err, str(model_dir), "labels file", "--overwrite")
    assert "training.output_dir" in line
    assert snapshot(model_dir) == before

    # a different model config is named by its key
    code, _, err = run_cli(
        [*args[:2], f"training.output_dir={model_dir}", "model.heatmap_sigma=2.0"], capsys
    )
    assert_one_user_error(code, err, "model.heatmap_sigma: 1.25 -> 2.0")
    assert snapshot(model_dir) == before

    code, out, err = run_cli([*args, "--overwrite", "-q"], capsys)
    assert code == 0, err
    fingerprint = json.loads(ModelDir(model_dir).fingerprint.read_text())
    assert fingerprint["labels"]["file"] == str(project / CSV)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert summary["train_steps"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.lpray")]


@pytest.mark.slow
def test_rerun_of_a_finished_model_changes_nothing(finished, capsys):
    before = snapshot(finished["model_dir"])
    code, out, err = run_cli(["train", finished["config"]], capsys)
    assert code == 0, err
    assert "nothing to do" in err  # an INFO log message, on stderr
    assert snapshot(finished["model_dir"]) == before
    code, out, err = run_cli(["train", finished["config"], "-q"], capsys)
    assert code == 0 and "nothing to do" not in err  # -q: warnings and errors only


@pytest.mark.slow
def test_failed_overwrite_keeps_the_old_model(finished, tmp_path, capsys, monkeypatch):
    """A replacement that fails after validation (here: ImageNet weights not cached is caught
    before; so break training itself) leaves the old model directory as it was."""
    import lpray.train.fit as fit

    model_dir = tmp_path / "model"
    shutil.copytree(finished["model_dir"], model_dir)
    before = snapshot(model_dir)

    def broken(*args, **kwargs):
        raise RuntimeError("training crashed")

    monkeypatch.setattr(fit, "write_summary", broken)
    args = ["train", finished["config"], f"training.output_dir={model_dir}", "--overwrite", "-q"]
    with pytest.raises(RuntimeError, match="training crashed"):
        cli.main([str(a) for a in args])
    assert snapshot(model_dir) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.lpray")]


def test_pretrained_weights_missing_is_one_line_and_writes_nothing(
    tiny_project, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LPRAY_OFFLINE", "1")  # tests never download
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_project, tmp_path / "model")))
    code, _, err = run_cli(["train", config, "model.pretrained=true"], capsys)
    assert_one_user_error(code, err, "model.pretrained", "resnet18", "not cached")
    assert "https://download.pytorch.org/models/resnet18-" in err
    assert str(tmp_path / "empty-cache" / "hub" / "checkpoints") in err
    assert not (tmp_path / "model").exists()


# ------------------------------------------------------------------------------------------
# lpray ensemble / sweep: shared inputs checked once, before any member or trial


def test_ensemble_with_bad_labels_launches_nothing(tiny_project, tmp_path, capsys):
    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, _non_numeric)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(project, tmp_path / "unused")))
    out = tmp_path / "ensemble"
    # the command line: overrides after the flags
    args = ["ensemble", config, "--seeds", "3", "--out", out, "training.max_epochs=1"]
    code, stdout, err = run_cli(args, capsys)
    assert_one_user_error(code, err, CSV, "earL/x")
    assert "trained now" not in stdout
    assert not out.exists()  # no member folder, no manifest


@pytest.mark.slow
def test_ensemble_refuses_member_folders_of_other_data_before_launching(
    finished, tiny_project, tmp_path, capsys
):
    out = tmp_path / "ensemble"
    member = out / "member-1"
    shutil.copytree(finished["model_dir"], member)  # a model of other inputs (seed 0, not 1)
    before = snapshot(out)
    config = tmp_path / "config.yaml"
    values = tiny_config(tiny_project, tmp_path / "unused", model={"heatmap_sigma": 2.0})
    config.write_text(yaml.safe_dump(values))
    args = ["ensemble", config, "--seeds", "2", "--out", out, "--no-progress"]
    code, stdout, err = run_cli(args, capsys)
    assert_one_user_error(code, err, str(member), "model.heatmap_sigma", "--overwrite")
    assert snapshot(out) == before and not (out / "member-0").exists()


def test_sweep_with_bad_labels_starts_no_trial(tiny_project, tmp_path, capsys):
    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, _multi_animal)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(project, tmp_path / "model")))
    sweep = tmp_path / "sweep.yaml"
    store = tmp_path / "store"
    sweep.write_text(
        yaml.safe_dump(
            {
                "sweep": {"name": "s", "storage_path": str(store), "num_samples": 1},
                "parameters": {"losses.temporal.weight": {"loguniform": [1e-5, 1e-3]}},
            }
        )
    )
    code, _, err = run_cli(["sweep", config, sweep, "training.max_epochs=1"], capsys)
    assert_one_user_error(code, err, "multi-animal", CSV)
    assert not store.exists()


# ------------------------------------------------------------------------------------------
# Videos: truncation is reported as such


def _faststart_mp4(path: Path, n_frames: int = 120, gop: int = 12) -> Path:
    """An H.264 .mp4 whose moov atom (the sample table) comes before the data (faststart)."""
    import av

    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=25)
    stream.height, stream.width = vf.HEIGHT, vf.WIDTH
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    stream.options = {"crf": "12", "bf": "2", "sc_threshold": "0"}
    for i in range(n_frames):
        rgb = np.stack([vf.index_frame(i)] * 3, -1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _cut_faststart(folder: Path, at_keyframe: bool) -> str:
    """A faststart mp4 cut at its 5th keyframe's first byte, or 3 bytes into a mid-GOP packet."""
    import av

    whole = _faststart_mp4(folder / "whole.mp4")
    data = whole.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # moov first
    with av.open(str(whole)) as container:
        packets = [
            (p.pos, p.is_keyframe) for p in container.demux(container.streams.video[0]) if p.size
        ]
    keys = [i for i, (_, key) in enumerate(packets) if key]
    cut = packets[keys[4]][0] if at_keyframe else packets[keys[4] + 5][0] + 3
    path = folder / ("cut_gop.mp4" if at_keyframe else "cut_mid_gop.mp4")
    path.write_bytes(data[:cut])
    return str(path)


@pytest.mark.parametrize("at_keyframe", [True, False], ids=["at-gop-boundary", "inside-gop"])
def test_truncated_faststart_mp4_is_truncated_not_short_or_vfr(tmp_path, at_keyframe):
    path = _cut_faststart(tmp_path, at_keyframe)
    info = probe_video(path)
    assert info.declared_frames == 120 and info.n_frames < 120 and info.truncated
    for check in (validate_video, PyAVReader):
        with pytest.raises(VideoError) as err:
            check(path)
        message = str(err.value)
        assert path in message and "truncated" in message
        assert f"ends after frame {info.n_frames - 1}" in message
        assert "variable frame rate" not in message
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    # the whole file is fine, and headers that lie (AVI) are still not trusted
    assert validate_video(tmp_path / "whole.mp4").n_frames == 120
    assert validate_video(vf.make_lying_avi(tmp_path)).n_frames == 40


@pytest.mark.parametrize("codec", sorted(vf.CODECS))
def test_stream_that_stops_decoding_is_truncated_with_where(tmp_path, codec):
    """The last frames' data lost (zeroed): a WebM's duration tells; for the others, validation
    decodes the last group of pictures."""
    import av

    whole = Path(vf.make_video(tmp_path, codec, 40))
    data = bytearray(whole.read_bytes())
    with av.open(str(whole)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    for pos, size in packets[-3:]:
        data[pos : pos + size] = bytes(size)
    broken = tmp_path / f"broken{whole.suffix}"
    broken.write_bytes(bytes(data))
    with pytest.raises(VideoError) as err:
        validate_video(broken)
    message = str(err.value)
    assert str(broken) in message and "truncated" in message
    assert "of 40" in message or "ends after frame" in message
    assert "variable frame rate" not in message


# ------------------------------------------------------------------------------------------
# lpray smooth: the odd member is the one named


def _member_table(keypoints: list[str], n_frames: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    xy = 20 + rng.normal(0, 1, (n_frames, len(keypoints), 2)).cumsum(0)
    return arrays_to_table(xy, keypoints, np.full((n_frames, len(keypoints)), 0.9))


@pytest.mark.parametrize("odd_position", [0, 1, 2])
def test_smooth_names_the_member_that_differs_from_the_majority(tmp_path, capsys, odd_position):
    paths = []
    for k in range(3):
        names = ["nose", "tail"] if k == odd_position else ["nose", "ear", "tail"]
        path = tmp_path / f"vid.rng={k}.csv"
        write_pose_csv(_member_table(names, seed=k), path)
        paths.append(path)
    out = tmp_path / "vid.eks.csv"
    out.write_text("an older result\n")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["smooth", *paths, "--out", out], capsys)
    line = assert_one_user_error(code, err, str(paths[odd_position]), "ear", "2 of the 3")
    assert all(str(p) not in line for i, p in enumerate(paths) if i != odd_position)
    assert snapshot(tmp_path) == before


def test_smooth_names_the_member_with_other_frames(tmp_path, capsys):
    paths = []
    for k, n in enumerate([20, 30, 30]):
        path = tmp_path / f"vid.rng={k}.csv"
        write_pose_csv(_member_table(["nose", "tail"], n_frames=n, seed=k), path)
        paths.append(path)
    out = tmp_path / "out" / "vid.eks.csv"
    code, _, err = run_cli(["smooth", "--out", out, *paths], capsys)  # flags first, then files
    assert_one_user_error(code, err, f"{paths[0]}: 20 frames", "2 of the 3 members have 30")
    assert not out.parent.exists()


# ------------------------------------------------------------------------------------------
# The command line: python -m lpray, intermixed overrides, logging


def test_python_dash_m_lpray_runs():
    result = subprocess.run(
        [sys.executable, "-m", "lpray", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: lpray" in result.stdout and "ensemble" in result.stdout


def test_overrides_may_follow_flags_in_every_command():
    args = cli.parse_args(
        ["ensemble", "c.yaml", "--seeds", "5", "--out", "D", "training.max_epochs=1", "-q"]
    )
    assert (args.config, args.overrides, args.seeds, args.out) == (
        "c.yaml",
        ["training.max_epochs=1"],
        5,
        "D",
    )
    assert args.quiet == 1
    args = cli.parse_args(["-v", "train", "--workers", "2", "c.yaml", "data.train_frames=5"])
    assert (args.config, args.overrides, args.workers, args.verbose) == (
        "c.yaml",
        ["data.train_frames=5"],
        2,
        1,
    )
    args = cli.parse_args(["sweep", "c.yaml", "--resume", "D", "s.yaml", "sweep.num_samples=2"])
    assert (args.config, args.sweep, args.overrides) == (
        "c.yaml",
        "s.yaml",
        ["sweep.num_samples=2"],
    )
    args = cli.parse_args(["pipeline", "p.yaml", "--no-progress", "ensemble.seeds=2"])
    assert args.overrides == ["ensemble.seeds=2"] and args.no_progress


def test_library_logging_is_the_users_to_configure(caplog):
    """lpray's modules log through ``logging`` and configure nothing themselves."""
    from lpray.train.fit import report_finished

    code = (
        "import logging, lpray.train.fit, lpray.train.distributed, lpray.ensemble.run, "
        "lpray.tune.sweep, lpray.data.video, lpray.pipeline; "
        "print(logging.getLogger('lpray').handlers, logging.getLogger().handlers)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"  # importing lpray configures no logging
    with caplog.at_level(logging.INFO, logger="lpray"):
        report_finished(Path("some/model"))
    assert [r.name for r in caplog.records] == ["lpray.train.fit"]
    with caplog.at_level(logging.WARNING, logger="lpray"):
        caplog.clear()
        report_finished(Path("some/model"))
    assert not caplog.records  # silenced by the user's level


def test_every_user_facing_error_class_is_a_user_error():
    from lpray.config import ConfigError
    from lpray.data.labeled import LabelError
    from lpray.io.tables import PoseTableError
    from lpray.losses.pca import PCAFitError
    from lpray.models.weights import PretrainedWeightsUnavailable
    from lpray.pipeline import PipelineError, StageError
    from lpray.smooth.members import MemberError
    from lpray.train.distributed import TrainRunError
    from lpray.train.model_dir import ModelDirError
    from lpray.tune.space import SweepError

    for cls, old in [
        (ConfigError, ValueError),
        (SweepError, ValueError),
        (PipelineError, ValueError),
        (LabelError, ValueError),
        (PoseTableError, ValueError),
        (VideoError, ValueError),
        (PCAFitError, ValueError),
        (MemberError, ValueError),
        (ModelDirError, ValueError),
        (PretrainedWeightsUnavailable, RuntimeError),
        (StageError, RuntimeError),
        (TrainRunError, RuntimeError),
    ]:
        assert issubclass(cls, UserError) and issubclass(cls, old), cls


@pytest.mark.slow
def test_distributed_overwrite_replaces_the_model_and_its_ray_run(
    tiny_project, tmp_path, ray_cluster, capsys
):
    from lpray.config import config_from_dict
    from lpray.train.distributed import train_distributed
    from lpray.train.model_dir import ModelDirError

    storage = tmp_path / "storage"
    values = tiny_config(tiny_project, tmp_path / "model", training={"max_epochs": 1})
    model_dir = train_distributed(
        config_from_dict(values), num_workers=1, cpus_per_worker=0.5, storage_path=str(storage)
    )
    old_run = snapshot(storage / "model")
    assert old_run and ModelDir(model_dir).summary.is_file()

    project = copy_project(tiny_project, tmp_path / "project")
    edit_labels(project, lambda lines: lines[:-3])
    other = {**values, "data": {**values["data"], "root": str(project)}}
    before = snapshot(model_dir)
    with pytest.raises(ModelDirError, match="labels file"):
        train_distributed(
            config_from_dict(other), num_workers=1, cpus_per_worker=0.5, storage_path=str(storage)
        )
    assert snapshot(model_dir) == before and snapshot(storage / "model") == old_run

    # a run folder on storage without its model directory would resume foreign checkpoints
    moved = tmp_path / "moved"
    model_dir.rename(moved)
    with pytest.raises(ModelDirError, match="already holds a Ray Train run"):
        train_distributed(
            config_from_dict(other), num_workers=1, cpus_per_worker=0.5, storage_path=str(storage)
        )
    assert not model_dir.exists()
    moved.rename(model_dir)

    train_distributed(
        config_from_dict(other),
        num_workers=1,
        cpus_per_worker=0.5,
        storage_path=str(storage),
        overwrite=True,
    )
    fingerprint = json.loads(ModelDir(model_dir).fingerprint.read_text())
    assert fingerprint["labels"]["file"] == str(project / CSV)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert summary["train_steps"] > 0  # trained afresh, not resumed from the old run
    assert snapshot(storage / "model") != old_run
    leftovers = [p.name for p in [*tmp_path.iterdir(), *storage.iterdir()] if "lpray-" in p.name]
    assert not leftovers


@pytest.mark.slow
def test_track_refuses_a_truncated_video_and_keeps_the_corpus_output(
    finished, tiny_project, tmp_path, ray_cluster, capsys
):
    """A moov-first mp4 cut at a GOP boundary is a failed video that says "truncated", not a
    short track; what the corpus folder held before stays as it was."""
    out = tmp_path / "tracks"
    good = sorted((tiny_project / "videos-test").glob("*.mp4"))[0]
    common = ["--out", out, "--overlay", "none", "--no-progress", "--cpus-per-task", "0.5"]
    code, _, err = run_cli(["track", finished["model_dir"], good, *common], capsys)
    assert code == 0, err
    kept = snapshot(out / good.stem)
    assert kept
    cut = _cut_faststart(tmp_path, at_keyframe=True)
    code, stdout, err = run_cli(["track", finished["model_dir"], cut, *common], capsys)
    assert code != 0 and "Traceback" not in err
    assert "truncated" in stdout + err and cut in stdout + err
    assert not (out / Path(cut).stem / f"{Path(cut).stem}.eks.csv").exists()
    assert snapshot(out / good.stem) == kept


def test_multiview_smooth_names_the_odd_member_even_when_it_comes_first(tmp_path, capsys):
    paths = []
    full = ["nose_top", "nose_bot", "ear_top", "ear_bot"]
    for k, names in enumerate([full[:2], full, full]):
        path = tmp_path / f"vid.rng={k}.csv"
        write_pose_csv(_member_table(names, seed=k), path)
        paths.append(path)
    out = tmp_path / "vid.eks.csv"
    code, _, err = run_cli(["smooth", *paths, "--views", "top,bot", "--out", out], capsys)
    line = assert_one_user_error(code, err, str(paths[0]), "ear_top")
    assert str(paths[1]) not in line and not out.exists()


def test_multiview_smooth_takes_view_groups_from_the_majority(tmp_path, capsys):
    """The first member predicts an extra body part: the groups are the majority's."""
    paths = []
    full = ["nose_top", "nose_bot", "ear_top", "ear_bot"]
    for k, names in enumerate([[*full, "paw_top", "paw_bot"], full, full]):
        path = tmp_path / f"vid.rng={k}.csv"
        write_pose_csv(_member_table(names, seed=k), path)
        paths.append(path)
    out = tmp_path / "vid.eks.csv"
    code, _, err = run_cli(["smooth", *paths, "--views", "top,bot", "--out", out], capsys)
    assert code == 0, err
    assert keypoint_names(read_pose_csv(out)) == full

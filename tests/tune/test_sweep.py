"""Sweeps on Ray Tune: bad search spaces, the grid-crossing searcher, and one real sweep.

The real sweep (4 trials: two loss weights searched by Optuna TPE, crossed with two label counts,
ASHA) runs as ``lpray sweep`` in a subprocess on the session's Ray cluster, is SIGKILLed once one
trial has finished and another is part-way, and is continued with ``lpray sweep --resume``. The
tests then check the resume against the epoch logs written before the kill, the results against
the logs and the labeled split (computed here independently), the report files, and that the
exported best config trains.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lpray import cli
from lpray.config import config_from_dict, load_config
from lpray.data.labeled import read_labeled_frames, split_frames
from lpray.io.layout import ModelDir
from lpray.tune.cleanup import placement_groups_path, read_placement_groups
from lpray.tune.space import SweepError, sweep_from_dict
from lpray.tune.store import read_all_epoch_logs
from lpray.tune.sweep import run_sweep, search_setup, tuner_concurrency

from conftest import tensorboard_scalars, tiny_config

SEMI = {
    "temporal": {"weight": 1e-3, "epsilon": 2.0},
    "pca_singleview": {"weight": 1e-3},
    "anneal_rate": 1.0,
}
SPACE = {
    "losses.temporal.weight": {"loguniform": [1e-4, 1e-1]},
    "losses.pca_singleview.weight": {"loguniform": [1e-4, 1e-1]},
    "data.train_frames": {"grid": [10, "all"]},
}
MAX_EPOCHS = 3
GRACE = 2  # ASHA may stop a trial only once it has trained 2 epochs
BATCH = 8  # tiny_config's training.batch_size


def sweep_values(storage: Path, name: str, parameters: dict | None = None, **settings: Any) -> dict:
    values = {
        "name": name,
        "storage_path": str(storage),
        "num_samples": 2,
        "max_concurrent_trials": 2,
        "resources": {"workers": 1, "cpus_per_worker": 0.5, "trial_cpus": 0.01},
        "asha": {"grace_period": 1, "reduction_factor": 2},
    }
    values.update(settings)
    return {"sweep": values, "parameters": SPACE if parameters is None else parameters}


def train_split_size(project: Path, values: dict) -> int:
    """Labeled frames in the train split, computed here from the CSV (not by the sweep code)."""
    frames = read_labeled_frames(project, "CollectedData.csv", None)
    d = values["data"]
    return len(split_frames(frames, d["train_prob"], d["val_prob"], 0).train)


# --------------------------------------------------------------------------------------------
# Bad input: refused before any trial (and before Ray) with the key named


@pytest.mark.parametrize(
    ("parameters", "settings", "key"),
    [
        ({"losses.temporal.wieght": {"loguniform": [1e-4, 1e-1]}}, {}, "losses.temporal.wieght"),
        ({"losses.smoothness.weight": {"loguniform": [1e-4, 1e-1]}}, {}, "losses.smoothness"),
        ({"losses.temporal.weight": {"loguniform": [1e-1, 1e-4]}}, {}, "losses.temporal.weight"),
        ({"training.lr": {"uniform": [1e-3, 1e-3]}}, {}, "training.lr"),
        ({"losses.temporal.weight": {"loguniform": [0.0, 1e-1]}}, {}, "losses.temporal.weight"),
        (SPACE, {"num_samples": 0}, "sweep.num_samples"),
        ({"data.train_frames": {"grid": []}}, {}, "data.train_frames"),
        ({"model.backbone": {"choice": ["resnet18", "vit_h"]}}, {}, "model.backbone"),
        ({"losses.temporal": {"grid": [1e-3]}}, {}, "losses.temporal"),
        (SPACE, {"serach": "optuna"}, "sweep.serach"),
        (SPACE, {"asha": {"grace_period": 9}}, "sweep.asha.grace_period"),
        ({"training.max_epochs": {"choice": [2, 3]}}, {}, "training.max_epochs"),
    ],
)
def test_bad_sweep_is_refused_before_any_trial(
    tiny_project: Path, tmp_path: Path, parameters: dict, settings: dict, key: str
) -> None:
    cfg = config_from_dict(tiny_config(tiny_project, tmp_path / "model"))
    storage = tmp_path / "store"
    with pytest.raises(SweepError, match=re.escape(key)):
        run_sweep(cfg, sweep_from_dict(sweep_values(storage, "bad", parameters, **settings)))
    assert not storage.exists()  # nothing was started


def test_label_count_above_the_train_split_names_key_and_sizes(
    tiny_project: Path, tmp_path: Path
) -> None:
    values = tiny_config(tiny_project, tmp_path / "model")
    available = train_split_size(tiny_project, values)
    too_many = available + 1
    spec = sweep_from_dict(
        sweep_values(tmp_path / "store", "big", {"data.train_frames": {"grid": [5, too_many]}})
    )
    with pytest.raises(SweepError) as err:
        run_sweep(config_from_dict(values), spec)
    message = str(err.value)
    assert "data.train_frames" in message
    assert str(too_many) in message and f"has {available}" in message
    assert not (tmp_path / "store").exists()


def test_cli_reports_bad_sweep_as_one_line(
    tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_project, tmp_path / "model")))
    sweep = tmp_path / "sweep.yaml"
    bad = sweep_values(tmp_path / "store", "x", {"losses.temporal.weight": {"uniform": [2, 1]}})
    sweep.write_text(yaml.safe_dump(bad))
    assert cli.main(["sweep", str(config), str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "parameters.losses.temporal.weight" in err and "empty range" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------
# The search set-up (no trials run)


def test_grid_cross_searcher_runs_every_cell_and_resumes_identically(tmp_path: Path) -> None:
    spec = sweep_from_dict(sweep_values(tmp_path, "s", num_samples=3))
    _, searcher, total = search_setup(spec)
    _, twin, _ = search_setup(spec)
    assert total == 6  # 2 label counts x 3 samples
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    searcher.save(str(tmp_path / "state.pkl"))
    twin.restore(str(tmp_path / "state.pkl"))
    rest = [searcher.suggest(f"t{i}") for i in range(3, 6)]
    assert [twin.suggest(f"t{i}") for i in range(3, 6)] == rest  # same state, same suggestions
    assert searcher.suggest("t6") == "FINISHED"
    suggestions = first + rest
    cells = [s["data.train_frames"] for s in suggestions]
    assert sorted(cells, key=str) == sorted([10, 10, 10, "all", "all", "all"], key=str)
    for s in suggestions:
        for key in ("losses.temporal.weight", "losses.pca_singleview.weight"):
            assert 1e-4 <= s[key] <= 1e-1


def test_grid_search_points_are_log_spaced(tmp_path: Path) -> None:
    spec = sweep_from_dict(sweep_values(tmp_path, "g", search="grid", grid_points=3, num_samples=1))
    weights = {p.key: p.points(3) for p in spec.params}
    np.testing.assert_allclose(weights["losses.temporal.weight"], [1e-4, 10**-2.5, 1e-1])
    assert spec.n_trials == 2 * 3 * 3  # every point of every parameter, crossed
    space, _, num_samples = search_setup(spec)
    assert num_samples == 1 and space["data.train_frames"] == {"grid_search": [10, "all"]}


def test_nodes_too_small_for_driver_plus_worker_are_reported() -> None:
    from lpray.tune.sweep import packing_problem

    assert packing_problem([2.0], 1.0, 0.01) is None
    assert packing_problem([1.0, 2.0], 1.0, 0.01) is None  # the 2-CPU node fits both
    message = packing_problem([1.0, 1.0], 1.0, 0.01)
    assert message and "cpus_per_worker below 0.99" in message


def test_random_search_keeps_the_concurrency_limit(tmp_path: Path) -> None:
    """Tune limits only Searchers; lpray's own BasicVariantGenerator must carry the limit."""
    values = sweep_values(tmp_path, "r", search="random", num_samples=4, max_concurrent_trials=3)
    _, generator, _ = search_setup(sweep_from_dict(values))
    assert generator.max_concurrent == 3
    # and Tune is not also given it (it ignores it for a generator, with a warning)
    assert tuner_concurrency(generator, 3) is None
    optuna = sweep_values(tmp_path, "o", search="optuna", num_samples=4, max_concurrent_trials=3)
    _, searcher, _ = search_setup(sweep_from_dict(optuna))
    assert tuner_concurrency(searcher, 3) == 3


# --------------------------------------------------------------------------------------------
# One real sweep: run in a subprocess, killed midway, resumed, reported


def _progress(experiment_dir: Path) -> dict[str, list[dict]]:
    try:
        return read_all_epoch_logs(str(experiment_dir))
    except (json.JSONDecodeError, FileNotFoundError):  # a log being replaced right now
        return {}


@pytest.fixture(scope="module")
def resumed_sweep(
    tiny_project: Path, tmp_path_factory: pytest.TempPathFactory, ray_cluster: Any
) -> dict[str, Any]:
    """Start ``lpray sweep``, SIGKILL it once a trial finished and another has trained exactly one
    epoch (below ASHA's grace period, so that trial must continue after the resume), resume."""
    root = tmp_path_factory.mktemp("sweep")
    values = tiny_config(tiny_project, root / "model", losses=SEMI)
    values["training"]["max_epochs"] = MAX_EPOCHS
    config, sweep = root / "config.yaml", root / "sweep.yaml"
    config.write_text(yaml.safe_dump(values))
    asha = {"grace_period": GRACE, "reduction_factor": 2}
    sweep.write_text(yaml.safe_dump(sweep_values(root / "store", "killed", asha=asha)))
    experiment_dir = root / "store" / "killed"
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address,
        "PYTHONUNBUFFERED": "1",
    }
    with open(root / "driver.log", "w") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "lpray.cli", "sweep", str(config), str(sweep)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    before: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline and driver.poll() is None:
        before = _progress(experiment_dir)
        done = [t for t, rows in before.items() if rows and rows[-1]["epoch"] == MAX_EPOCHS - 1]
        partial = [t for t, rows in before.items() if len(rows) == 1 and t not in done]
        if done and partial:
            break
        time.sleep(0.3)
    if driver.poll() is not None:
        pytest.fail(
            f"the sweep ended before it could be killed:\n{(root / 'driver.log').read_text()}"
        )
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _progress(experiment_dir)  # rows written between the last poll and the kill too
    time.sleep(2)  # let the cluster reap the dead driver's actors and placement groups
    assert cli.main(["sweep", "--resume", str(experiment_dir)]) == 0
    return {
        "dir": experiment_dir,
        "values": values,
        "before": before,
        "after": read_all_epoch_logs(str(experiment_dir)),
        "trials": pd.read_parquet(experiment_dir / "report" / "trials.parquet"),
    }


@pytest.mark.slow
def test_resume_keeps_finished_trials_and_continues_the_rest(resumed_sweep: dict) -> None:
    before, after = resumed_sweep["before"], resumed_sweep["after"]
    trials = resumed_sweep["trials"]
    assert len(trials) == 4 and set(trials["trial_id"]) >= set(before)
    assert set(trials["status"]) <= {"completed", "stopped"}, trials["status"].tolist()
    finished = [t for t, rows in before.items() if rows[-1]["epoch"] == MAX_EPOCHS - 1]
    interrupted = [t for t, rows in before.items() if rows[-1]["trained_epochs"] < GRACE]
    assert finished and interrupted, before  # both cases really happened
    for trial in finished:  # not re-run: the very same rows, nothing added
        assert after[trial] == before[trial]
    for trial, rows in before.items():
        if trial in finished:
            continue
        assert after[trial][: len(rows)] == rows  # what was trained before the kill is kept
        epochs = [r["epoch"] for r in after[trial]]
        assert len(set(epochs)) == len(epochs)  # no epoch trained twice
        new = after[trial][len(rows) :]
        assert all(r["attempt"] != rows[0]["attempt"] for r in new)  # a new Train attempt...
        if rows[-1]["trained_epochs"] < GRACE:  # ASHA cannot have stopped it: it went on
            assert new, trial
        if new:  # ...from its checkpoint, not from epoch 0
            assert new[0]["epoch"] > rows[-1]["epoch"]
    # The table's compute is the logs' row count; completed trials reached the last epoch.
    for _, row in trials.iterrows():
        assert row["trial_epochs"] == len(after[row["trial_id"]])
        if row["status"] == "completed":
            assert row["epochs"] == MAX_EPOCHS
    # Every worker placement group is gone (early-stopped trials' too): nothing holds CPUs.
    from ray.util import placement_group_table

    table = placement_group_table()
    for _, row in trials.iterrows():
        recorded = read_placement_groups(
            placement_groups_path(str(resumed_sweep["dir"]), row["trial_id"])
        )
        assert recorded, row["trial_id"]
        for pg_id in recorded:
            assert table[pg_id]["state"] == "REMOVED", (row["trial_id"], row["status"])


@pytest.mark.slow
def test_results_table_matches_logs_and_labeled_split(
    resumed_sweep: dict, tiny_project: Path
) -> None:
    trials, logs = resumed_sweep["trials"], resumed_sweep["after"]
    available = train_split_size(tiny_project, resumed_sweep["values"])
    assert sorted(trials["label"]) == ["10", "10", "all", "all"]
    assert set(zip(trials["label"], trials["n_train_frames"])) == {("10", 10), ("all", available)}
    for _, row in trials.iterrows():
        rows = {r["epoch"]: r for r in logs[row["trial_id"]]}
        errors = [rows[e]["val_pixel_error"] for e in sorted(rows)]
        assert row["best_val_pixel_error"] == pytest.approx(min(errors))
        assert row["final_val_pixel_error"] == pytest.approx(errors[-1])
        # The label count reached the workers: steps in epoch 0 = ceil(frames / batch).
        assert rows[0]["step"] == math.ceil(row["n_train_frames"] / BATCH)
        # ...and so did the sampled weights (the config columns hold the trial's parameters).
        params = json.loads(row["params"])
        assert row["losses.temporal.weight"] == pytest.approx(params["losses.temporal.weight"])
        assert 1e-4 <= params["losses.pca_singleview.weight"] <= 1e-1
        # Tune's own record of the trial agrees with the epoch log.
        tune_rows = [
            json.loads(line)
            for line in (resumed_sweep["dir"] / f"trial_{row['trial_id']}" / "result.json")
            .read_text()
            .splitlines()
        ]
        for tune_row in tune_rows:
            assert tune_row["val_pixel_error"] == pytest.approx(
                rows[tune_row["epoch"]]["val_pixel_error"]
            )
    csv = pd.read_csv(resumed_sweep["dir"] / "report" / "trials.csv")
    assert list(csv["trial_id"]) == list(trials["trial_id"])
    np.testing.assert_allclose(csv["best_val_pixel_error"], trials["best_val_pixel_error"])


@pytest.mark.slow
def test_trial_folders_hold_tensorboard_events_of_the_epochs(resumed_sweep: dict) -> None:
    """Tune's TensorBoard logger (tensorboardX) writes each trial's reported metrics into its
    trial folder, and each trial's Train run carries rank 0's events in its checkpoints: both
    hold the validation pixel errors of the trial's epoch log."""
    for trial_id, rows in resumed_sweep["after"].items():
        logged = [r["val_pixel_error"] for r in rows]
        tune_events = tensorboard_scalars(resumed_sweep["dir"] / f"trial_{trial_id}")
        # (a resumed trial replays its epochs to Tune, so values may appear twice)
        assert_same_values([v for _, v in tune_events["ray/tune/val_pixel_error"]], logged)
        latest = max((resumed_sweep["dir"] / "train" / trial_id).glob("epoch_*"))
        train_events = tensorboard_scalars(latest / "tb")
        assert_same_values([v for _, v in train_events["val_pixel_error"]], logged)


@pytest.mark.slow
def test_sweep_folder_size_counts_every_file(resumed_sweep: dict) -> None:
    """bench/sweep.py reports the sweep folder's footprint with ``tree_bytes``; the trials' Train
    runs hold at most training.keep_checkpoints (default 2) epoch folders each."""
    from lpray.io.storage import tree_bytes

    folder = resumed_sweep["dir"]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert tree_bytes(str(folder)) == sum(p.stat().st_size for p in files) > 0
    assert tree_bytes(str(folder / "absent")) == 0
    for run in (folder / "train").iterdir():
        assert 1 <= len(list(run.glob("epoch_*"))) <= 2, run


def assert_same_values(shown: list[float], logged: list[float]) -> None:
    """Every value shown is a logged one and every logged one is shown (float32 events)."""
    shown_, logged_ = np.array(shown)[:, None], np.array(logged)[None, :]
    close = np.isclose(shown_, logged_, rtol=1e-5)
    assert close.any(1).all() and close.any(0).all(), (shown, logged)


@pytest.mark.slow
def test_plots_exist_and_show_something(resumed_sweep: dict) -> None:
    for name in ("error_vs_labels", "error_vs_params", "learning_curves"):
        image = np.asarray(Image.open(resumed_sweep["dir"] / "report" / f"{name}.png").convert("L"))
        assert image.shape[0] > 200 and image.shape[1] > 300, name
        assert (image < 128).mean() > 0.005, name  # lines and dots drawn, not a blank canvas


@pytest.mark.slow
def test_best_config_per_label_count_loads_and_trains(resumed_sweep: dict, tmp_path: Path) -> None:
    from lpray.train.fit import train

    trials = resumed_sweep["trials"]
    for label, group in trials.groupby("label"):
        best = group.loc[group["best_val_pixel_error"].idxmin()]
        path = resumed_sweep["dir"] / "report" / "best_configs" / f"train_frames={label}.yaml"
        cfg = load_config(path)
        params = json.loads(best["params"])
        assert cfg.losses.temporal.weight == pytest.approx(params["losses.temporal.weight"])
        assert cfg.losses.pca_singleview.weight == pytest.approx(
            params["losses.pca_singleview.weight"]
        )
        assert cfg.data.train_frames == (None if label == "all" else int(label))
    cfg = load_config(path, ["training.max_epochs=1", f"training.output_dir={tmp_path / 'best'}"])
    model_dir = train(cfg)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    assert math.isfinite(summary["test_pixel_error"])


@pytest.mark.slow
def test_sweep_report_rebuilds_the_same_table_from_storage(resumed_sweep: dict) -> None:
    report = resumed_sweep["dir"] / "report"
    expected = pd.read_parquet(report / "trials.parquet")
    for path in report.rglob("*"):
        if path.is_file():
            path.unlink()
    assert cli.main(["sweep-report", str(resumed_sweep["dir"])]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(report / "trials.parquet"), expected)
    assert (report / "learning_curves.png").is_file()
    assert len(list((report / "best_configs").glob("*.yaml"))) == 2

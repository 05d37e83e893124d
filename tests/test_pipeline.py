"""``lpray pipeline``: sweep -> ensemble -> track + EKS -> report, resumable stage by stage."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lpray import cli
from lpray.pipeline import STAGES, PipelineError, load_pipeline

from conftest import tiny_config


def write_pipeline(tmp_path: Path, project: Path, **changes: object) -> Path:
    """A tiny pipeline: a supervised and a semi-supervised trial x 2 epochs, 2 seeds x 2 epochs,
    the project's 1 test video. An untrained network's confidence stays below the temporal
    loss's default threshold and its predictions barely move, so epsilon and threshold 0 make
    the temporal loss act at all (the report warns when a loss never does)."""
    # 2 epochs: an epoch's row of the sweep's epoch log carries the training losses of the
    # epochs before it, so a 1-epoch trial logs none
    config = tiny_config(project, tmp_path / "model", training={"max_epochs": 2})
    config["model"]["backbone"] = "resnet18_w16"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    values = {
        "config": "tiny.yaml",
        "overrides": [
            "losses.temporal.weight=0.01",
            "losses.temporal.epsilon=0.0",
            "losses.temporal.confidence_threshold=0.0",
        ],
        "sweep": {
            "sweep": {
                "name": "tiny",
                "num_samples": 1,
                "search": "grid",
                "scheduler": "fifo",
                "max_concurrent_trials": 2,
                "resources": {"workers": 1, "cpus_per_worker": 0.99, "trial_cpus": 0.01},
            },
            "parameters": {"losses.temporal.weight": {"grid": [0.0, 0.03]}},
        },
        "ensemble": {"seeds": 2, "cpus_per_member": 1, "vary_labels": True},  # as the demo
        "track": {"videos": None, "cpus_per_task": 1, "chunk_size": 16},
        "storage": {"path": str(tmp_path / "run")},
        **changes,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def check_run(run: Path) -> None:
    """Every stage's marker, the ensemble of the sweep's best config, the corpus, the report."""
    markers = {s: json.loads((run / "stages" / f"{s}.json").read_text()) for s in STAGES}
    best = markers["sweep"]["best"]
    trials = pd.read_csv(Path(markers["sweep"]["experiment_dir"]) / "report" / "trials.csv")
    assert len(trials) == 2
    assert best["best_val_pixel_error"] == pytest.approx(trials["best_val_pixel_error"].min())
    # The ensemble trains the best trial's temporal weight (not the base config's 0.01).
    params = json.loads(best["params"])
    ensemble = json.loads((run / "ensemble" / "ensemble.json").read_text())
    assert ensemble["n_done"] == 2 and len(markers["ensemble"]["members_done"]) == 2
    weight = ensemble["config"]["losses"]["temporal"]["weight"]
    assert weight == pytest.approx(params["losses.temporal.weight"])
    # each member its own labeled frames, and the report says so
    assert [m["split_seed"] for m in ensemble["members"]] == [0, 1]
    summary = pd.read_csv(run / "track" / "summary.csv")
    assert list(summary["status"]) == ["done"]
    video = summary["video"][0]
    assert (run / "track" / video / f"{video}.eks.csv").is_file()
    strips = list((run / "track").glob("*/*.labeled.png"))
    assert strips
    page = (run / "report.html").read_text()
    for section in ('id="sweep"', 'id="ensemble"', 'id="tracking"', 'id="samples"'):
        assert section in page
    assert "No sweep ran" not in page
    assert page.count("data:image/png;base64,") >= 1 + len(strips)  # sweep plots + strips
    assert str(best["trial_id"]) in page and video in page
    check_report_claims(run, trials, page, video)


def check_report_claims(run: Path, trials: pd.DataFrame, page: str, video: str) -> None:
    """What the report says about the sweep and the ensemble is what the run did."""
    experiment = Path(json.loads((run / "stages" / "sweep.json").read_text())["experiment_dir"])
    epochs = pd.read_csv(experiment / "report" / "epochs.csv")
    supervised = trials[trials["loss_setting"] == "supervised"]
    assert len(supervised) == 1, trials["loss_setting"]
    for trial_id in trials.loc[trials["loss_setting"] != "supervised", "trial_id"]:
        logged = epochs.loc[epochs["trial_id"] == trial_id, "train/temporal"]
        assert (logged.fillna(0) > 0).any(), f"{trial_id}: the temporal loss never acted"
    sweep = page[page.index('<section id="sweep">') : page.index('<section id="ensemble">')]
    baseline = re.findall(r'<tr class="[^"]*\bbaseline\b[^"]*">(.*?)</tr>', sweep)
    assert len(baseline) == 1 and f"<td>{supervised['trial_id'].iloc[0]}</td>" in baseline[0]
    assert "supervised (baseline)" in sweep and "unsupervised share %" in sweep
    assert "Settings to fix" not in page  # every switched-on loss acted
    # The report's EKS error, recomputed here from the EKS table and the truth file alone.
    eks = pd.read_csv(run / "track" / video / f"{video}.eks.csv", header=[0, 1, 2], index_col=0)
    truth = pd.read_csv(
        Path(trials["data.root"].iloc[0]) / "truth" / f"{video}.csv", header=[0, 1, 2], index_col=0
    )
    parts = list(dict.fromkeys(truth.columns.get_level_values(1)))
    errors = []
    for part in parts:
        dx = (
            eks.xs((part, "x"), axis=1, level=(1, 2)).iloc[:, 0]
            - truth.xs((part, "x"), axis=1, level=(1, 2)).iloc[:, 0]
        )
        dy = (
            eks.xs((part, "y"), axis=1, level=(1, 2)).iloc[:, 0]
            - truth.xs((part, "y"), axis=1, level=(1, 2)).iloc[:, 0]
        )
        seen = truth.xs((part, "visible"), axis=1, level=(1, 2)).iloc[:, 0] > 0.5
        errors.extend(((dx**2 + dy**2) ** 0.5)[seen])
    expected = sum(errors) / len(errors)
    ensemble = page[page.index('<section id="ensemble">') : page.index('<section id="tracking">')]
    shown = float(re.search(r'<td>EKS</td><td class="num">([0-9.]+)</td>', ensemble)[1])
    assert shown == pytest.approx(expected, abs=0.006)
    for name in ("member-0", "member-1", "member median"):
        assert f"<td>{name}</td>" in ensemble
    assert "in their labeled frames (split seeds 0, 1)" in ensemble
    table = pd.read_csv(experiment / "report" / "trials.csv")
    scored = pd.read_csv(run / "truth" / "trials.csv")
    assert set(scored["trial_id"]) == set(table["trial_id"])
    assert scored["video_error_px"].notna().all()


@pytest.mark.slow
def test_pipeline_runs_every_stage_then_skips_them(
    ray_cluster, tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_pipeline(tmp_path, tiny_project)
    assert cli.main(["pipeline", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    check_run(run)
    assert f"report: {run / 'report.html'}" in out
    assert "best trial" in out and "1 videos tracked" in out

    markers = {s: (run / "stages" / f"{s}.json").read_bytes() for s in STAGES}
    report = (run / "report.html").stat().st_mtime_ns
    started = time.perf_counter()
    assert cli.main(["pipeline", str(path), "--no-progress"]) == 0
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert out.count("skipped (done before)") == len(STAGES)
    assert {s: (run / "stages" / f"{s}.json").read_bytes() for s in STAGES} == markers
    assert (run / "report.html").stat().st_mtime_ns == report
    assert seconds < 10


def test_bad_pipeline_keys_give_clear_errors(
    tiny_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_pipeline(tmp_path, tiny_project, tracking={"videos": []})
    with pytest.raises(PipelineError, match=r"unknown pipeline key tracking \(valid keys: config"):
        load_pipeline(path)
    path = write_pipeline(tmp_path, tiny_project)
    with pytest.raises(PipelineError, match=r"unknown config key ensemble\.sedes"):
        load_pipeline(path, ["ensemble.sedes=2"])
    with pytest.raises(PipelineError, match=r"ensemble\.seeds: must be >= 1"):
        load_pipeline(path, ["ensemble.seeds=0"])
    with pytest.raises(PipelineError, match=r"ensemble\.seeds: expected an integer"):
        load_pipeline(path, ["ensemble.seeds=two"])
    with pytest.raises(ValueError, match=r"sweep.*losses\.temporal\.wieght"):
        load_pipeline(
            write_pipeline(
                tmp_path,
                tiny_project,
                sweep={"parameters": {"losses.temporal.wieght": {"uniform": [0, 1]}}},
            )
        )
    # Through the command line: one clear line, exit code 2, nothing run.
    assert cli.main(["pipeline", str(path), "storage.pth=x"]) == 2
    err = capsys.readouterr().err
    assert "lpray pipeline: error:" in err and "storage.pth" in err
    assert not (tmp_path / "run").exists()


# The two-node ``ray job submit`` of the pipeline runs with its storage in a bucket:
# tests/io/test_storage_s3.py (test_job_submit_runs_the_pipeline_on_two_nodes_in_a_bucket).

"""The benches' CPU smoke modes run (a bench that no longer runs is caught in CI, not on the GPU
machine, where device time is short)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_smoke(bench: str, results: Path, *args: str) -> dict:
    """``bench/<bench>.py --smoke ARGS`` in a fresh process; the JSON it wrote into ``results``."""
    env = {**os.environ, "LPRAY_BENCH_RESULTS": str(results), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), "--smoke", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((results / f"{bench}_smoke.json").read_text())
    assert "machine" in result
    return result


def pixel_error(value: float, width: int, height: int) -> bool:
    """A real error: finite, above 0 (no scoring against itself) and within the frame."""
    return math.isfinite(value) and 0 < value < math.hypot(width, height)


def temporary(folder: str) -> bool:
    """A smoke run's work folder: outside the checkout and removed when the bench ended."""
    return ROOT not in Path(folder).parents and not Path(folder).exists()


@pytest.mark.slow
def test_graphs_bench_smoke(tmp_path):
    result = run_smoke("graphs", tmp_path)
    rows = result["rows"]
    # one row per (members, busy threads, mode); on a CPU only the eager mode runs
    assert [(r["K"], r["threads"], r["mode"]) for r in rows] == [(1, 0, "eager"), (1, 2, "eager")]
    assert all(math.isfinite(r["video_fps"]) and r["video_fps"] > 0 for r in rows)


@pytest.mark.slow
def test_select_frames_bench_smoke(tmp_path):
    result = run_smoke("select_frames", tmp_path)
    args = result["args"]
    size, n = args["frame_size"], args["n"]
    methods = ["base ensemble member", "select-frames", "random", "dlc-jump", "none"]
    assert [(r["method"], r["seed"]) for r in result["rows"]] == [(m, 0) for m in methods]
    assert all(pixel_error(r[w], size, size) for r in result["rows"] for w in ("pool", "held_out"))
    assert [s["method"] for s in result["summary"]] == methods
    # with no added labels and the trackers' steps, retraining gives the tracker of that seed
    # (a CPU run is deterministic): the comparison's baseline is the base ensemble itself
    base, none = result["rows"][0], result["rows"][-1]
    assert none["pool"] == pytest.approx(base["pool"], rel=1e-6)
    assert result["tracker_steps"] == [args["epochs"] * args["steps_per_epoch"]] * args["members"]
    picks = result["picks"]
    (pool,) = result["pool_videos"]
    for frames in (
        picks["select-frames"][pool],
        picks["dlc-jump"][pool],
        picks["random"]["0"][pool],
    ):
        assert len(set(frames)) == n and all(0 <= t < args["frames"] for t in frames)
    chosen = sorted(picks["select-frames"][pool])
    assert all(b - a >= args["min_gap"] for a, b in zip(chosen, chosen[1:]))
    assert picks["dlc-jump_outliers_per_video"][pool] >= n  # DLC's extraction ran, not the fill
    assert temporary(args["out"])


@pytest.mark.slow
def test_demo_setting_bench_smoke(tmp_path):
    result = run_smoke("demo_setting", tmp_path)
    runs = result["runs"]
    assert [(r["name"], r["split_seed"]) for r in runs] == [("sup", 0), ("semi", 1)]
    assert [(r["temporal"], r["multiview"]) for r in runs] == [(0, 0), (0.01, 0.01)]
    # the pipeline's two 64x64 views, stacked: a 64-wide, 128-high frame
    assert all(pixel_error(r["video_pixel_error"], 64, 128) for r in runs)
    assert all(r["minutes"] > 0 for r in runs)
    ensemble = result["ensemble"]
    errors = ensemble["video_pixel_error"]
    assert set(errors) == {"member 0", "member 1", "member mean", "member median", "EKS"}
    assert all(pixel_error(e, 64, 128) for e in errors.values())
    # the ensemble scores each member as the run did: same network, video and truth
    assert [errors["member 0"], errors["member 1"]] == pytest.approx(
        [r["video_pixel_error"] for r in runs]
    )
    # the mean's distance to the truth is at most the members' mean distance (triangle inequality)
    assert errors["member mean"] <= (errors["member 0"] + errors["member 1"]) / 2 + 1e-9
    assert ensemble["multiview_eks"] is True
    (correlation,) = ensemble["member_error_correlations"]
    assert -1 <= correlation <= 1
    assert temporary(result["args"]["work"])


@pytest.mark.slow
def test_startup_bench_smoke(tmp_path):
    result = run_smoke("startup", tmp_path)
    assert result["trees"] == {"new": str(ROOT)}
    (row,) = result["rows"]
    # the point of the torch-free driver: lpray track reaches ray.init without importing torch
    assert row["tree"] == "new" and row["torch_imported"] is False and row["repeats"] == 1
    assert 0 < row["ray_init_s_median"] < 60
    assert [r["ray_init_s"] for r in result["runs"]["new"]] == [row["ray_init_s_median"]]
    main_job = ROOT / "outputs" / "pipeline-synthetic" / "ensemble"
    assert result["ensemble"] == str(main_job) or temporary(result["ensemble"])


@pytest.mark.slow
def test_network_bench_smoke(tmp_path):
    result = run_smoke("network", tmp_path)
    rows = result["rows"]
    # every (cuDNN autotuning, BatchNorm folded, head padded) setting, timed by stage
    settings = {(r["cudnn_benchmark"], r["fold"], r["pad_head"]) for r in rows}
    assert len(rows) == len(settings) == 8
    for row in rows:
        stages = [row[f"{s}_ms"] for s in ("trunk", "head", "decode", "whole")]
        assert all(math.isfinite(v) and v > 0 for v in stages), row
        assert row["img_per_s"] == pytest.approx(
            result["settings"]["chunk"] / row["whole_ms"] * 1e3
        )
    assert result["best_eager"] == max(rows, key=lambda r: r["img_per_s"])


@pytest.mark.slow
def test_track_bench_smoke(tmp_path):
    clip = Path(os.environ.get("LPRAY_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (clip / "mirror-mouse-example" / "videos" / "test_vid.mp4").is_file():
        pytest.skip("the track bench's corpus is the mirror-mouse clip in ../shared/data (absent)")
    result = run_smoke("track", tmp_path, "--work", str(tmp_path / "work"))
    rows = result["rows"]
    assert [(r["corpus"], r["variant"], r["K"]) for r in rows] == [
        ("clip", "eager", 1),
        ("clip", "eager", 2),
    ]
    decode = result["corpora"]["clip"]["decode"]
    assert sorted(decode, key=int) == ["1", "2"]
    for row in rows:
        assert row["member_fps"] == pytest.approx(row["video_fps"] * row["K"])
        assert all(row[c] > 0 for c in ("video_fps", "after_first", "startup_s", "net_eager"))
        bound = min(row["decode_bound"], row["net_eager"])
        assert row["ratio_to_bound"] == pytest.approx(row["video_fps"] / bound)
    # K members cost more network time per video frame than one
    assert rows[1]["net_eager"] < rows[0]["net_eager"]
    predicts = {p["variant"]: p for p in result["predict"]}
    assert set(predicts) == {"graphs", "nographs"}
    assert all(p["in_process_fps"] > 0 and p["seconds"] > 0 for p in predicts.values())

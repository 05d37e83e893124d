"""Benchmark lpray's Ensemble Kalman Smoother against the reference package.

What it measures (results printed as a table and written to ``bench/results/eks.json``):

1. Speed, frames/s, on ONE core (``taskset -c 0``, BLAS/OpenMP/numba threads = 1) for lpray and
   for the reference ``ensemble-kalman-smoother==4.6.2`` on the same input files: automatic and
   fixed smoothing parameter, on the 2,000-frame ibl-pupil ensemble (5 members, 4 keypoints) and
   on 100,000 frames (ibl-pupil tiled 50 times). The timed call goes from loaded member tables to
   the smoothed table (file reading excluded for both). Medians of repeats after one warm-up call;
   the cold first call is reported too. At 100k frames with automatic s the reference's single
   (cold) call is its sample: it takes minutes, of which compilation is a few seconds.
2. The choice of lpray's core: its compiled (numba) scan against a banded solve of the posterior
   precision (``scipy.linalg.solveh_banded``, means only) and a NumPy loop over frames.
3. Accuracy against a known truth: synthetic ensembles (random-walk keypoints; members with
   different noise levels and occasional large outliers with lower confidence), RMSE of lpray's
   and the reference's output (both with automatic s), of lpray run with the reference's chosen
   s (isolates the model from the choice of s) and of the members' median.
4. Distributed EKS over Ray with 1 and 2 CPUs on 50 synthetic videos (one task per video).

The reference runs in its own throwaway venv (it pulls jax and is never a dependency of lpray)::

    python -m venv /tmp/eksref && /tmp/eksref/bin/pip install ensemble-kalman-smoother==4.6.2
    python bench/eks.py --ref-python /tmp/eksref/bin/python

This file is also the worker that both venvs' pythons run (``--worker``), which is why its
module-level imports are standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IBL = REPO.parent / "shared" / "data" / "eks-examples" / "ibl-pupil"
RESULTS = REPO / "bench" / "results" / "eks.json"
# One thread for every math library either tool may use (the process is also pinned to CPU 0).
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}
FIXED_S = 0.2


# ----------------------------------------------------------------------------------------------
# Workers (run in a pinned subprocess by either venv's python)


def _timed(call, repeats: int) -> dict:
    """Time ``call()``: a first (cold) call, then ``repeats`` warm calls (the sample)."""
    start = time.perf_counter()
    result = call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return {"first_s": first, "times_s": times or [first], "result": result}


def worker_lpray(spec: dict) -> dict:
    """Time lpray's smooth_ensemble on member CSVs; optionally save the output."""
    import numpy as np

    from lpray.io.tables import read_pose_csv, write_pose_csv
    from lpray.smooth import smooth_ensemble

    tables = [read_pose_csv(f) for f in spec["files"]]
    run = _timed(lambda: smooth_ensemble(tables, spec["smooth_param"]), spec["repeats"])
    table, params = run.pop("result")
    if spec.get("out_csv"):
        write_pose_csv(table, spec["out_csv"])
    return {
        **run,
        "frames": len(table),
        "s": [float(v) for v in params.values()],
        "finite": bool(np.isfinite(table.to_numpy()).all()),
    }


def worker_reference(spec: dict) -> dict:
    """Time the reference package (ensemble-kalman-smoother) on the same files, same scope."""
    import logging

    logging.disable(logging.WARNING)
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # this file is eks.py
    from eks.marker_array import input_dfs_to_markerArray
    from eks.singlecam_smoother import ensemble_kalman_smoother_singlecam
    from eks.utils import format_data

    dfs, names = format_data(list(spec["files"]))

    def call():
        markers = input_dfs_to_markerArray([dfs], names, [""])
        return ensemble_kalman_smoother_singlecam(markers, names, smooth_param=spec["smooth_param"])

    run = _timed(call, spec["repeats"])
    table, s = run.pop("result")
    if spec.get("out_csv"):
        table.to_csv(spec["out_csv"])
    return {**run, "frames": len(table), "s": [float(v) for v in s]}


def worker_core(spec: dict) -> dict:
    """Smoothed means of B random walks x T frames: numba scan vs banded solve vs NumPy loop."""
    import numpy as np
    from scipy.linalg import solveh_banded

    from lpray.smooth.kalman import smooth_random_walks

    rng = np.random.default_rng(0)
    n_series, n_frames, s, p0 = 8, spec["frames"], 0.5, 10.0
    y = np.cumsum(rng.normal(size=(n_series, n_frames)), axis=1)
    r = rng.uniform(0.5, 3.0, size=y.shape)

    def banded():
        out = np.empty_like(y)
        for b in range(n_series):
            upper = np.zeros((2, n_frames))
            upper[0, 1:] = -1.0 / s
            upper[1] = 1.0 / r[b] + 2.0 / s
            upper[1, 0] += 1.0 / p0 - 1.0 / s
            upper[1, -1] -= 1.0 / s
            out[b] = solveh_banded(upper, y[b] / r[b])
        return out

    def numpy_loop():
        m, p = np.zeros(n_series), np.full(n_series, p0)
        mf, pf = np.empty_like(y), np.empty_like(y)
        for t in range(n_frames):
            if t:
                p = p + s
            gain = p / (p + r[:, t])
            m = m + gain * (y[:, t] - m)
            p = p * r[:, t] / (p + r[:, t])
            mf[:, t], pf[:, t] = m, p
        for t in range(n_frames - 2, -1, -1):
            g = pf[:, t] / (pf[:, t] + s)
            mf[:, t] += g * (mf[:, t + 1] - mf[:, t])
            pf[:, t] += g * g * (pf[:, t + 1] - pf[:, t] - s)
        return mf

    out = {}
    reference = smooth_random_walks(y, r, s, p0)[0]
    for name, call in [
        ("numba_scan_means_and_variances", lambda: smooth_random_walks(y, r, s, p0)[0]),
        ("scipy_solveh_banded_means_only", banded),
        ("numpy_frame_loop", numpy_loop),
    ]:
        run = _timed(call, 3 if name != "numpy_frame_loop" else 1)
        err = float(np.abs(run.pop("result") - reference).max())
        out[name] = {"median_s": statistics.median(run["times_s"]), "max_abs_diff": err}
    return {"series": n_series, "frames": n_frames, "methods": out}


WORKERS = {"lpray": worker_lpray, "reference": worker_reference, "core": worker_core}


# ----------------------------------------------------------------------------------------------
# Inputs


def synthetic_members(seed: int, n_frames: int, n_keypoints: int = 4, n_members: int = 5):
    """A known truth and an ensemble predicting it.

    Truth: per keypoint a 2-D random walk (steps 0.3-1 px per frame). Members: truth + Gaussian
    noise whose scale differs per member and keypoint (0.5-3 px), plus outliers on 2% of frames
    (20 px jumps) that come with a lower confidence, as heatmap networks' mistakes often do.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.3, 1.0, size=(1, n_keypoints, 1))
    truth = 100.0 + np.cumsum(rng.normal(size=(n_frames, n_keypoints, 2)) * steps, axis=0)
    scales = rng.uniform(0.5, 3.0, size=(n_members, 1, n_keypoints, 1))
    xy = truth + rng.normal(size=(n_members, *truth.shape)) * scales
    outliers = rng.random((n_members, n_frames, n_keypoints)) < 0.02
    xy += outliers[..., None] * rng.normal(scale=20.0, size=xy.shape)
    likelihood = np.clip(
        np.where(outliers, rng.uniform(0.3, 0.9, outliers.shape), rng.uniform(0.85, 1.0)),
        0,
        1,
    )
    return truth, xy, likelihood


def write_members(folder: Path, xy, likelihood, stem: str) -> list[str]:
    from lpray.io.tables import arrays_to_table, write_pose_csv

    names = [f"kp{k}" for k in range(xy.shape[2])]
    paths = []
    for m in range(len(xy)):
        path = folder / f"{stem}.rng={m}.csv"
        write_pose_csv(arrays_to_table(xy[m], names, likelihood[m], scorer="synthetic"), path)
        paths.append(str(path))
    return paths


def tiled_ibl(folder: Path, copies: int) -> list[str]:
    """The ibl-pupil members concatenated ``copies`` times (same files for both tools)."""
    import pandas as pd

    from lpray.io.tables import read_pose_csv, write_pose_csv

    paths = []
    for src in sorted(IBL.glob("*.csv")):
        table = pd.concat([read_pose_csv(src)] * copies, ignore_index=True)
        path = folder / f"tiled{copies}.{src.name}"
        write_pose_csv(table, path)
        paths.append(str(path))
    return paths


# ----------------------------------------------------------------------------------------------
# Orchestration


def pinned(python: str, worker: str, spec: dict) -> dict:
    """Run a worker on CPU 0 with one thread everywhere; return its JSON answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    env = {**os.environ, **ONE_THREAD, "JAX_PLATFORMS": "cpu"}
    cmd = [
        "taskset",
        "-c",
        "0",
        python,
        str(Path(__file__).resolve()),
        "--worker",
        worker,
        handle.name,
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode:
        raise RuntimeError(f"{worker} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fps(frames: int, run: dict) -> float:
    return frames / statistics.median(run["times_s"])


def bench_speed(ref_python: str | None, tmp: Path) -> list[dict]:
    rows = []
    tiled = tiled_ibl(tmp, 50)
    ibl = [str(p) for p in sorted(IBL.glob("*.csv"))]
    configs = [
        ("2k ibl-pupil", ibl, None, 15, 5),
        ("2k ibl-pupil", ibl, FIXED_S, 15, 5),
        ("100k ibl-pupil x50", tiled, None, 5, 0),  # the reference takes minutes a call here
        ("100k ibl-pupil x50", tiled, FIXED_S, 5, 2),
    ]
    for label, files, s, lp_repeats, ref_repeats in configs:
        mode = "auto s" if s is None else f"fixed s={s}"
        print(f"speed: {label}, {mode} ...", flush=True)
        mine = pinned(
            sys.executable, "lpray", {"files": files, "smooth_param": s, "repeats": lp_repeats}
        )
        row = {
            "input": label,
            "mode": mode,
            "frames": mine["frames"],
            "lpray_fps": fps(mine["frames"], mine),
            "lpray_first_call_s": mine["first_s"],
            "lpray_times_s": mine["times_s"],
            "lpray_s": mine["s"],
        }
        if ref_python:
            ref = pinned(
                ref_python, "reference", {"files": files, "smooth_param": s, "repeats": ref_repeats}
            )
            row.update(
                reference_fps=fps(ref["frames"], ref),
                reference_times_s=ref["times_s"],
                reference_first_call_s=ref["first_s"],
                reference_s=ref["s"],
            )
            row["speedup"] = row["lpray_fps"] / row["reference_fps"]
        rows.append(row)
    return rows


def bench_accuracy(ref_python: str | None, tmp: Path, seeds=tuple(range(11, 21))) -> dict:
    """RMSE against the truth; also lpray run with the reference's own s, to separate the model
    (identical) from the choice of s (exact optimum vs early-stopped Adam)."""
    import numpy as np

    from lpray.io.tables import read_pose_csv, table_to_arrays
    from lpray.smooth import smooth_ensemble

    errors: dict[str, list] = {
        "lpray": [],
        "reference": [],
        "lpray_with_reference_s": [],
        "member_median": [],
    }
    log_s_ratio: list[float] = []
    for seed in seeds:
        print(f"accuracy: synthetic seed {seed} ...", flush=True)
        truth, xy, likelihood = synthetic_members(seed, 2000)
        files = write_members(tmp, xy, likelihood, f"synth{seed}")
        tables = [read_pose_csv(f) for f in files]
        errors["member_median"].append((np.median(xy, axis=0) - truth) ** 2)
        table, params = smooth_ensemble(tables)
        errors["lpray"].append((table_to_arrays(table)[0] - truth) ** 2)
        if ref_python:
            ref_csv = tmp / f"ref{seed}.csv"
            spec = {"files": files, "smooth_param": None, "repeats": 0, "out_csv": str(ref_csv)}
            ref = pinned(ref_python, "reference", spec)
            errors["reference"].append((table_to_arrays(read_pose_csv(ref_csv))[0] - truth) ** 2)
            same_s, _ = smooth_ensemble(tables, smooth_param=dict(zip(params, ref["s"])))
            errors["lpray_with_reference_s"].append((table_to_arrays(same_s)[0] - truth) ** 2)
            log_s_ratio += list(np.log(np.array(list(params.values())) / np.array(ref["s"])))
    per_video = {k: [float(np.sqrt(np.mean(e))) for e in v] for k, v in errors.items() if v}
    out = {
        "videos": len(seeds),
        "frames_per_video": 2000,
        "keypoints": 4,
        "members": 5,
        "rmse_px": {k: float(np.sqrt(np.mean(v))) for k, v in errors.items() if v},
        "rmse_px_per_video": per_video,
    }
    if log_s_ratio:
        ratio = np.exp(np.array(log_s_ratio))
        out["s_lpray_over_reference"] = {
            "median": float(np.median(ratio)),
            "min": float(ratio.min()),
            "max": float(ratio.max()),
        }
        out["videos_lpray_rmse_le_reference"] = int(
            sum(a <= b for a, b in zip(per_video["lpray"], per_video["reference"]))
        )
    return out


def _smooth_synthetic_video(seed: int, n_frames: int) -> tuple[int, float]:
    """One Ray task: build a synthetic ensemble, smooth it (automatic s), return its RMSE."""
    import numpy as np

    from lpray.io.tables import arrays_to_table, table_to_arrays
    from lpray.smooth import smooth_ensemble

    truth, xy, likelihood = synthetic_members(seed, n_frames)
    names = [f"kp{k}" for k in range(xy.shape[2])]
    tables = [arrays_to_table(xy[m], names, likelihood[m]) for m in range(len(xy))]
    table, _ = smooth_ensemble(tables)
    return n_frames, float(np.sqrt(np.mean((table_to_arrays(table)[0] - truth) ** 2)))


def bench_ray(n_videos: int = 50, n_frames: int = 10000) -> list[dict]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    rows = []
    for cpus in (1, 2):
        print(f"ray: {n_videos} videos on {cpus} CPU(s) ...", flush=True)
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            log_to_driver=False,
        )
        task = ray.remote(num_cpus=1)(_smooth_synthetic_video)
        ray.get([task.remote(1000 + i, 500) for i in range(cpus)])  # start workers, load numba
        times = []
        for _ in range(3):
            start = time.perf_counter()
            results = ray.get([task.remote(i, n_frames) for i in range(n_videos)])
            times.append(time.perf_counter() - start)
        ray.shutdown()
        frames = sum(f for f, _ in results)
        rows.append(
            {
                "cpus": cpus,
                "videos": n_videos,
                "frames": frames,
                "times_s": times,
                "fps": frames / statistics.median(times),
                "mean_rmse_px": statistics.mean(e for _, e in results),
            }
        )
    rows[1]["scaling_vs_1cpu"] = rows[1]["fps"] / rows[0]["fps"]
    return rows


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import numba
    import numpy
    import ray
    import scipy

    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "ray": ray.__version__,
        "note": "2 shared cores: other jobs may run at the same time",
    }


def print_table(speed: list[dict], accuracy: dict, core: dict, ray_rows: list[dict]) -> None:
    print("\nEKS speed, one core (frames/s, median of repeats)")
    print(f"{'input':22} {'mode':14} {'lpray':>12} {'reference':>11} {'ratio':>8}")
    for row in speed:
        ref = row.get("reference_fps")
        ref_text = "-" if ref is None else f"{ref:,.0f}"
        ratio = "" if ref is None else f"{row['speedup']:.0f}x"
        print(
            f"{row['input']:22} {row['mode']:14} {row['lpray_fps']:12,.0f} {ref_text:>11} "
            f"{ratio:>8}"
        )
    print(f"\ncore choice, {core['series']} series x {core['frames']} frames (seconds):")
    for name, m in core["methods"].items():
        print(f"  {name:34} {m['median_s']:.4f}  (max diff {m['max_abs_diff']:.1e})")
    print(f"\nRMSE against truth (px), {accuracy['videos']} synthetic videos:")
    for name, value in accuracy["rmse_px"].items():
        print(f"  {name:24} {value:.4f}")
    if "s_lpray_over_reference" in accuracy:
        ratio = accuracy["s_lpray_over_reference"]
        print(
            f"  s lpray / s reference: median {ratio['median']:.2f} "
            f"[{ratio['min']:.2f}, {ratio['max']:.2f}]; lpray <= reference on "
            f"{accuracy['videos_lpray_rmse_le_reference']}/{accuracy['videos']} videos"
        )
    print("\nRay, 50 synthetic videos:")
    for row in ray_rows:
        print(
            f"  {row['cpus']} CPU(s): {row['fps']:,.0f} frames/s "
            f"({statistics.median(row['times_s']):.2f} s)"
        )
    print(f"  scaling 2 vs 1 CPU: {ray_rows[1]['scaling_vs_1cpu']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref-python",
        default="/tmp/eksref/bin/python",
        help="python of a venv with ensemble-kalman-smoother==4.6.2",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        print(json.dumps(WORKERS[args.worker](spec)))
        return 0
    if not IBL.is_dir():
        print(f"shared data not found at {IBL}", file=sys.stderr)
        return 1
    ref_python = args.ref_python if Path(args.ref_python).exists() else None
    if ref_python is None:
        print(f"reference python {args.ref_python} not found: lpray only", file=sys.stderr)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        core = pinned(sys.executable, "core", {"frames": 100_000})
        speed = bench_speed(ref_python, Path(tmp))
        accuracy = bench_accuracy(ref_python, Path(tmp))
    ray_rows = bench_ray()
    auto = [r for r in speed if r["mode"] == "auto s" and "speedup" in r]
    goals = {
        "speedup_auto_s_min": min((r["speedup"] for r in auto), default=None),
        "speedup_goal": 20.0,
        "rmse_lpray_le_reference": (
            accuracy["rmse_px"]["lpray"] <= accuracy["rmse_px"]["reference"]
            if "reference" in accuracy["rmse_px"]
            else None
        ),
    }
    host = {**machine(), "load_average_1_5_15min": {"start": load_at_start, "end": os.getloadavg()}}
    result = {
        "machine": host,
        "speed_one_core": speed,
        "core_choice": core,
        "accuracy": accuracy,
        "ray": ray_rows,
        "goals": goals,
        "reference": "ensemble-kalman-smoother 4.6.2" if ref_python else None,
    }
    print_table(speed, accuracy, core, ray_rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

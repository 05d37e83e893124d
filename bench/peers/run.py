"""Side by side with Lightning Pose: accuracy and speed of lpray and the peer in one command.

    python bench/peers/run.py --steps N --seeds 0 1 2 [--peer-venv PATH] [--gpu]
                              [--skip-peer] [--skip-lpray]

Both packages train on the mirror-mouse example with the same 72/9/9 split, backbone (resnet18,
random init: no pretrained weights can be downloaded here), input size (128x128), batch size
(16) and number of optimizer steps; then each predicts the 994-frame test video. Every command
runs as a child process whose whole process tree (loader workers included) is watched for peak
memory. The held-out pixel error of BOTH packages is computed here, by one function, from the
labeled-frame predictions CSV each package writes, against the labels, in frame pixels.

Prints one table with lpray/peer ratios and writes JSON (machine description included) to
bench/results/peers_{cpu,gpu}.json. The peer lives in its own venv (bench/peers/install_peer.sh);
lightning-pose is never imported here nor a dependency of lpray. Runs with lpray's Python (needs
only the standard library, numpy, pandas and PyYAML).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from lpray.io.layout import ModelDir

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent)]  # peer_config beside this file, bench/common
from common import SHARED_DATA, cpu_model  # noqa: E402
from peer_config import steps_per_epoch, write_peer_config  # noqa: E402

DATA_ROOT = SHARED_DATA / "mirror-mouse-example"
SPLIT_FILE = SHARED_DATA / "mirror-mouse-reference-split.json"
VIDEO = DATA_ROOT / "videos" / "test_vid.mp4"
RANDOM_INIT_NOTE = (
    "Both packages start from RANDOM initialisation: no pretrained (ImageNet) weights can be "
    "downloaded on this machine. Pixel errors are therefore far above pretrained figures."
)


# ------------------------------------------------------------------------------------------
# Measuring a command: wall time and the peak memory of its whole process tree.


def _parent_map() -> dict[int, int]:
    """pid -> parent pid for every process, read from /proc (no psutil in lpray's venv)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree_pids(root: int) -> list[int]:
    """The root process and all its descendants (loader workers, Ray/DALI helpers, ...)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _proc_kb(path: str, key: str) -> int:
    """One ``Key:   N kB`` figure from a /proc file; 0 when the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _gpu_memory_mb(pids: set[int]) -> float:
    """GPU memory the given processes hold now, from nvidia-smi (0 without a GPU)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0.0
    total = 0.0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in pids:
            total += float(parts[1])
    return total


@dataclass
class Peak:
    """Peaks over the run: RSS summed over the tree (counts shared pages once per process, as
    ``max RSS of the process tree`` is usually meant), PSS summed (shared pages split), GPU."""

    rss_mb: float = 0.0
    pss_mb: float = 0.0
    gpu_mb: float = 0.0
    samples: int = 0


class TreeMonitor(threading.Thread):
    """Polls a process tree's memory until stopped; cheap enough for 2 shared cores."""

    def __init__(self, pid: int, interval: float, gpu: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.gpu = pid, interval, gpu
        self.peak = Peak()
        self._halt = threading.Event()

    def sample(self) -> None:
        pids = tree_pids(self.pid)
        rss = sum(_proc_kb(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024
        pss = sum(_proc_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
        self.peak.rss_mb = max(self.peak.rss_mb, rss)
        self.peak.pss_mb = max(self.peak.pss_mb, pss)
        if self.gpu:
            self.peak.gpu_mb = max(self.peak.gpu_mb, _gpu_memory_mb(set(pids)))
        self.peak.samples += 1

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> Peak:
        self._halt.set()
        self.join()
        return self.peak


@dataclass
class Measured:
    """One command: exit code, wall seconds, memory peaks, and where its output went."""

    command: list[str]
    returncode: int
    seconds: float
    peak: Peak
    log: str


def run_measured(cmd: list[str], log: Path, env: dict[str, str], cwd: Path, gpu: bool) -> Measured:
    """Run ``cmd`` with stdout+stderr to ``log``; time it and watch its process tree's memory."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        monitor = TreeMonitor(proc.pid, interval=1.0 if gpu else 0.5, gpu=gpu)
        monitor.start()
        try:
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: do not leave a training run behind
            proc.kill()
            raise
        seconds = time.perf_counter() - started
    return Measured(cmd, returncode, seconds, monitor.stop(), str(log))


def checked(result: Measured, what: str) -> Measured:
    """Stop the benchmark with the command's log tail when a command fails."""
    if result.returncode != 0:
        tail = "\n".join(Path(result.log).read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"{what} failed (exit {result.returncode}); log {result.log}:\n{tail}")
    return result


# ------------------------------------------------------------------------------------------
# The held-out pixel error, computed the same way for both packages.


def read_pose_csv(path: Path) -> pd.DataFrame:
    """A DLC/LP pose CSV (3 header rows, index = image path or frame) as x/y columns only."""
    table = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    keep = [c for c in table.columns if c[2] in ("x", "y")]
    return table[keep].apply(pd.to_numeric, errors="coerce")


def xy_array(table: pd.DataFrame, keypoints: list[str], rows: list[str]) -> np.ndarray:
    """(frames, keypoints, 2) array of the given rows and keypoints, by name (scorer ignored)."""
    by_part = table.droplevel(0, axis=1)
    cols = [(k, c) for k in keypoints for c in ("x", "y")]
    return by_part.loc[rows, cols].to_numpy(float).reshape(len(rows), len(keypoints), 2)


def test_pixel_error(
    predictions_csv: Path, labels_csv: Path, test_images: list[str]
) -> dict[str, Any]:
    """Mean Euclidean error (frame pixels) over every labeled (test frame, keypoint) pair.

    NaN labels are skipped (the same mean lpray's summary uses). Rows missing from the
    predictions CSV are an error: a package that did not predict a test frame must not pass.
    """
    labels = read_pose_csv(labels_csv)
    preds = read_pose_csv(predictions_csv)
    keypoints = list(dict.fromkeys(labels.columns.get_level_values(1)))
    missing = [img for img in test_images if img not in preds.index]
    if missing:
        raise SystemExit(f"{predictions_csv}: no prediction for test frame {missing[0]}")
    truth = xy_array(labels, keypoints, test_images)
    guess = xy_array(preds, keypoints, test_images)
    errors = np.linalg.norm(guess - truth, axis=-1)
    finite = errors[np.isfinite(errors)]
    with np.errstate(invalid="ignore"):
        per_keypoint = {k: float(np.nanmean(errors[:, i])) for i, k in enumerate(keypoints)}
    return {
        "mean": float(finite.mean()),
        "n_frames": len(test_images),
        "n_pairs": int(finite.size),
        "per_keypoint": per_keypoint,
    }


def count_rows(csv_path: Path) -> int:
    """Frames in a prediction CSV (3 header rows)."""
    return len(pd.read_csv(csv_path, header=[0, 1, 2], index_col=0))


# ------------------------------------------------------------------------------------------
# The two sides. Each returns plain dicts for the JSON.


@dataclass
class Settings:
    """Everything both sides share, resolved from the command line."""

    steps: int
    epochs: int
    seeds: list[int]
    gpu: bool
    batch_size: int
    image_size: list[int]
    backbone: str
    n_train: int
    steps_per_epoch: int
    val_every: int
    num_workers: int | None
    peer_imgaug: str
    lpray_augmentation: str
    peer_reader: str | None
    peer_pythonpath: str | None
    data_root: str
    split_file: str
    video: str
    work_dir: str
    notes: list[str] = field(default_factory=list)


def child_env(settings: Settings, extra_pythonpath: str | None = None) -> dict[str, str]:
    """Environment of every child: in CPU mode, hide GPUs so neither side can use one."""
    env = dict(os.environ)
    if not settings.gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (extra_pythonpath, env.get("PYTHONPATH")) if p
        )
    return env


def lpray_config(settings: Settings, seed: int, output_dir: Path) -> dict[str, Any]:
    """lpray's YAML config for one seed (supervised only: unsupervised weights default to 0)."""
    training: dict[str, Any] = {
        "max_epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "lr": 1e-3,
        "seed": seed,
        "unfreeze_epoch": 0,
        "val_every_n_epochs": settings.val_every,
        "output_dir": str(output_dir),
        "accelerator": "gpu" if settings.gpu else "cpu",
        "progress_bar": False,
        "augmentation": settings.lpray_augmentation,
    }
    if settings.num_workers is not None:
        training["num_workers"] = settings.num_workers
    return {
        "data": {
            "root": settings.data_root,
            "csv_file": "CollectedData.csv",
            "videos": ["videos/*.mp4"],
            "image_size": settings.image_size,
            "split_file": settings.split_file,
        },
        "model": {"backbone": settings.backbone, "pretrained": False},
        "training": training,
    }


FPS_PATTERN = re.compile(r"([0-9][0-9,]*\.?[0-9]*)\s*(?:frames/s|fps|frames per second)", re.I)


def parse_fps(log: Path) -> list[float]:
    """Every 'N frames/s' figure a command printed, in order (lpray predict prints each
    video's loop rate)."""
    found = FPS_PATTERN.findall(Path(log).read_text(errors="replace"))
    return [float(f.replace(",", "")) for f in found]


def run_lpray(
    settings: Settings, lpray_cmd: list[str], split: dict[str, list[str]]
) -> dict[str, Any]:
    """Train lpray once per seed, then predict the video with the first seed's model."""
    work = Path(settings.work_dir) / "lpray"
    env = child_env(settings, extra_pythonpath=str(REPO))
    labels_csv = Path(settings.data_root) / "CollectedData.csv"
    runs = []
    for seed in settings.seeds:
        model_dir = work / f"seed{seed}"
        shutil.rmtree(model_dir, ignore_errors=True)  # lpray resumes from last.ckpt otherwise
        cfg_path = work / f"config_seed{seed}.yaml"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(
            yaml.safe_dump(lpray_config(settings, seed, model_dir), sort_keys=False)
        )
        print(f"[lpray] train seed {seed} ({settings.epochs} epochs) ...", flush=True)
        result = checked(
            run_measured(
                [*lpray_cmd, "train", str(cfg_path)],
                work / f"train_seed{seed}.log",
                env,
                REPO,
                settings.gpu,
            ),
            f"lpray train seed {seed}",
        )
        summary = json.loads(ModelDir(model_dir).summary.read_text())
        error = test_pixel_error(model_dir / "labeled_predictions.csv", labels_csv, split["test"])
        runs.append(
            {
                "seed": seed,
                "command": asdict(result),
                "train_steps": summary.get("train_steps"),
                "train_seconds": summary.get("train_seconds"),
                "labeled_frames_per_second": summary.get("labeled_frames_per_second"),
                "fit_frames_per_second": _fit_rate(settings, summary.get("train_seconds")),
                "test_pixel_error": error["mean"],
                "test_pixel_error_detail": error,
                "own_test_pixel_error": summary.get("test_pixel_error"),
                "own_best_val_pixel_error": summary.get("best_val_pixel_error"),
                "split_sizes": [summary.get(f"n_{s}_frames") for s in ("train", "val", "test")],
            }
        )
        print(f"[lpray]   test error {error['mean']:.2f} px, {result.seconds:.0f} s", flush=True)
    out_dir = work / "predict"
    shutil.rmtree(out_dir, ignore_errors=True)
    first = work / f"seed{settings.seeds[0]}"
    device = ["--device", "cuda" if settings.gpu else "cpu"]
    print("[lpray] predict video ...", flush=True)
    # the video twice in one process, as the peer: first video, then a later one of a corpus
    # (under a second name: lpray predicts each path given once)
    again = (
        out_dir.parent / "again" / f"{Path(settings.video).stem}_again{Path(settings.video).suffix}"
    )
    again.parent.mkdir(parents=True, exist_ok=True)
    again.unlink(missing_ok=True)
    again.symlink_to(Path(settings.video).resolve())
    video_twice = [settings.video, str(again)]
    result = checked(
        run_measured(
            [*lpray_cmd, "predict", str(first), *video_twice, "--out", str(out_dir), *device],
            work / "predict.log",
            env,
            REPO,
            settings.gpu,
        ),
        "lpray predict",
    )
    frames = count_rows(out_dir / f"{Path(settings.video).stem}.csv")
    rates = parse_fps(Path(result.log))
    predict = {
        "command": asdict(result),
        "frames": frames,
        "frames_per_second": rates[0] if rates else None,
        "again_frames_per_second": rates[-1] if len(rates) > 1 else None,
        # both videos: the command predicts the clip twice
        "command_frames_per_second": 2 * frames / result.seconds,
    }
    return {"runs": runs, "predict": predict}


def _fit_rate(settings: Settings, train_seconds: float | None) -> float | None:
    """Labeled frames trained per wall second of the whole fit (loading + validation in)."""
    if not train_seconds:
        return None
    return settings.n_train * settings.epochs / train_seconds


def peer_split(predictions_csv: Path) -> dict[str, list[str]]:
    """The split the peer actually used, from the ``set`` column of its predictions CSV."""
    table = pd.read_csv(predictions_csv, header=[0, 1, 2], index_col=0)
    set_col = [c for c in table.columns if c[0] == "set"]
    labels = table[set_col[0]] if set_col else pd.Series(dtype=str)
    names = {"train": "train", "validation": "val", "test": "test"}
    return {names[k]: sorted(labels.index[labels == k]) for k in names}


def run_peer(settings: Settings, peer_python: str, split: dict[str, list[str]]) -> dict[str, Any]:
    """Train the peer once per seed through its own CLI (see peer_driver.py), then predict."""
    work = Path(settings.work_dir) / "peer"
    env = child_env(settings, extra_pythonpath=settings.peer_pythonpath)
    labels_csv = Path(settings.data_root) / "CollectedData.csv"
    driver = str(HERE / "peer_driver.py")
    runs = []
    imported: set[str] = set()  # distributions the peer's processes imported: the GPU carry list
    for seed in settings.seeds:
        model_dir = work / f"seed{seed}"
        shutil.rmtree(model_dir, ignore_errors=True)
        cfg_path = write_peer_config(
            work / f"config_seed{seed}.yaml",
            data_root=Path(settings.data_root),
            max_epochs=settings.epochs,
            seed=seed,
            image_size=(settings.image_size[0], settings.image_size[1]),
            batch_size=settings.batch_size,
            backbone=settings.backbone,
            imgaug=settings.peer_imgaug,
            num_workers=settings.num_workers,
            val_every_n_epochs=settings.val_every,
            gpu=settings.gpu,
        )
        result_json = work / f"train_seed{seed}.json"
        print(f"[peer] train seed {seed} ({settings.epochs} epochs) ...", flush=True)
        result = checked(
            run_measured(
                [peer_python, driver, "train", str(cfg_path), str(model_dir), str(result_json)],
                work / f"train_seed{seed}.log",
                env,
                work,
                settings.gpu,
            ),
            f"peer train seed {seed}",
        )
        inner = json.loads(result_json.read_text())
        used = peer_split(model_dir / "predictions.csv")
        error = test_pixel_error(model_dir / "predictions.csv", labels_csv, split["test"])
        runs.append(
            {
                "seed": seed,
                "command": asdict(result),
                "train_steps": inner["train_steps"],
                "train_seconds": inner["train_seconds"],
                "labeled_frames_per_second": inner["labeled_frames_per_second"],
                "fit_frames_per_second": _fit_rate(settings, inner["train_seconds"]),
                "test_pixel_error": error["mean"],
                "test_pixel_error_detail": error,
                "split_matches_reference": all(sorted(split[k]) == used[k] for k in used),
                "split_sizes": [len(used[k]) for k in ("train", "val", "test")],
            }
        )
        imported.update(inner["imported_distributions"])
        print(f"[peer]   test error {error['mean']:.2f} px, {result.seconds:.0f} s", flush=True)
    first = work / f"seed{settings.seeds[0]}"
    result_json = work / "predict.json"
    print("[peer] predict video ...", flush=True)
    result = checked(
        run_measured(
            [
                peer_python,
                driver,
                "predict",
                str(first),
                settings.video,
                str(result_json),
                *peer_reader_args(settings),
            ],
            work / "predict.log",
            env,
            work,
            settings.gpu,
        ),
        "peer predict",
    )
    inner = json.loads(result_json.read_text())
    frames = count_rows(Path(inner["predictions_csv"]))
    predict = {
        "command": asdict(result),
        "frames": frames,
        "frames_per_second": inner["frames_per_second"],
        "again_frames_per_second": inner.get("again_frames_per_second"),
        "command_frames_per_second": 2 * frames / result.seconds,
        "reader": _peer_reader_used(Path(result.log)),
    }
    imported.update(inner["imported_distributions"])
    return {
        "runs": runs,
        "predict": predict,
        "lightning_pose_version": inner["lightning_pose_version"],
        "imported_distributions": sorted(imported),
    }


def _peer_reader_used(log: Path) -> str | None:
    """Which video reader LP picked (it logs "using 'opencv' reader backend")."""
    found = re.findall(r"using '(\w+)' reader backend", log.read_text(errors="replace"))
    return found[-1] if found else None


def peer_reader_args(settings: Settings) -> list[str]:
    """Extra ``litpose predict`` arguments: the video reader, when one is forced."""
    return ["--reader", settings.peer_reader] if settings.peer_reader else []


# ------------------------------------------------------------------------------------------
# Summaries, the table and the machine description.


def mean_sd(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation and the values themselves (None entries dropped)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "values": []}
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": statistics.fmean(vals), "sd": sd, "values": vals}


def summarize(side: dict[str, Any]) -> dict[str, Any]:
    """Per-side figures across seeds (training) and of the one prediction run."""
    runs, predict = side["runs"], side["predict"]
    return {
        "labeled_frames_per_second": mean_sd([r["labeled_frames_per_second"] for r in runs]),
        "fit_frames_per_second": mean_sd([r["fit_frames_per_second"] for r in runs]),
        "train_seconds": mean_sd([r["train_seconds"] for r in runs]),
        "train_command_seconds": mean_sd([r["command"]["seconds"] for r in runs]),
        "train_peak_rss_mb": mean_sd([r["command"]["peak"]["rss_mb"] for r in runs]),
        "train_peak_pss_mb": mean_sd([r["command"]["peak"]["pss_mb"] for r in runs]),
        "train_peak_gpu_mb": mean_sd([r["command"]["peak"]["gpu_mb"] for r in runs]),
        "train_steps": [r["train_steps"] for r in runs],
        "test_pixel_error": mean_sd([r["test_pixel_error"] for r in runs]),
        "predict_frames_per_second": predict["frames_per_second"],
        "predict_again_frames_per_second": predict.get("again_frames_per_second"),
        "predict_command_seconds": predict["command"]["seconds"],
        "predict_command_frames_per_second": predict["command_frames_per_second"],
        "predict_peak_rss_mb": predict["command"]["peak"]["rss_mb"],
        "predict_peak_gpu_mb": predict["command"]["peak"]["gpu_mb"],
        "predict_frames": predict["frames"],
    }


# (label, summary key, unit, which is better, takes mean of a mean_sd dict)
TABLE_ROWS = [
    ("train labeled frames/s (batches)", "labeled_frames_per_second", "", "higher"),
    ("train labeled frames/s (whole fit)", "fit_frames_per_second", "", "higher"),
    ("train fit seconds", "train_seconds", "s", "lower"),
    ("train command seconds", "train_command_seconds", "s", "lower"),
    ("train peak RSS, process tree", "train_peak_rss_mb", "MB", "lower"),
    ("train peak PSS, process tree", "train_peak_pss_mb", "MB", "lower"),
    ("test pixel error (9 frames)", "test_pixel_error", "px", "lower"),
    ("video predict frames/s (loop, 1st video)", "predict_frames_per_second", "", "higher"),
    ("video predict frames/s (loop, 2nd video)", "predict_again_frames_per_second", "", "higher"),
    ("video predict command seconds", "predict_command_seconds", "s", "lower"),
    ("video predict frames/s (command)", "predict_command_frames_per_second", "", "higher"),
    ("video predict peak RSS", "predict_peak_rss_mb", "MB", "lower"),
]
GPU_ROWS = [
    ("train peak GPU memory", "train_peak_gpu_mb", "MB", "lower"),
    ("video predict peak GPU memory", "predict_peak_gpu_mb", "MB", "lower"),
]


def _value(entry: Any) -> float | None:
    return entry["mean"] if isinstance(entry, dict) else entry


def _cell(entry: Any) -> str:
    """'12.3 +- 0.4' for a seed summary, '12.3' for a single figure, '-' when absent."""
    value = _value(entry)
    if value is None:
        return "-"
    text = f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(entry, dict) and len(entry["values"]) > 1:
        text += f" +- {entry['sd']:.2g}"
    return text


def build_table(
    lp: dict[str, Any] | None, peer: dict[str, Any] | None, gpu: bool
) -> list[dict[str, Any]]:
    """Rows of the printed table, also stored in the JSON."""
    rows = []
    for label, key, unit, better in TABLE_ROWS + (GPU_ROWS if gpu else []):
        a = lp.get(key) if lp else None
        b = peer.get(key) if peer else None
        va, vb = _value(a), _value(b)
        ratio = va / vb if va is not None and vb not in (None, 0) else None
        rows.append(
            {
                "metric": label,
                "unit": unit,
                "better": better,
                "lpray": _cell(a),
                "peer": _cell(b),
                "ratio": ratio,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], settings: Settings) -> None:
    """The one table: metric | lpray | peer | lpray/peer."""
    mode = "GPU" if settings.gpu else "CPU"
    print(
        f"\nlpray vs Lightning Pose 2.4.3 ({mode}; {settings.backbone}, "
        f"{settings.image_size[0]}x{settings.image_size[1]}, batch {settings.batch_size}, "
        f"{settings.steps} steps = {settings.epochs} epochs, seeds {settings.seeds})"
    )
    print(f"NOTE: {RANDOM_INIT_NOTE}")
    header = f"{'metric':38s} {'lpray':>18s} {'peer':>18s} {'lpray/peer':>11s}  better"
    print(header)
    print("-" * len(header))
    for r in rows:
        name = f"{r['metric']}" + (f" [{r['unit']}]" if r["unit"] else "")
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        print(f"{name:38s} {r['lpray']:>18s} {r['peer']:>18s} {ratio:>11s}  {r['better']}")


def consistency_checks(
    settings: Settings, lp: dict[str, Any] | None, peer: dict[str, Any] | None
) -> dict[str, Any]:
    """What must hold for the comparison to be fair: equal steps, the reference split, and
    every video frame predicted. Printed under the table and stored in the JSON."""
    checks: dict[str, Any] = {"steps_expected": settings.steps}
    for name, side in (("lpray", lp), ("peer", peer)):
        if side is None:
            continue
        checks[f"{name}_steps"] = [r["train_steps"] for r in side["runs"]]
        checks[f"{name}_split_sizes"] = side["runs"][0]["split_sizes"]
        checks[f"{name}_video_frames"] = side["predict"]["frames"]
    if peer is not None:
        checks["peer_video_reader"] = peer["predict"]["reader"]
        checks["peer_split_matches_reference"] = all(
            r["split_matches_reference"] for r in peer["runs"]
        )
    steps = [s for side in (lp, peer) if side for s in (r["train_steps"] for r in side["runs"])]
    checks["ok"] = all(s == settings.steps for s in steps) and checks.get(
        "peer_split_matches_reference", True
    )
    return checks


def _python_versions(python: str, env: dict[str, str]) -> dict[str, str]:
    """torch / lightning / lightning-pose versions as seen by one interpreter."""
    code = (
        "import importlib.metadata as m, json, platform\n"
        "out = {'python': platform.python_version()}\n"
        "for d in ('torch', 'torchvision', 'lightning', 'pytorch-lightning', 'lightning-pose',"
        " 'numpy', 'opencv-python-headless', 'nvidia-dali-cuda120', 'nvidia-dali-cuda130'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        return {"error": str(err)}


def machine_description(
    lpray_python: str, peer_python: str | None, lpray_env: dict[str, str], peer_env: dict[str, str]
) -> dict[str, Any]:
    """What ran this: CPU model and cores, memory, GPUs, and each side's package versions."""
    mem_gb = _proc_kb("/proc/meminfo", "MemTotal:") / 1024**2
    gpus = ""
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    desc: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(mem_gb, 1),
        "gpus": gpus or None,
        "load_average_at_start": os.getloadavg(),
        "lpray_env": _python_versions(lpray_python, lpray_env),
    }
    if peer_python:
        desc["peer_env"] = _python_versions(peer_python, peer_env)
    return desc


# ------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--steps",
        type=int,
        required=True,
        help="optimizer steps per training run (a multiple of the steps per epoch, 5 "
        "here: 72 frames / batch 16, last batch short; rounded up otherwise)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--peer-venv",
        type=Path,
        default=Path("/work/peer-venv"),
        help="the peer's venv (bench/peers/install_peer.sh makes it)",
    )
    p.add_argument(
        "--peer-python",
        default=None,
        help="the peer's interpreter (default PEER_VENV/bin/python); e.g. a python3 "
        "with --peer-pythonpath holding wheels carried to a GPU machine",
    )
    p.add_argument(
        "--peer-pythonpath",
        default=None,
        help="prepended to PYTHONPATH for the peer's commands only (e.g. /root/peer-site from "
        "`pip install --target`), so the peer's lightning 2.5 never shadows lpray's packages",
    )
    p.add_argument(
        "--lpray-cmd",
        default=None,
        help="how to call lpray's CLI (default: THIS_PYTHON -m lpray.cli)",
    )
    p.add_argument("--gpu", action="store_true", help="train and predict on the CUDA GPU")
    p.add_argument("--skip-peer", action="store_true")
    p.add_argument("--skip-lpray", action="store_true")
    p.add_argument("--data-root", type=Path, default=DATA_ROOT)
    p.add_argument("--split-file", type=Path, default=SPLIT_FILE)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, nargs=2, default=[128, 128])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs (both)")
    p.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="labeled-frame loader workers for BOTH sides (default: each package's own "
        "default: lpray 0, LP one per CPU core)",
    )
    p.add_argument(
        "--peer-imgaug",
        default="dlc",
        help="LP augmentation preset ('dlc' is LP's example's)",
    )
    p.add_argument(
        "--lpray-augmentation",
        default="strong",
        choices=["none", "mild", "strong"],
        help="lpray's training.augmentation preset ('strong' is modelled on LP's 'dlc')",
    )
    p.add_argument(
        "--reuse-peer",
        type=Path,
        default=None,
        help="take the peer's side from an earlier result JSON of the same settings instead of "
        "running it again (the peer's code, config and seeds are unchanged; stated in the notes)",
    )
    p.add_argument(
        "--peer-reader",
        default=None,
        choices=["opencv", "dali", "pynvvc"],
        help="force LP's video reader (default: LP picks pynvvc > dali > opencv)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/lpray-peer-bench"),
        help="model directories and logs (large; outside the repository)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default bench/results/peers_{cpu,gpu}.json)",
    )
    return p.parse_args(argv)


def resolve_settings(args: argparse.Namespace, split: dict[str, list[str]]) -> Settings:
    """Turn the step budget into epochs (same count of optimizer steps in both packages)."""
    n_train = len(split["train"])
    spe = steps_per_epoch(n_train, args.batch_size)
    epochs = max(1, math.ceil(args.steps / spe))
    notes = [RANDOM_INIT_NOTE]
    if epochs * spe != args.steps:
        notes.append(
            f"--steps {args.steps} is not a multiple of {spe} steps/epoch: "
            f"ran {epochs * spe} steps ({epochs} epochs)"
        )
    notes += [
        f"{n_train} train frames / batch {args.batch_size} = {spe} optimizer steps per epoch in "
        "both packages (no drop_last; LP: limit_train_batches = ceil(n/batch)).",
        "Peer split: LP 2.4.3 takes no split file; train_prob 0.8 / val_prob 0.1 / "
        "rng_seed_data_pt 42 reproduces the reference split (checked per run: "
        "split_matches_reference). The seed varies initialisation (rng_seed_model_pt) only.",
        "Test pixel error: computed here for both from each package's labeled-frame "
        "predictions CSV vs CollectedData.csv (frame pixels, mean over labeled test "
        "frame/keypoint pairs); checkpoint = each package's best on validation (lpray: val "
        "pixel error; LP: val heatmap loss).",
        "Throughput 'batches' = labeled frames / time inside training batches (lpray's meter; "
        "the same callback is injected into LP); 'whole fit' = frames / Trainer.fit wall time.",
        "Peak memory = sum over the command's process tree (loader workers included), "
        "polled from /proc every 0.5 s (1 s on GPU).",
    ]
    return Settings(
        steps=epochs * spe,
        epochs=epochs,
        seeds=list(args.seeds),
        gpu=args.gpu,
        batch_size=args.batch_size,
        image_size=list(args.image_size),
        backbone=args.backbone,
        n_train=n_train,
        steps_per_epoch=spe,
        val_every=args.val_every,
        num_workers=args.num_workers,
        peer_imgaug=args.peer_imgaug,
        lpray_augmentation=args.lpray_augmentation,
        peer_reader=args.peer_reader,
        peer_pythonpath=args.peer_pythonpath,
        # Absolute: each package runs with its own working directory.
        data_root=str(args.data_root.resolve()),
        split_file=str(args.split_file.resolve()),
        video=str(args.video.resolve()),
        work_dir=str(args.work_dir.resolve()),
        notes=notes,
    )


def reused_peer_side(path: Path, settings: Settings) -> dict[str, Any]:
    """The peer's runs from an earlier result JSON, refused unless its shared settings match."""
    earlier = json.loads(path.read_text())
    shared = (
        "steps",
        "gpu",
        "batch_size",
        "image_size",
        "backbone",
        "peer_imgaug",
        "split_file",
        "val_every",
        "num_workers",
    )
    differing = [k for k in shared if earlier["settings"].get(k) != getattr(settings, k)]
    runs = [r for r in earlier["peer"]["runs"] if r["seed"] in settings.seeds]
    if differing or len(runs) != len(settings.seeds):
        raise SystemExit(
            f"{path}: its settings differ from this run's in {differing or 'seeds'}; run the "
            "peer again (drop --reuse-peer) or match those options"
        )
    peer = {k: v for k, v in earlier["peer"].items() if k != "summary"} | {"runs": runs}
    settings.notes.append(
        f"The peer's side is REUSED from {path.name} (created {earlier['created']}, same machine "
        "kind, same peer version, config and seeds); lpray ran now. Speed ratios therefore "
        "compare two runs of the same idle machine, not one interleaved run."
    )
    return peer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    split = json.loads(args.split_file.read_text())
    settings = resolve_settings(args, split)
    peer_python = args.peer_python or str(args.peer_venv / "bin" / "python")
    lpray_cmd = args.lpray_cmd.split() if args.lpray_cmd else [sys.executable, "-m", "lpray.cli"]
    runs_peer = not args.skip_peer and args.reuse_peer is None
    if runs_peer and not Path(peer_python).exists() and not shutil.which(peer_python):
        raise SystemExit(
            f"peer interpreter {peer_python} not found: run "
            "bash bench/peers/install_peer.sh first (or pass --skip-peer)"
        )
    Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    machine = machine_description(
        sys.executable,
        peer_python if runs_peer else None,
        child_env(settings, extra_pythonpath=str(REPO)),
        child_env(settings, extra_pythonpath=settings.peer_pythonpath),
    )
    print(
        f"[bench] {settings.steps} steps = {settings.epochs} epochs x {settings.steps_per_epoch} "
        f"steps; seeds {settings.seeds}; {'GPU' if settings.gpu else 'CPU'}; "
        f"work dir {settings.work_dir}",
        flush=True,
    )
    lp = None if args.skip_lpray else run_lpray(settings, lpray_cmd, split)
    peer = run_peer(settings, peer_python, split) if runs_peer else None
    if args.reuse_peer is not None:
        peer = reused_peer_side(args.reuse_peer, settings)
    lp_sum = summarize(lp) if lp else None
    peer_sum = summarize(peer) if peer else None
    rows = build_table(lp_sum, peer_sum, settings.gpu)
    print_table(rows, settings)
    checks = consistency_checks(settings, lp, peer)
    print("checks:", ", ".join(f"{k}={v}" for k, v in checks.items()))
    total = time.perf_counter() - started
    machine["load_average_at_end"] = os.getloadavg()
    print(f"\nwhole benchmark: {total:.0f} s")
    out = args.out or REPO / "bench" / "results" / f"peers_{'gpu' if settings.gpu else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "lpray vs Lightning Pose 2.4.3, mirror-mouse-example, supervised",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "whole_benchmark_seconds": total,
        "machine": machine,
        "settings": asdict(settings),
        "table": rows,
        "checks": checks,
        "lpray": {"summary": lp_sum, **(lp or {})},
        "peer": {"summary": peer_sum, **(peer or {})},
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

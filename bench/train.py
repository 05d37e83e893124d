"""Training throughput: 1 vs 2 Ray Train workers (CPU), Ray Train vs the plain trainer (GPU).

CPU (default): the same semi-supervised run (temporal + pose-PCA losses) on 1 Ray Train worker
with 2 CPUs and on 2 workers (gloo) with 1 CPU each, on a small synthetic project. ``--gpu`` (one
CUDA GPU): a 1-worker, 1-GPU Ray Train run vs :func:`lpray.train.fit.train`, the plain
single-process trainer, on the same data and config (ResNet-50, 256x256, bf16-mixed, batch 32,
temporal + pose-PCA losses); the Ray overhead is ``1 - ray / plain`` frames/s (goal: < 5%).

Both sides are timed by the same meter, :class:`lpray.train.distributed.EpochThroughput`: labeled
and unlabeled frames of the whole job per second of each epoch's training loop, data loading and
video decoding included, validation and checkpointing excluded. (For the plain trainer the bench
swaps fit's ``ThroughputMeter`` for it, its subclass; nothing else about ``train`` changes.) A
figure is the median over the epochs after the first (warm-up) and over ``--repeats`` runs; each
run also states its wall time, Ray start-up and checkpoint export included.

Results: bench/results/train_cpu.json or train_gpu.json (with the machine), and a table.

Usage: python bench/train.py [--gpu] [--repeats 3] [--epochs 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402

from lpray.config import config_from_dict  # noqa: E402

SEMI_LOSSES = {
    "temporal": {"weight": 1e-3},
    "pca_singleview": {"weight": 1e-3},
    "anneal_rate": 1.0,
}
CPU_CONFIG: dict[str, Any] = {
    "data": {
        "root": "synthetic",
        "synthetic": {
            "seed": 0,
            "n_train_videos": 2,
            "n_test_videos": 1,
            "frames_per_video": 120,
            "n_labeled": 60,
            "frame_size": [96, 96],
        },
        "image_size": [96, 96],
        "video_backend": "pyav",
    },
    "model": {"backbone": "resnet18"},
    "losses": SEMI_LOSSES,
    "training": {
        "batch_size": 8,
        "unlabeled_sequences": 1,
        "sequence_length": 8,
        "accelerator": "cpu",
        "progress_bar": False,
    },
}
GPU_CONFIG: dict[str, Any] = {
    "data": {
        "root": "synthetic",
        "synthetic": {
            "seed": 0,
            "n_train_videos": 4,
            "n_test_videos": 1,
            "frames_per_video": 300,
            "n_labeled": 680,
            "frame_size": [256, 256],
        },
        "image_size": [256, 256],
    },
    "model": {"backbone": "resnet50"},
    "losses": SEMI_LOSSES,
    "training": {
        "batch_size": 32,
        "unlabeled_sequences": 1,
        "sequence_length": 16,
        "precision": "bf16-mixed",
        "channels_last": True,
        "accelerator": "gpu",
        "num_workers": 4,
        "progress_bar": False,
    },
}


def run_config(base: dict[str, Any], work: Path, name: str, epochs: int) -> dict[str, Any]:
    """``base`` for one run: its own model directory (a shared one would resume, not retrain)."""
    values = copy.deepcopy(base)
    values["data"]["synthetic_dir"] = str(work / "synthetic")
    values["training"].update(max_epochs=epochs, output_dir=str(work / "models" / name))
    return values


def epoch_rates(model_dir: Path) -> tuple[list[float], list[float]]:
    """Per-epoch labeled and unlabeled frames/s from a model directory's metrics.csv."""
    metrics = pd.read_csv(model_dir / "metrics.csv").sort_values("epoch")
    return (
        metrics["labeled_frames_per_second"].tolist(),
        metrics["unlabeled_frames_per_second"].tolist(),
    )


def ray_run(values: dict[str, Any], workers: int, cpus: float, gpus: float) -> Path:
    from lpray.train.distributed import train_distributed

    storage = Path(values["training"]["output_dir"]).parent / "ray"
    return train_distributed(
        config_from_dict(values),
        num_workers=workers,
        cpus_per_worker=cpus,
        gpus_per_worker=gpus,
        storage_path=str(storage),
    )


def plain_run(values: dict[str, Any]) -> Path:
    """``lpray.train.fit.train`` itself, timed by the Ray workers' epoch meter."""
    from lpray.train import fit
    from lpray.train.distributed import EpochThroughput

    with mock.patch.object(fit, "ThroughputMeter", EpochThroughput):
        return fit.train(config_from_dict(values))


def measure(label: str, repeats: int, run: Any) -> dict[str, Any]:
    """Median frames/s of ``run()`` over its epochs after the first and over ``repeats`` runs."""
    labeled, unlabeled, walls = [], [], []
    for repeat in range(repeats):
        started = time.perf_counter()
        model_dir = run(repeat)
        walls.append(time.perf_counter() - started)
        lab, unl = epoch_rates(model_dir)
        labeled.extend(lab[1:] or lab)
        unlabeled.extend(unl[1:] or unl)
        print(f"{label} run {repeat}: labeled/s {lab}, unlabeled/s {unl}, {walls[-1]:.1f} s")
    return {
        "run": label,
        "labeled_frames_per_s": statistics.median(labeled),
        "unlabeled_frames_per_s": statistics.median(unlabeled),
        "wall_s": statistics.median(walls),
        "labeled_per_epoch": labeled,
        "unlabeled_per_epoch": unlabeled,
        "wall_per_run": walls,
    }


def cpu_bench(work: Path, repeats: int, epochs: int) -> dict[str, Any]:
    rows = []
    for workers in (1, 2):
        label = f"ray {workers} worker(s) x {2 // workers} CPU"
        rows.append(
            measure(
                label,
                repeats,
                lambda r, w=workers: ray_run(
                    run_config(CPU_CONFIG, work, f"cpu-w{w}-r{r}", epochs), w, 2 / w, 0.0
                ),
            )
        )
    base = rows[0]["labeled_frames_per_s"]
    for row in rows:
        row["speedup_vs_1_worker"] = row["labeled_frames_per_s"] / base
    return {"config": CPU_CONFIG, "epochs": epochs, "repeats": repeats, "rows": rows}


def gpu_bench(work: Path, repeats: int, epochs: int) -> dict[str, Any]:
    plain = measure(
        "plain fit.train",
        repeats,
        lambda r: plain_run(run_config(GPU_CONFIG, work, f"gpu-plain-r{r}", epochs)),
    )
    ray_row = measure(
        "ray 1 worker x 1 GPU",
        repeats,
        # the worker gets the node's CPUs as the plain trainer gets the machine's (one is left
        # for Ray's own processes): Ray sets the worker's torch threads to its CPU count
        lambda r: ray_run(
            run_config(GPU_CONFIG, work, f"gpu-ray-r{r}", epochs),
            1,
            float(max(1, (os.cpu_count() or 2) - 1)),
            1.0,
        ),
    )
    for key in ("labeled_frames_per_s", "unlabeled_frames_per_s"):
        ray_row[f"overhead_{key}_pct"] = 100 * (1 - ray_row[key] / plain[key])
    return {"config": GPU_CONFIG, "epochs": epochs, "repeats": repeats, "rows": [plain, ray_row]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="Ray Train vs plain trainer on 1 GPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=None if args.gpu else 2, include_dashboard=False, log_to_driver=False)
    work = Path(args.work or tempfile.mkdtemp(prefix="lpray-bench-train-"))
    bench = gpu_bench if args.gpu else cpu_bench
    result = bench(work, args.repeats, args.epochs)
    columns = ["run", "labeled_frames_per_s", "unlabeled_frames_per_s", "wall_s"]
    columns += [c for c in result["rows"][-1] if c.startswith(("speedup", "overhead"))]
    print_table(result["rows"], columns)
    note = f"load average {os.getloadavg()[0]:.1f} at the end; {machine()['cores']} cores"
    write_json("train_gpu" if args.gpu else "train_cpu", {**result, "note": note})


if __name__ == "__main__":
    main()

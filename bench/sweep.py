"""Benchmark the sweep machinery: search efficiency on CPU, trial packing on one GPU.

CPU (default; results in ``bench/results/sweep_cpu.json``): the same trial budget (16 trials of up
to 8 epochs) on the synthetic dataset at 64x64, spent three ways over the same two-dimensional
space (``training.lr`` and ``losses.temporal.weight``, both log-uniform):

- ``grid``: a 4 x 4 grid, every trial trained to the end (FIFO): the reference answer;
- ``random``: 16 random points, FIFO;
- ``tpe_asha``: 16 trials of Optuna TPE, ASHA stopping the worst early.

For each: the best validation pixel error found, the compute spent (trial-epochs = epochs
actually trained, summed over trials), the wall time and the sweep folder's disk footprint
(``storage_bytes``: Tune's files plus every trial's Ray Train checkpoints, which
``training.keep_checkpoints`` bounds). Goal: TPE+ASHA within 5% of the grid's
best error for at most half of the grid's compute. One seed per method: differences of a few
percent are within the run-to-run noise of an 8-epoch model scored on ~20 validation frames.

GPU (``--gpu``; ``bench/results/sweep_gpu.json``): trials per hour with 1, 2 and 4 trials packed
on one GPU (``gpus_per_worker`` 1, 0.5, 0.25, as many concurrent trials), each packing running
the same number of equal trials (FIFO, fixed epochs).

A rerun into the same ``--work`` folder reuses each method whose sweep finished there (its table is
read from storage; its wall time is then unknown), so an interrupted bench resumes.

``--reduced`` runs a few-minute version (4 trials x 2 epochs, tiny data) to check the bench works.
The machine, the library versions and the load average (this bench runs on shared hosts) are
stated in the JSON.

    python bench/sweep.py                 # CPU, ~15-20 min on 2 cores
    python bench/sweep.py --reduced       # CPU, a few minutes
    python bench/sweep.py --gpu           # on a GPU machine
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json  # noqa: E402

from lpray.config import Config, config_from_dict  # noqa: E402
from lpray.io.storage import tree_bytes  # noqa: E402
from lpray.tune.results import sweep_tables  # noqa: E402
from lpray.tune.space import SweepSpec, sweep_from_dict  # noqa: E402
from lpray.tune.sweep import run_sweep  # noqa: E402

SPACE = {
    "training.lr": {"loguniform": [3.0e-4, 1.0e-2]},
    "losses.temporal.weight": {"loguniform": [1.0e-5, 1.0e-1]},
}
METRIC = "val_pixel_error"


def base_config(root: Path, image: int, epochs: int, reduced: bool, gpu: bool) -> Config:
    """The synthetic project and training settings every trial starts from."""
    frames = 64 if reduced else 150
    return config_from_dict(
        {
            "data": {
                "root": "synthetic",
                "synthetic_dir": str(root / f"synthetic-{image}"),
                "synthetic": {
                    "seed": 0,
                    "n_train_videos": 2,
                    "n_test_videos": 1,
                    "frames_per_video": frames,
                    "n_labeled": 40 if reduced else 60,  # 48 train / 12 validation frames
                    "frame_size": [image, image],
                },
                "image_size": [image, image],
                "train_prob": 0.8,
                "val_prob": 0.2,
            },
            "model": {"backbone": "resnet18"},
            "losses": {
                "temporal": {"weight": 1e-3, "epsilon": 2.0},
                "pca_singleview": {"weight": 1e-3},
                "anneal_rate": 0.25,
            },
            "training": {
                "max_epochs": epochs,
                "batch_size": 16,
                "sequence_length": 8,
                "accelerator": "gpu" if gpu else "cpu",
                "progress_bar": False,
                "output_dir": str(root / "model"),
            },
        }
    )


def sweep_spec(name: str, storage: Path, settings: dict[str, Any]) -> SweepSpec:
    return sweep_from_dict(
        {"sweep": {"name": name, "storage_path": str(storage), **settings}, "parameters": SPACE}
    )


def finished_sweep(spec: SweepSpec, expected: int) -> Path | None:
    """The experiment folder of this method from an earlier bench run into the same ``--work``,
    when it holds ``expected`` trials that all finished; else None (the method runs)."""
    folder = Path(spec.settings.storage_path) / spec.settings.name
    if not folder.is_dir():
        return None
    try:
        trials, _ = sweep_tables(str(folder))
    except (FileNotFoundError, ValueError):
        return None
    done = trials["status"].isin(["completed", "stopped"]).all()
    return folder if len(trials) == expected and done else None


def run_one(cfg: Config, spec: SweepSpec, expected: int | None = None) -> dict[str, Any]:
    """Run one sweep (or reuse its finished results); its best error, compute and wall time."""
    reused = finished_sweep(spec, expected) if expected else None
    started = time.perf_counter()
    experiment_dir = str(reused) if reused else run_sweep(cfg, spec)
    seconds = float("nan") if reused else time.perf_counter() - started
    trials, _ = sweep_tables(experiment_dir)
    best = trials.loc[trials[f"best_{METRIC}"].idxmin()]
    return {
        "trials": int(len(trials)),
        "status": trials["status"].value_counts().to_dict(),
        "best_val_pixel_error": float(best[f"best_{METRIC}"]),
        "best_params": best["params"],
        "trial_epochs": int(trials["trial_epochs"].sum()),
        "wall_seconds": seconds,
        "trials_per_hour": len(trials) / (seconds / 3600),
        "storage_bytes": tree_bytes(experiment_dir),
        "experiment_dir": experiment_dir,
        "reused_from_storage": reused is not None,  # wall time then unknown (NaN)
    }


def cpu_bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    trials, epochs = (4, 2) if args.reduced else (args.trials, args.epochs)
    points = int(round(math.sqrt(trials)))
    if points * points != trials:
        raise SystemExit(f"--trials must be a square (the grid is n x n), got {trials}")
    cfg = base_config(root, args.image, epochs, args.reduced, gpu=False)
    concurrency = max(1, (os.cpu_count() or 1) // args.cpus_per_trial)
    common = {
        "max_concurrent_trials": concurrency,
        "seed": args.seed,
        "resources": {"workers": 1, "cpus_per_worker": args.cpus_per_trial, "trial_cpus": 0.01},
    }
    plans = {
        "grid": {"search": "grid", "grid_points": points, "num_samples": 1, "scheduler": "fifo"},
        "random": {"search": "random", "num_samples": trials, "scheduler": "fifo"},
        "tpe_asha": {
            "search": "optuna",
            "num_samples": trials,
            "scheduler": "asha",
            "n_startup_trials": max(2, trials // 3),
            "asha": {"grace_period": 1, "reduction_factor": 3},
        },
    }
    results = {}
    for name in args.methods:
        print(f"--- {name}", flush=True)
        spec = sweep_spec(name, root / "sweeps", {**common, **plans[name]})
        results[name] = {**run_one(cfg, spec, expected=trials), "settings": plans[name]}
    rows = [{"method": k, **v, "storage_mb": v["storage_bytes"] / 1e6} for k, v in results.items()]
    print_table(
        rows,
        ["method", "trials", "best_val_pixel_error", "trial_epochs", "wall_seconds", "storage_mb"],
    )
    payload: dict[str, Any] = {
        "bench": "sweep_cpu",
        "reduced": args.reduced,
        "budget": {"trials": trials, "max_epochs": epochs, "image": args.image},
        "space": SPACE,
        "concurrency": concurrency,
        "methods": results,
    }
    if "grid" in results and "tpe_asha" in results:
        grid, tpe = results["grid"], results["tpe_asha"]
        error_ratio = tpe["best_val_pixel_error"] / grid["best_val_pixel_error"]
        compute_ratio = tpe["trial_epochs"] / grid["trial_epochs"]
        payload["goal"] = {
            "tpe_asha_error_vs_grid": error_ratio,
            "tpe_asha_compute_vs_grid": compute_ratio,
            "met": error_ratio <= 1.05 and compute_ratio <= 0.5,
        }
        print(
            f"TPE+ASHA: {error_ratio:.3f}x the grid's best error for {compute_ratio:.2f}x its "
            f"compute (goal: <= 1.05x for <= 0.5x): {'met' if payload['goal']['met'] else 'NOT met'}"
        )
    return payload


def gpu_bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU")
    packings = (1, 2) if args.reduced else (1, 2, 4)
    trials = 2 if args.reduced else args.gpu_trials
    epochs = 2 if args.reduced else args.epochs
    cfg = base_config(root, args.gpu_image, epochs, args.reduced, gpu=True)
    cores = os.cpu_count() or 1
    results = {}
    for packed in packings:
        print(f"--- {packed} trial(s) per GPU", flush=True)
        settings = {
            "search": "random",
            "num_samples": trials,
            "scheduler": "fifo",
            "seed": args.seed,
            "max_concurrent_trials": packed,
            "resources": {
                "workers": 1,
                "gpus_per_worker": 1 / packed,
                "cpus_per_worker": max(1, cores // packed - 1),
                "trial_cpus": 0.01,
            },
        }
        spec = sweep_spec(f"packed{packed}", root / "sweeps", settings)
        results[str(packed)] = {**run_one(cfg, spec), "gpus_per_trial": 1 / packed}
    rows = [{"packed": k, **v, "storage_mb": v["storage_bytes"] / 1e6} for k, v in results.items()]
    columns = ["packed", "gpus_per_trial", "trials", "wall_seconds", "trials_per_hour"]
    print_table(rows, [*columns, "storage_mb"])
    return {
        "bench": "sweep_gpu",
        "reduced": args.reduced,
        "budget": {"trials": trials, "max_epochs": epochs, "image": args.gpu_image},
        "packings": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="trial packing on one GPU")
    parser.add_argument("--reduced", action="store_true", help="a few-minute check of the bench")
    parser.add_argument("--trials", type=int, default=16, help="CPU: trial budget (a square)")
    parser.add_argument("--epochs", type=int, default=8, help="max epochs per trial")
    parser.add_argument("--image", type=int, default=64, help="CPU: image size (multiple of 32)")
    parser.add_argument("--cpus-per-trial", type=int, default=1)
    parser.add_argument("--gpu-trials", type=int, default=8, help="GPU: trials per packing")
    parser.add_argument("--gpu-image", type=int, default=128, help="GPU: image size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", nargs="+", default=["grid", "random", "tpe_asha"], help="CPU methods to run"
    )
    parser.add_argument(
        "--work", default=None, help="working folder (default: outputs/bench-sweep/<time>)"
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(args.work or f"outputs/bench-sweep/{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    load_before = os.getloadavg()
    payload = gpu_bench(args, root) if args.gpu else cpu_bench(args, root)
    import optuna
    import ray

    payload["versions"] = {"ray": ray.__version__, "optuna": optuna.__version__}
    payload["load_average"] = {"before": load_before, "after": os.getloadavg()}
    name = "sweep_gpu" if args.gpu else "sweep_cpu"
    write_json(f"{name}_reduced" if args.reduced else name, payload)


if __name__ == "__main__":
    main()

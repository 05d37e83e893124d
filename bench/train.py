"""Training throughput: 1 vs 2 Ray Train workers (CPU), Ray Train vs the plain trainer (GPU).

CPU (default): the same semi-supervised run (temporal + pose-PCA losses) on 1 Ray Train worker
with 2 CPUs and on 2 workers (gloo) with 1 CPU each, on a small synthetic project. ``--gpu`` (one
CUDA GPU): a 1-worker, 1-GPU Ray Train run vs :func:`lpray.train.fit.train`, the plain
single-process trainer, on the same data and config (ResNet-50, 256x256, bf16-mixed, batch 32,
temporal + pose-PCA losses); the Ray overhead is ``1 - ray / plain`` frames/s (goal: < 5%).

Both sides are timed by the same meter, :class:`lpray.train.callbacks.EpochThroughput`: labeled
and unlabeled frames of the whole job per second of each epoch's training loop, data loading and
video decoding included, validation and checkpointing excluded. (For the plain trainer the bench
swaps the trainer builder's ``ThroughputMeter`` for it, its subclass; nothing else about ``train``
changes.) A figure is the median over the epochs after the first (warm-up) and over ``--repeats``
runs; each run also states its wall time, Ray start-up and checkpoint export included.

Results: bench/results/train_cpu.json or train_gpu.json (with the machine), and a table.

Usage: python bench/train.py [--gpu] [--repeats 3] [--epochs 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, print_table, write_json  # noqa: E402

from lpray.config import config_from_dict  # noqa: E402
from lpray.io.layout import ModelDir  # noqa: E402

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
        # 50 steps per epoch: per-epoch rates steady enough to resolve a 5% difference
        "min_steps_per_epoch": 50,
        "progress_bar": False,
    },
}


def run_config(base: dict[str, Any], work: Path, name: str, epochs: int) -> dict[str, Any]:
    """``base`` for one run: its own, fresh model directory (an existing one would resume
    instead of retraining, e.g. when ``--work`` is reused across calls)."""
    values = copy.deepcopy(base)
    values["data"]["synthetic_dir"] = str(work / "synthetic")
    model_dir = work / "models" / name
    shutil.rmtree(model_dir, ignore_errors=True)
    values["training"].update(max_epochs=epochs, output_dir=str(model_dir))
    return values


def epoch_rates(model_dir: Path) -> tuple[list[float], list[float]]:
    """Per-epoch labeled and unlabeled frames/s from a model directory's metrics.csv."""
    metrics = pd.read_csv(ModelDir(model_dir).metrics).sort_values("epoch")
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
    from lpray.train import fit, trainer
    from lpray.train.callbacks import EpochThroughput

    with mock.patch.object(trainer, "ThroughputMeter", EpochThroughput):
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
    return summary_row(label, labeled, unlabeled, walls)


def summary_row(
    label: str, labeled: list[float], unlabeled: list[float], walls: list[float]
) -> dict[str, Any]:
    """Medians of per-epoch rates and of wall times, with the values behind them."""
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


# DESIGN.md section 8: ResNet-50 + heatmap head, 256x256, bf16 + channels_last + torch.compile,
# batch 64, synthetic tensors, no data: the training-step ceiling of one H100 (img/s).
DESIGN_STEP_CEILING = 2416.0


def with_augment_on(values: dict[str, Any], where: str) -> dict[str, Any]:
    return with_training(values, labeled_augment_on=where)


@dataclass
class BareStep:
    """lpray's training step on random tensors already on the device (no data loading, Lightning
    or Ray): the module, its inputs and an optimizer; ``run(marker)`` does one step, calling
    ``marker(name)`` at its phases (bench/profile_train.py marks them for the profiler)."""

    module: Any
    labeled: dict[str, Any]
    unlabeled: dict[str, Any]
    optimizer: Any
    device: Any
    frames_per_step: int

    def run(self, marker: Any = lambda name: None) -> None:
        import torch

        module, n = self.module, self.labeled["image"].shape[0]
        marker("step")
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        ):
            frames = torch.cat(
                [self.labeled["image"].flatten(0, 1), self.unlabeled["frames"].flatten(0, 1)]
            )
            features = module.model.backbone(frames.contiguous(memory_format=torch.channels_last))
            outputs = module.model.labeled_heads(features[:n], n)
            loss = module.supervised_loss(self.labeled, outputs)
            for value in module.unsupervised_losses(self.unlabeled, features[n:]).values():
                loss = loss + 1e-3 * value
        marker("backward")
        loss.backward()
        marker("optimizer")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def bare_step(values: dict[str, Any]) -> BareStep:
    """The :class:`BareStep` of a config (its model, batch size, sequence length, image size)."""
    import torch

    from lpray.train.data import prepare_data
    from lpray.train.fit import build_module

    cfg = config_from_dict(values)
    bundle = prepare_data(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = build_module(cfg, bundle).to(device).to(memory_format=torch.channels_last)
    module.loss_states = {name: state.to(device) for name, state in module.loss_states.items()}
    t = cfg.training
    h, w = cfg.data.image_size
    k = len(bundle.keypoint_names)
    labeled = {
        "image": torch.randn(t.batch_size, 1, 3, h, w, device=device),
        "keypoints": torch.rand(t.batch_size, k, 2, device=device)
        * torch.tensor([w, h], device=device),
    }
    unlabeled = {
        "frames": torch.randn(t.unlabeled_sequences, t.sequence_length, 3, h, w, device=device),
        "to_frame": torch.eye(2, 3, device=device).expand(t.unlabeled_sequences, 2, 3),
    }
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
    frames = t.batch_size + t.unlabeled_sequences * t.sequence_length
    return BareStep(module, labeled, unlabeled, optimizer, device, frames)


def model_step_rate(values: dict[str, Any], steps: int = 30) -> float:
    """Frames/s of lpray's own training step (backbone pass over labeled + unlabeled frames,
    heads, supervised + unsupervised losses, backward, Adam) on random tensors already on the
    GPU: this run's ceiling without data loading, Lightning or Ray."""
    import torch

    bare = bare_step(values)
    step, device = bare.run, bare.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(5):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * bare.frames_per_step / (time.perf_counter() - started)


def with_training(values: dict[str, Any], **training: Any) -> dict[str, Any]:
    values = copy.deepcopy(values)
    values["training"].update(training)
    return values


def with_compile(values: dict[str, Any]) -> dict[str, Any]:
    return with_training(values, compile=True)


# The runs ``--gpu`` can make (``--runs`` picks some; one device call cannot hold them all).
GPU_RUNS = (
    "plain-loader",
    "plain-device",
    "ray-device",
    "plain-device-compiled",
    "plain-1-reader",
    "plain-device-graphs",
    "plain-device-graphs-4workers",
    "plain-device-graphs-64",
)
GPU_RUN_LABELS = {
    "plain-loader": "plain, augment in loader",
    "plain-device": "plain, augment on GPU",
    "plain-1-reader": "plain, augment on GPU, 1 video reader",
    "ray-device": "ray 1 worker x 1 GPU, augment on GPU",
    "plain-device-compiled": "plain, augment on GPU, compiled backbone",
    "plain-device-graphs": "plain, augment on GPU, CUDA-graphed backbone",
    "plain-device-graphs-4workers": "plain, augment on GPU, CUDA-graphed, 4 loader workers",
    # 32 labeled + 32 video frames: the 64 frames a step of DESIGN's ceiling measurement
    "plain-device-graphs-64": "plain, augment on GPU, CUDA-graphed, 32+32 frames a step",
}


def gpu_bench(
    work: Path, repeats: int, epochs: int, names: tuple[str, ...] = GPU_RUNS[:3]
) -> dict[str, Any]:
    """The plain trainer with labeled augmentation in the loader or on the GPU (optionally with a
    compiled backbone), and the same run as a 1-worker Ray Train job; repeats interleaved so
    that drift of the machine hits every run alike."""
    device_cfg = with_augment_on(GPU_CONFIG, "device")
    # the Ray worker gets the node's CPUs as the plain trainer gets the machine's (one is left
    # for Ray's own processes): Ray sets the worker's torch threads to its CPU count
    ray_cpus = float(max(1, (os.cpu_count() or 2) - 1))
    make = {
        "plain-loader": lambda r: plain_run(
            run_config(
                with_augment_on(GPU_CONFIG, "loader"), work, f"gpu-plain-loader-r{r}", epochs
            )
        ),
        "plain-device": lambda r: plain_run(
            run_config(device_cfg, work, f"gpu-plain-r{r}", epochs)
        ),
        "ray-device": lambda r: ray_run(
            run_config(device_cfg, work, f"gpu-ray-r{r}", epochs), 1, ray_cpus, 1.0
        ),
        "plain-1-reader": lambda r: plain_run(
            run_config(with_training(device_cfg, unlabeled_readers=1), work, f"gpu-1r-r{r}", epochs)
        ),
        "plain-device-compiled": lambda r: plain_run(
            run_config(with_compile(device_cfg), work, f"gpu-plain-compiled-r{r}", epochs)
        ),
        "plain-device-graphs": lambda r: plain_run(
            run_config(
                with_training(device_cfg, cuda_graphs=True), work, f"gpu-graphs-r{r}", epochs
            )
        ),
        "plain-device-graphs-64": lambda r: plain_run(
            run_config(
                with_training(device_cfg, cuda_graphs=True, sequence_length=32),
                work,
                f"gpu-graphs-64-r{r}",
                epochs,
            )
        ),
        "plain-device-graphs-4workers": lambda r: plain_run(
            run_config(
                with_training(device_cfg, cuda_graphs=True, num_workers=4),
                work,
                f"gpu-graphs-4w-r{r}",
                epochs,
            )
        ),
    }
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names:
            label = GPU_RUN_LABELS[name]
            per_run[name].append(measure(label, 1, lambda _r, name=name, r=repeat: make[name](r)))
    rows = {
        name: merge_measurements(GPU_RUN_LABELS[name], found) for name, found in per_run.items()
    }
    if "plain-device" in rows and "ray-device" in rows:
        for key in ("labeled_frames_per_s", "unlabeled_frames_per_s"):
            rows["ray-device"][f"overhead_{key}_pct"] = 100 * (
                1 - rows["ray-device"][key] / rows["plain-device"][key]
            )
    rows = list(rows.values())
    ceiling = model_step_rate(run_config(GPU_CONFIG, work, "gpu-ceiling", epochs))
    for row in rows:
        total = row["labeled_frames_per_s"] + row["unlabeled_frames_per_s"]
        row["frames_per_s"] = total
        row["pct_of_step_ceiling"] = 100 * total / ceiling
        row["pct_of_design_ceiling"] = 100 * total / DESIGN_STEP_CEILING
    rows.append(
        {
            "run": "model step alone (eager, random tensors)",
            "frames_per_s": ceiling,
            "pct_of_design_ceiling": 100 * ceiling / DESIGN_STEP_CEILING,
        }
    )
    if "plain-device-compiled" in names:
        compiled = model_step_rate(
            run_config(with_compile(GPU_CONFIG), work, "gpu-ceiling-c", epochs)
        )
        rows.append(
            {
                "run": "model step alone (compiled backbone, random tensors)",
                "frames_per_s": compiled,
                "pct_of_design_ceiling": 100 * compiled / DESIGN_STEP_CEILING,
            }
        )
    return {"config": GPU_CONFIG, "epochs": epochs, "repeats": repeats, "rows": rows}


def merge_measurements(label: str, found: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from single-repeat measurements: medians over all their epochs."""
    labeled = [v for row in found for v in row["labeled_per_epoch"]]
    unlabeled = [v for row in found for v in row["unlabeled_per_epoch"]]
    walls = [v for row in found for v in row["wall_per_run"]]
    return summary_row(label, labeled, unlabeled, walls)


def profile_plain_run(work: Path, epochs: int) -> Path:
    """One plain GPU run under Lightning's SimpleProfiler: where each step's time goes (waiting
    for the next batch vs the step itself vs per-epoch hooks). Writes results/train_gpu_profile.txt."""
    from pytorch_lightning.profilers import SimpleProfiler

    from lpray.train import fit

    out = RESULTS
    profiler = SimpleProfiler(dirpath=str(out), filename="train_gpu_profile")
    build_trainer = fit.build_trainer
    with mock.patch.object(
        fit, "build_trainer", lambda *a, **k: build_trainer(*a, **k, profiler=profiler)
    ):
        plain_run(run_config(with_augment_on(GPU_CONFIG, "device"), work, "gpu-profile", epochs))
    return out / "fit-train_gpu_profile.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="Ray Train vs plain trainer on 1 GPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--runs", nargs="+", choices=GPU_RUNS, default=list(GPU_RUNS[:3]), help="--gpu runs to make"
    )
    parser.add_argument("--name", default=None, help="result file name (default: train_cpu/gpu)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="--gpu: one plain run under Lightning's SimpleProfiler, nothing else",
    )
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=None if args.gpu else 2, include_dashboard=False, log_to_driver=False)
    work = Path(args.work or tempfile.mkdtemp(prefix="lpray-bench-train-"))
    if args.gpu and args.profile:
        print(f"wrote {profile_plain_run(work, args.epochs)}")
        return
    if args.gpu:
        result = gpu_bench(work, args.repeats, args.epochs, tuple(args.runs))
    else:
        result = cpu_bench(work, args.repeats, args.epochs)
    columns = ["run", "labeled_frames_per_s", "unlabeled_frames_per_s", "wall_s"]
    columns += sorted(
        {
            c
            for row in result["rows"]
            for c in row
            if c.startswith(("speedup", "overhead", "pct", "frames_per"))
        }
    )
    print_table(result["rows"], columns)
    note = f"load average {os.getloadavg()[0]:.1f} at the end; {machine()['cores']} cores"
    write_json(args.name or ("train_gpu" if args.gpu else "train_cpu"), {**result, "note": note})


if __name__ == "__main__":
    main()

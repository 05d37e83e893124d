"""Does semi-supervised training help? Supervised-only vs semi-supervised at the same budget.

Synthetic set (truth on every frame): pixel error on held-out labeled frames AND on every frame of
an unseen video. Mirror-mouse example: held-out labeled-frame pixel error (72/9/9 reference split).

    python bench/accuracy.py                       # both datasets, 2 seeds
    python bench/accuracy.py --only synthetic --epochs 30 --seeds 0
    python bench/accuracy.py --merge RUN1 RUN2 --name combined   # summarise runs made apart

The summary gives, per dataset, label count and mode, the mean and standard deviation over seeds
and how many seeds the semi-supervised run beats the supervised run of the same seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, print_table, write_json  # noqa: E402

from lpray.config import load_config  # noqa: E402
from lpray.data.synthetic import load_synthetic_project, load_truth  # noqa: E402
from lpray.inference.network import load_network  # noqa: E402
from lpray.inference.video import predict_video_arrays  # noqa: E402
from lpray.io.layout import ModelDir  # noqa: E402
from lpray.train.fit import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "synthetic": {
        "config": ROOT / "experiments" / "synthetic.yaml",
        "supervised": ["losses.temporal.weight=0", "losses.pca_singleview.weight=0"],
        "semi-supervised": [],  # the experiment file's unsupervised losses
    },
    "mirror-mouse": {
        "config": ROOT / "experiments" / "mirror_mouse.yaml",
        "supervised": ["losses.temporal.weight=0", "losses.pca_multiview.weight=0"],
        "semi-supervised": [],
    },
}


def video_error(model_dir: Path, project_root: Path) -> dict[str, float]:
    """Pixel error on every frame of each unseen synthetic video (visible keypoints)."""
    project = load_synthetic_project(project_root)
    trained = load_network(model_dir)
    errors, jumps = [], []
    for video in project.test_videos:
        xy, _ = predict_video_arrays(trained, str(video))
        truth, visible = load_truth(project.truth_paths[video.name.rsplit(".", 1)[0]])
        err = np.linalg.norm(xy - truth, axis=-1)
        errors.append(err[visible])
        jumps.append(np.linalg.norm(np.diff(xy, axis=0), axis=-1).ravel())
    all_errors = np.concatenate(errors)
    return {
        "video_pixel_error": float(all_errors.mean()),
        "video_pixel_error_p95": float(np.percentile(all_errors, 95)),
        "video_temporal_norm": float(np.concatenate(jumps).mean()),
    }


def run(dataset: str, mode: str, seed: int, args: argparse.Namespace, out: Path) -> dict:
    setting = SETTINGS[dataset]
    overrides = [
        *setting[mode],
        *(args.semi if mode == "semi-supervised" else []),
        f"training.seed={seed}",
        f"training.output_dir={out / args.name / dataset / mode / f'seed{seed}'}",
        "training.progress_bar=false",
    ]
    if args.epochs:
        overrides.append(f"training.max_epochs={args.epochs}")
    if dataset == "mirror-mouse":
        overrides += [
            f"data.root={SHARED_DATA / 'mirror-mouse-example'}",
            f"data.split_file={SHARED_DATA / 'mirror-mouse-reference-split.json'}",
            "model.backbone=resnet18",
            f"data.image_size=[{args.mm_size},{args.mm_size}]",
        ]
    else:
        overrides.append(f"data.synthetic_dir={out / 'synthetic-project'}")
        if args.train_frames:
            overrides.append(f"data.train_frames={args.train_frames}")
    cfg = load_config(setting["config"], [*overrides, *args.override])  # user overrides win
    started = time.perf_counter()
    model_dir = train(cfg)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    row = {
        "dataset": dataset,
        "mode": mode,
        "seed": seed,
        "minutes": (time.perf_counter() - started) / 60,
        "test_pixel_error": summary["test_pixel_error"],
        "val_pixel_error": summary["val_pixel_error"],
        "train_frames": summary["n_train_frames"],
    }
    import pandas as pd

    last = pd.read_csv(ModelDir(model_dir).metrics).iloc[-1]
    row.update({k: float(v) for k, v in last.items() if str(k).startswith("train/")})
    if dataset == "synthetic":
        row.update(video_error(model_dir, Path(cfg.data.synthetic_dir)))
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=list(SETTINGS), action="append")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--train-frames", type=int, default=None, help="synthetic labeled frames used"
    )
    parser.add_argument("--mm-size", type=int, default=128, help="mirror-mouse image size")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-accuracy")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra config overrides for all runs"
    )
    parser.add_argument(
        "--semi", nargs="*", default=[], help="overrides for the semi-supervised runs only"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["supervised", "semi-supervised"],
        choices=["supervised", "semi-supervised"],
    )
    parser.add_argument("--name", default="accuracy", help="result file bench/results/NAME.json")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="no training: summarise the runs of these result files together",
    )
    args = parser.parse_args()
    if args.merge:
        rows = [
            r
            for name in args.merge
            for r in json.loads((RESULTS / f"{name}.json").read_text())["runs"]
        ]
    else:
        rows = []
        for dataset in args.only or list(SETTINGS):
            if dataset == "mirror-mouse" and not (SHARED_DATA / "mirror-mouse-example").exists():
                print("skipping mirror-mouse: ../shared/data not present")
                continue
            for seed in args.seeds:
                for mode in args.modes:
                    rows.append(run(dataset, mode, seed, args, args.out))
    summary = summarise(rows)
    print_table(
        summary,
        [
            "dataset",
            "labels",
            "mode",
            "seeds",
            "test_pixel_error",
            "test_sd",
            "video_pixel_error",
            "video_sd",
            "video/sup",
            "video_p95",
            "semi_wins",
        ],
    )
    write_json(
        args.name,
        {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows, "summary": summary},
    )


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (dataset, label count, mode), and paired seed-by-seed
    comparisons: ``semi_wins`` counts the seeds whose semi-supervised video error is below the
    supervised run of the same seed (same split, same initialisation)."""
    summary = []
    groups = dict.fromkeys((r["dataset"], r["train_frames"]) for r in rows)
    for dataset, labels in groups:
        runs = {
            mode: {
                r["seed"]: r
                for r in rows
                if (r["dataset"], r["train_frames"], r["mode"]) == (dataset, labels, mode)
            }
            for mode in ("supervised", "semi-supervised")
        }
        base = runs["supervised"]
        for mode, by_seed in runs.items():
            if not by_seed:
                continue
            entry = {"dataset": dataset, "labels": labels, "mode": mode, "seeds": len(by_seed)}
            for metric, key in (
                ("test_pixel_error", "test"),
                ("video_pixel_error", "video"),
                ("video_pixel_error_p95", "video_p95"),
            ):
                values = [r[metric] for r in by_seed.values() if metric in r]
                if values:
                    entry[metric if key != "video_p95" else key] = float(np.mean(values))
                    if key != "video_p95":
                        entry[f"{key}_sd"] = (
                            float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
                        )
            if "video_pixel_error" in entry and base:
                sup = [
                    base[s]["video_pixel_error"]
                    for s in by_seed
                    if s in base and "video_pixel_error" in base[s]
                ]
                if sup:
                    entry["video/sup"] = entry["video_pixel_error"] / float(np.mean(sup))
                if mode == "semi-supervised":
                    paired = [s for s in by_seed if s in base and "video_pixel_error" in base[s]]
                    wins = sum(
                        by_seed[s]["video_pixel_error"] < base[s]["video_pixel_error"]
                        for s in paired
                    )
                    entry["semi_wins"] = f"{wins}/{len(paired)}"
            summary.append(entry)
    return summary


if __name__ == "__main__":
    main()

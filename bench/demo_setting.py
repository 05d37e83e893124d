"""Supervised vs semi-supervised at the main job's training setting, one network at a time.

The main job (``experiments/pipeline_synthetic.yaml``) sweeps the unsupervised weights at one
small CPU setting; this bench trains single networks at exactly that setting (its overrides are
read from the pipeline file, not copied) with chosen weights, label counts and steps, and scores
each on every frame of the unseen synthetic test video against the truth. On a CPU the runs are
deterministic: the same run gives the same error to the last digit (used to check that a
refactor changed no numbers, docs/architecture.md).

    python bench/demo_setting.py --runs sup:0:0:0 semi:0:0.01:0.01
    python bench/demo_setting.py --runs l8sup:0:0:0 --extra data.train_frames=8
    python bench/demo_setting.py --ensemble --runs m0:0:0:0.01:0 m1:1:0:0.01:1 m2:2:0:0.01:2
    python bench/demo_setting.py --smoke     # CPU, seconds: two tiny runs as an ensemble

A run is NAME:SEED:TEMPORAL_WEIGHT:MULTIVIEW_WEIGHT[:SPLIT_SEED] (the split seed picks the run's
labeled frames; default 0, the pipeline's). ``--ensemble`` then treats the runs as an ensemble,
as the pipeline's track stage does: the members' error correlation on the unseen video, their
mean and median, and the EKS the pipeline runs (multi-view on the two-view set), all against the
truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import video_error  # noqa: E402
from common import print_table, work_folder, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "experiments" / "pipeline_synthetic.yaml"
# the pipeline's own folders and epoch count are replaced by the bench's
REPLACED = ("data.synthetic_dir", "training.output_dir", "training.max_epochs")
# --smoke: a supervised and a semi-supervised run (the default and an explicit split seed) as an
# ensemble, on the pipeline's two views but with 20-frame videos and 2 steps
SMOKE = {
    "runs": ["sup:0:0:0", "semi:1:0.01:0.01:1"],
    "ensemble": True,
    "epochs": 1,
    "extra": [
        "data.synthetic.frames_per_video=20",
        "data.synthetic.n_labeled=20",
        "data.train_frames=8",
        "training.min_steps_per_epoch=2",
    ],
    "name": "demo_setting_smoke",
}


def demo_overrides() -> tuple[Path, list[str]]:
    """The pipeline file's base config and its training overrides (without its folders)."""
    spec = yaml.safe_load(PIPELINE.read_text())
    overrides = [o for o in spec["overrides"] if not o.startswith(REPLACED)]
    return PIPELINE.parent / spec["config"], overrides


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", help="NAME:SEED:TEMPORAL:MULTIVIEW[:SPLIT_SEED]")
    parser.add_argument(
        "--ensemble", action="store_true", help="also score the runs as one ensemble + EKS"
    )
    parser.add_argument("--epochs", type=int, default=20, help="the pipeline's 20 = 600 steps")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="work folder (default outputs/bench-demo-setting; --smoke: a temporary one)",
    )
    parser.add_argument("--name", default="demo_setting_cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run, seconds")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    elif not args.runs:
        parser.error("--runs is required (or --smoke)")
    return args


def main() -> None:
    args = parse_args()
    with work_folder(args.work, ROOT / "outputs" / "bench-demo-setting", args.smoke) as args.work:
        train_and_score(args)


def train_and_score(args: argparse.Namespace) -> None:
    """Train and score ``args.runs`` in ``args.work``; the result JSON as ``args.name``."""
    from lpray.config import load_config
    from lpray.train.fit import train

    base, overrides = demo_overrides()
    rows, model_dirs = [], []
    for run in args.runs:
        name, seed, temporal, multiview, *split = run.split(":")
        split_seed = int(split[0]) if split else 0
        cfg = load_config(
            base,
            [
                *overrides,
                f"data.synthetic_dir={args.work / 'project'}",
                f"losses.temporal.weight={temporal}",
                f"losses.pca_multiview.weight={multiview}",
                f"training.seed={seed}",
                f"data.split_seed={split_seed}",
                f"training.max_epochs={args.epochs}",
                f"training.output_dir={args.work / f'{name}-s{seed}'}",
                *args.extra,
            ],
        )
        started = time.perf_counter()
        model_dir = train(cfg)
        row = {
            "name": name,
            "seed": int(seed),
            "temporal": float(temporal),
            "multiview": float(multiview),
            "split_seed": split_seed,
            "extra": " ".join(args.extra),
            "minutes": (time.perf_counter() - started) / 60,
            **video_error(model_dir, Path(cfg.data.synthetic_dir)),
        }
        rows.append(row)
        model_dirs.append(model_dir)
        print(json.dumps(row), flush=True)
    columns = ["name", "seed", "split_seed", "temporal", "multiview", "extra", "video_pixel_error"]
    print_table(rows, columns)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows}
    if args.ensemble:
        result["ensemble"] = ensemble_errors(model_dirs, Path(cfg.data.synthetic_dir))
        print(json.dumps(result["ensemble"], indent=1))
    write_json(args.name, result)


def ensemble_errors(model_dirs: list[Path], project_root: Path) -> dict:
    """The runs as one ensemble on the unseen video: members, mean, median and EKS errors, and
    how alike the members' errors are (the correlation of their x and y errors, member pairs)."""
    import numpy as np

    from lpray.data.synthetic import load_synthetic_project, load_truth
    from lpray.inference.network import load_network
    from lpray.inference.video import predict_video_arrays
    from lpray.io.tables import arrays_to_table, table_to_arrays
    from lpray.smooth.api import smooth_ensemble, smooth_ensemble_multiview
    from lpray.track.corpus import model_view_groups

    project = load_synthetic_project(project_root)
    groups = model_view_groups(model_dirs[0])
    scores: dict[str, list[np.ndarray]] = {}
    correlations = []
    for video in project.test_videos:
        truth, visible = load_truth(project.truth_paths[video.name.rsplit(".", 1)[0]])
        predictions = []
        for model_dir in model_dirs:
            network = load_network(model_dir)
            xy, confidence = predict_video_arrays(network, str(video))
            predictions.append((xy, confidence, network.keypoint_names))
        tables = [arrays_to_table(xy, names, conf) for xy, conf, names in predictions]
        smooth = (smooth_ensemble_multiview(tables, groups) if groups else smooth_ensemble(tables))[
            0
        ]
        stacked = np.stack([xy for xy, _, _ in predictions])
        candidates = {
            **{f"member {k}": xy for k, xy in enumerate(stacked)},
            "member mean": stacked.mean(0),
            "member median": np.median(stacked, 0),
            "EKS": table_to_arrays(smooth)[0],
        }
        for name, xy in candidates.items():
            scores.setdefault(name, []).append(np.linalg.norm(xy - truth, axis=-1)[visible])
        errors = (stacked - truth)[:, visible]  # (members, points, 2)
        for a in range(len(errors)):
            for b in range(a + 1, len(errors)):
                correlations.append(float(np.corrcoef(errors[a].ravel(), errors[b].ravel())[0, 1]))
    return {
        "video_pixel_error": {k: float(np.concatenate(v).mean()) for k, v in scores.items()},
        "member_error_correlations": correlations,
        "multiview_eks": bool(groups),
    }


if __name__ == "__main__":
    main()

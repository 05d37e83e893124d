"""Supervised vs semi-supervised at the main job's training setting, one network at a time.

The main job (``experiments/pipeline_synthetic.yaml``) sweeps the unsupervised weights at one
small CPU setting; this bench trains single networks at exactly that setting (its overrides are
read from the pipeline file, not copied) with chosen weights, label counts and steps, and scores
each on every frame of the unseen synthetic test video against the truth. On a CPU the runs are
deterministic: the same run gives the same error to the last digit (used to check that a
refactor changed no numbers, docs/architecture.md).

    python bench/demo_setting.py --runs sup:0:0:0 semi:0:0.01:0.01
    python bench/demo_setting.py --runs l8sup:0:0:0 --extra data.train_frames=8

A run is NAME:SEED:TEMPORAL_WEIGHT:MULTIVIEW_WEIGHT.
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
from common import print_table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "experiments" / "pipeline_synthetic.yaml"
# the pipeline's own folders and epoch count are replaced by the bench's
REPLACED = ("data.synthetic_dir", "training.output_dir", "training.max_epochs")


def demo_overrides() -> tuple[Path, list[str]]:
    """The pipeline file's base config and its training overrides (without its folders)."""
    spec = yaml.safe_load(PIPELINE.read_text())
    overrides = [o for o in spec["overrides"] if not o.startswith(REPLACED)]
    return PIPELINE.parent / spec["config"], overrides


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", required=True, help="NAME:SEED:TEMPORAL:MULTIVIEW")
    parser.add_argument("--epochs", type=int, default=20, help="the pipeline's 20 = 600 steps")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every run")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench-demo-setting")
    parser.add_argument("--name", default="demo_setting_cpu")
    args = parser.parse_args()
    from lpray.config import load_config
    from lpray.train.fit import train

    base, overrides = demo_overrides()
    rows = []
    for run in args.runs:
        name, seed, temporal, multiview = run.split(":")
        cfg = load_config(
            base,
            [
                *overrides,
                f"data.synthetic_dir={args.work / 'project'}",
                f"losses.temporal.weight={temporal}",
                f"losses.pca_multiview.weight={multiview}",
                f"training.seed={seed}",
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
            "extra": " ".join(args.extra),
            "minutes": (time.perf_counter() - started) / 60,
            **video_error(model_dir, Path(cfg.data.synthetic_dir)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, ["name", "seed", "temporal", "multiview", "extra", "video_pixel_error"])
    write_json(args.name, {"args": {k: str(v) for k, v in vars(args).items()}, "runs": rows})


if __name__ == "__main__":
    main()

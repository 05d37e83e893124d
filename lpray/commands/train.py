"""``lpray train CONFIG [section.key=value ...] [--workers N] [--overwrite]``: train one model.

Every input is checked before the model directory is touched; a model directory that holds a model
of other labels or another data/model config is refused unless ``--overwrite`` (see
:mod:`lpray.train.model_dir`).
"""

from __future__ import annotations

import argparse
import json

NAME = "train"
HELP = "Train a pose model (single process, or N Ray Train workers with --workers)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", help="YAML config (defaults: built-in synthetic dataset)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value overrides, e.g. training.max_epochs=2"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="Ray Train workers (0: plain single process, no Ray)"
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray Train worker"
    )
    parser.add_argument(
        "--cpus-per-worker", type=float, default=1.0, help="CPUs per Ray Train worker"
    )
    parser.add_argument(
        "--storage", default=None, help="Ray storage_path (local path, s3://, gs://)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model of other labels/config in training.output_dir (the old one is "
        "kept until the new one is complete)",
    )


def split_config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """Allow ``lpray train training.max_epochs=2`` with no config file."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def run(args: argparse.Namespace) -> int:
    from lpray.config import load_config
    from lpray.io.layout import ModelDir

    config, overrides = split_config_and_overrides(args)
    cfg = load_config(config, overrides)
    if args.workers > 0:
        from lpray.train.distributed import train_distributed

        model_dir = train_distributed(
            cfg,
            num_workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            storage_path=args.storage,
            overwrite=args.overwrite,
        )
    else:
        from lpray.train.fit import train

        model_dir = train(cfg, overwrite=args.overwrite)
    summary = json.loads(ModelDir(model_dir).summary.read_text())
    print(f"model directory: {model_dir}")
    for key in (
        "best_val_pixel_error",
        "test_pixel_error",
        "train_seconds",
        "labeled_frames_per_second",
    ):
        value = summary.get(key)
        if isinstance(value, float):
            print(f"  {key}: {value:.3f}")
    return 0

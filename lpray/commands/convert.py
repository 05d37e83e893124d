"""``lpray convert SOURCE --out DIR``: a DeepLabCut, SLEAP or Lightning Pose project as an lpray
project (labels CSV, images, videos, a starter config)."""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = (
    "Convert a DeepLabCut project (config.yaml), a SLEAP labels file (.slp/.pkg.slp) or a "
    "Lightning Pose project into an lpray project."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="DLC project folder or config.yaml, .slp file, LP folder")
    parser.add_argument("--out", required=True, help="the new project folder (must not exist)")
    parser.add_argument(
        "--from",
        dest="tool",
        default="auto",
        help="dlc, sleap or lightning-pose (default: detected from the layout)",
    )
    parser.add_argument(
        "--image-size", type=int, default=256, help="model input size in the starter config"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lpray.projects import find_source
    from lpray.projects.writer import write_project

    source_path = Path(args.source)
    source = find_source(source_path, args.tool)
    labels, videos, description = source.load(source_path)
    record = write_project(labels, videos, Path(args.out), description, args.image_size)
    print(
        f"{description}: {record['labeled_frames']} labeled frames, "
        f"{len(record['keypoints'])} keypoints, {len(record['videos'])} videos -> {args.out}\n"
        f"  next: lpray train {Path(args.out) / 'config.yaml'}"
    )
    return 0

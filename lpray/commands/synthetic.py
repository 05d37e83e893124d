"""``lpray synthetic``: write the built-in synthetic dataset (exact truth on every frame)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lpray.data.synthetic_project import SyntheticSpec

NAME = "synthetic"
HELP = "Generate a synthetic pose project with ground truth for every video frame."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SyntheticSpec()
    parser.add_argument("out_dir", type=Path, help="project directory to create")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--two-view", action="store_true", help="add a mirror-style side view")
    parser.add_argument("--codec", choices=["h264", "vp9", "mjpeg"], default=defaults.codec)
    parser.add_argument("--frames", type=int, default=defaults.frames_per_video, help="per video")
    parser.add_argument("--labeled", type=int, default=defaults.n_labeled, help="labeled frames")
    parser.add_argument("--train-videos", type=int, default=defaults.n_train_videos)
    parser.add_argument("--test-videos", type=int, default=defaults.n_test_videos)
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=list(defaults.frame_size),
        help="size of one view in pixels (even)",
    )
    parser.add_argument("--no-occlusion", action="store_true", help="no occluding bar")
    parser.add_argument("--overwrite", action="store_true", help="replace a different project")
    parser.add_argument("--preview", action="store_true", help="also write preview.png")


def run(args: argparse.Namespace) -> int:
    from lpray.data.synthetic import make_synthetic_project, save_preview

    spec = SyntheticSpec(
        seed=args.seed,
        n_train_videos=args.train_videos,
        n_test_videos=args.test_videos,
        frames_per_video=args.frames,
        n_labeled=args.labeled,
        frame_size=tuple(args.size),
        two_view=args.two_view,
        occlusion=not args.no_occlusion,
        codec=args.codec,
    )
    project = make_synthetic_project(args.out_dir, spec, overwrite=args.overwrite)
    height, width = project.frame_size
    views = "two views (top, bottom)" if project.view_groups else "one view"
    print(f"synthetic project: {project.root}")
    print(f"  keypoints ({len(project.keypoint_names)}): {', '.join(project.keypoint_names)}")
    print(
        f"  frames: {height}x{width} px, {views}, {spec.fps} fps, {spec.frames_per_video} per video"
    )
    print(f"  train videos: {', '.join(p.name for p in project.train_videos)}")
    print(f"  test videos:  {', '.join(p.name for p in project.test_videos) or '-'}")
    print(f"  labeled frames: {spec.n_labeled} in {project.csv_path.name}")
    print(f"  truth: {len(project.truth_paths)} tables in truth/ (x, y, visible on every frame)")
    if args.preview:
        print(f"  preview: {save_preview(project, project.root / 'preview.png')}")
    return 0

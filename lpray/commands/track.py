"""``lpray track ENSEMBLE_DIR VIDEOS... --out DIR``: predict + EKS a video corpus on Ray."""

from __future__ import annotations

import argparse

NAME = "track"
HELP = (
    "Track a video corpus with an ensemble: per-member predictions and EKS per video as Ray "
    "tasks; resumable; a bad video fails alone."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ensemble_dir", help="folder written by `lpray ensemble` (or a model dir)")
    parser.add_argument("videos", nargs="+", help="videos: paths, globs, s3:// gs:// file:// URLs")
    parser.add_argument("--out", required=True, help="output folder (local or URL)")
    parser.add_argument(
        "--smooth-param", type=float, default=None, help="EKS s for every keypoint (default: fit)"
    )
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per task")
    parser.add_argument(
        "--gpus-per-task",
        type=float,
        default=None,
        help="GPUs per prediction task (default: 0.5 on a cluster with GPUs, else 0)",
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="frames per forward pass")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "pyav", "dali"], help="video reader"
    )
    parser.add_argument(
        "--overlay",
        default="strip",
        choices=["strip", "video", "both", "none"],
        help="labeled output per video: PNG strip of sample frames, labeled mp4, both, none",
    )
    parser.add_argument(
        "--max-retries", type=int, default=3, help="retries of a task whose worker died"
    )
    parser.add_argument(
        "--pack", action="store_true", help="pack prediction tasks on few nodes (default: spread)"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="also retry videos that failed as unusable files and have not changed since",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from lpray.track.corpus import TaskResources, track_corpus
    from lpray.track.tasks import TrackSettings

    result = track_corpus(
        args.ensemble_dir,
        args.videos,
        args.out,
        TrackSettings(
            smooth_param=args.smooth_param,
            chunk_size=args.chunk_size,
            backend=args.backend,
            overlay=args.overlay,
        ),
        TaskResources(
            args.cpus_per_task, args.gpus_per_task, args.max_retries, spread=not args.pack
        ),
        progress=not args.no_progress,
        retry_failed=args.retry_failed,
    )
    print(
        f"{len(result.done)}/{len(result.rows)} videos done ({result.skipped} skipped, "
        f"{result.launched_tasks} tasks, {result.seconds:.1f} s) -> {result.out}/summary.csv"
    )
    for row in result.rows:
        if row["status"] != "done":
            print(f"  FAILED {row['path']}: {row['error']}")
    return 1 if result.failed else 0

"""``lpray track ENSEMBLE_DIR VIDEOS... --out DIR``: predict + EKS a video corpus on Ray."""

from __future__ import annotations

import argparse
import sys
import time

from lpray.commands import add_format_argument, seconds_since_start
from lpray.options import BACKENDS, OVERLAYS, PRECISIONS

NAME = "track"
HELP = (
    "Track a video corpus with an ensemble on Ray: tracking workers (one per GPU) decode each "
    "video once for every member, EKS per video behind them; resumable; a bad video fails alone."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ensemble_dir", help="folder written by `lpray ensemble` (or a model dir)")
    parser.add_argument("videos", nargs="+", help="videos: paths, globs, s3:// gs:// file:// URLs")
    parser.add_argument("--out", required=True, help="output folder (local or URL)")
    parser.add_argument(
        "--smooth-param", type=float, default=None, help="EKS s for every keypoint (default: fit)"
    )
    parser.add_argument(
        "--cpus-per-task",
        type=float,
        default=1.0,
        help="CPUs of each probe/EKS task and of each tracking worker",
    )
    parser.add_argument(
        "--gpus-per-worker",
        "--gpus-per-task",
        dest="gpus_per_worker",
        type=float,
        default=None,
        help="GPUs of each tracking worker (default: 1 on a cluster with GPUs, else 0; 0.5 puts "
        "two workers on each GPU)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="tracking workers, each holding every member (default: one per GPU; without GPUs "
        "as many as the CPUs allow)",
    )
    parser.add_argument(
        "--videos-in-flight",
        type=int,
        default=2,
        help="segments each worker works on at once (decoding one while the networks run another)",
    )
    parser.add_argument(
        "--segment-frames",
        type=int,
        default=20_000,
        help="cut longer videos into segments of about this many frames, spread over workers "
        "(0: never)",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="frames per network pass (128 GPU, 64 CPU)"
    )
    parser.add_argument("--backend", default="auto", choices=list(BACKENDS), help="video reader")
    parser.add_argument(
        "--decoders", type=int, default=None, help="DALI pipelines per segment on a GPU (default 4)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the members (about a minute once per worker; faster on corpora)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="on a GPU, replay the members' pass over each chunk from one CUDA graph (captured once)",
    )
    parser.add_argument(
        "--precision", default="auto", choices=list(PRECISIONS), help="auto = bf16 on a GPU"
    )
    parser.add_argument(
        "--overlay",
        default="strip",
        choices=list(OVERLAYS),
        help="labeled output per video: PNG strip of sample frames, labeled mp4, both, none",
    )
    add_format_argument(parser)
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
            decoders=args.decoders,
            segment_frames=args.segment_frames,
            compile=args.compile,
            precision=args.precision,
            cuda_graphs=args.cuda_graphs,
            overlay=args.overlay,
            formats=args.formats,
        ),
        TaskResources(
            args.cpus_per_task,
            args.gpus_per_worker,
            args.max_retries,
            spread=not args.pack,
            workers=args.workers,
            videos_in_flight=args.videos_in_flight,
        ),
        progress=not args.no_progress,
        retry_failed=args.retry_failed,
    )
    done = [r for r in result.rows if r["status"] == "done"]
    frames = sum(int(r.get("frames") or 0) for r in done)
    print(
        f"{len(result.done)}/{len(result.rows)} videos done ({result.skipped} skipped, "
        f"{result.launched_tasks} tasks on {result.workers} workers, {result.seconds:.1f} s, "
        f"{frames / max(result.seconds, 1e-9):.0f} video-frames/s) -> {result.out}/summary.csv"
    )
    age = seconds_since_start()
    if age is not None:  # start-up: from the process's start to the first decoded frame
        began = time.time() - age
        firsts = [r["first_chunk_at"] for r in done if r.get("first_chunk_at", 0) >= began]
        if firsts:
            print(f"  first frame decoded {min(firsts) - began:.2f} s after start")
    for row in result.rows:
        if row["status"] != "done":
            print(f"  FAILED {row['path']}: {row['error']}", file=sys.stderr)
    return 1 if result.failed else 0

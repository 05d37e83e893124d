"""``lpray predict MODEL_DIR VIDEO_OR_CSV... --out DIR``: predict videos or labeled frames."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lpray.commands import add_format_argument, seconds_since_start
from lpray.options import BACKENDS, PRECISIONS

NAME = "predict"
HELP = "Predict keypoints on videos (every frame) or on a labeled CollectedData.csv (with errors)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="model directory written by `lpray train`")
    parser.add_argument(
        "inputs", nargs="+", help="videos (globs ok) and/or CollectedData.csv files"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: MODEL_DIR/predictions)"
    )
    parser.add_argument("--backend", default="auto", choices=list(BACKENDS), help="video reader")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="frames per network pass (128 GPU, 64 CPU)"
    )
    parser.add_argument(
        "--decoders", type=int, default=None, help="DALI pipelines per video on a GPU (default 4)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network (about a minute once; faster on long videos)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="on a GPU, replay the network's pass over each chunk from one CUDA graph (captured once)",
    )
    add_format_argument(parser)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=list(PRECISIONS),
        help="network precision: auto = bf16 on a GPU, float32 on a CPU; bf16 on a CPU runs "
        "~1.35x faster, keypoints a median 0.04 px from float32 (a few ambiguous frames flip)",
    )


def startup_text(first_chunk_at: float) -> str:
    """ "first frame decoded N s after the command started" (interpreter and imports included)."""
    age = seconds_since_start()
    if age is None:
        return "start-up not measured here"
    return f"first frame decoded {age - (time.time() - first_chunk_at):.2f} s after start"


def run(args: argparse.Namespace) -> int:
    # Only the inference layer: no Lightning or training code (import time is start-up time).
    from lpray.inference.network import load_network
    from lpray.inference.video import predict_video
    from lpray.io.layout import ModelDir
    from lpray.io.storage import expand, local_copy, local_file

    # a model directory or videos on an object store are read from local copies
    network = load_network(
        local_copy(args.model_dir), args.device, compile=args.compile, precision=args.precision
    )
    out_dir = args.out or ModelDir(str(args.model_dir)).predictions
    for path in expand(args.inputs):
        if path.endswith(".csv"):
            from lpray.data.labeled import read_labeled_frames
            from lpray.inference.labeled import evaluate_labeled

            frames = read_labeled_frames(Path(path).parent, Path(path).name, network.keypoint_names)
            result = evaluate_labeled(network, frames)
            stem = Path(path).stem
            result.save(out_dir, prefix=stem)
            print(
                f"{path}: {len(frames)} labeled frames, mean pixel error {result.mean_error:.2f} px "
                f"-> {out_dir}/{stem}_predictions.csv"
            )
        else:
            with local_file(path) as video:
                stats = predict_video(
                    network,
                    video,
                    out_dir,
                    backend=args.backend,
                    chunk_size=args.chunk_size,
                    decoders=args.decoders,
                    formats=args.formats,
                    cuda_graphs=args.cuda_graphs,
                )
            print(
                f"{path}: {stats['frames']} frames at {stats['frames_per_second']:.1f} frames/s "
                f"({startup_text(stats['first_chunk_at'])}), "
                f"mean confidence {stats['mean_confidence']:.3f} -> {out_dir}"
            )
    return 0

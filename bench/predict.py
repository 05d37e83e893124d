"""End-to-end video prediction throughput: decode -> resize/normalise -> network -> soft-argmax -> CPU.

Times :func:`lpray.inference.video.predict_video_arrays` (what ``lpray predict`` / ``lpray track``
run) on the mirror-mouse video with a ResNet-50 heatmap model at 256x256, against the raw network
alone on random input (the ceiling), at several chunk sizes.

    python bench/predict.py --backend pyav dali --chunks 64 128 256 [--loop 1 10 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, looped_video, median, print_table, write_json  # noqa: E402

from lpray.config import load_config  # noqa: E402
from lpray.inference.network import PoseNetwork, random_network  # noqa: E402
from lpray.inference.video import predict_video_arrays  # noqa: E402


def raw_model_rate(
    trained: PoseNetwork, batch: int, device: torch.device, repeats: int = 10
) -> float:
    """Network + heatmap decoding alone, on random frames already on the device."""
    frames = torch.randn(batch, 3, *trained.image_size, device=device)
    for _ in range(3):
        trained.predict_sequence(frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        trained.predict_sequence(frames)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend",
        nargs="+",
        default=["auto"],
        help="video readers to compare in one run (auto, pyav, dali)",
    )
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=256, help="model input side")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--nchw",
        action="store_true",
        help="keep NCHW on CUDA (lpray's load_network switches to channels_last)",
    )
    parser.add_argument(
        "--decoders",
        type=int,
        nargs="+",
        default=[0],
        help="DALI pipelines per video (0: lpray's default for the device)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument(
        "--loop",
        type=int,
        nargs="+",
        default=[1],
        help="play the clip this many times (remuxed) so start-up costs amortise",
    )
    parser.add_argument("--name", default=None, help="result file name")
    args = parser.parse_args()
    clip = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = args.image_size
    cfg = load_config(None, [f"model.backbone={args.backbone}", f"data.image_size=[{size},{size}]"])
    names = [f"kp{k}" for k in range(17)]
    trained = random_network(cfg, names, device, compile=args.compile)
    if args.nchw:
        trained.model = trained.model.to(memory_format=torch.contiguous_format)
    rows = []
    for loop in args.loop:
        video = (
            clip
            if loop == 1
            else looped_video(clip, Path(tempfile.gettempdir()) / f"lpray-loop{loop}.mp4", loop)
        )
        for chunk in args.chunks:
            raw = raw_model_rate(trained, chunk, device)
            for backend in args.backend:
                # decoder counts only mean something to DALI
                for decoders in args.decoders if backend != "pyav" else [0]:
                    rates = []
                    for _ in range(args.repeats + 1):  # first run warms up (cuDNN, decoder)
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        xy, _ = predict_video_arrays(
                            trained,
                            str(video),
                            chunk_size=chunk,
                            backend=backend,
                            decoders=decoders or None,
                        )
                        rates.append(len(xy) / (time.perf_counter() - start))
                    end_to_end = median(rates[1:])
                    rows.append(
                        {
                            "loop": loop,
                            "frames": len(xy),
                            "chunk": chunk,
                            "backend": backend,
                            "decoders": decoders or "default",
                            "end_to_end_fps": end_to_end,
                            "raw_model_fps": raw,
                            "e2e/raw": end_to_end / raw,
                        }
                    )
                    print(rows[-1], flush=True)
    print(f"device: {device}, backbone {args.backbone}, {size}x{size}, bf16 autocast on CUDA")
    print_table(
        rows,
        [
            "loop",
            "frames",
            "chunk",
            "backend",
            "decoders",
            "end_to_end_fps",
            "raw_model_fps",
            "e2e/raw",
        ],
    )
    loops = args.loop[0] if len(args.loop) == 1 else "s"
    name = args.name or (
        f"predict_{device.type}_{'_'.join(args.backend)}"
        + (f"_loop{loops}" if args.loop != [1] else "")
        + ("_compiled" if args.compile else "")
    )
    write_json(name, {"args": vars(args), "video": str(clip), "rows": rows})


if __name__ == "__main__":
    main()

"""End-to-end video prediction throughput: decode -> resize/normalise -> network -> soft-argmax -> CPU.

Times :func:`lpray.track.predict.predict_video_arrays` (what ``lpray predict`` / ``lpray track``
run) on the mirror-mouse video with a ResNet-50 heatmap model at 256x256, against the raw network
alone on random input (the ceiling), at several chunk sizes.

    python bench/predict.py --backend pyav --chunks 64 128 256
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
from lpray.track.predict import TrainedModel, predict_video_arrays  # noqa: E402
from lpray.train.module import PoseModule  # noqa: E402


def raw_model_rate(trained: TrainedModel, batch: int, device: torch.device, repeats: int = 10) -> float:
    module = trained.module
    frames = torch.randn(batch, 3, *module.image_size, device=device)
    if device.type == "cuda":
        frames = frames.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(3):
            module.heatmaps_to_image_coords(trained.forward_sequence(frames))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            module.heatmaps_to_image_coords(trained.forward_sequence(frames))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nchw", action="store_true",
                        help="keep NCHW on CUDA (lpray's load_trained switches to channels_last)")
    parser.add_argument("--decoders", type=int, nargs="+", default=[0],
                        help="DALI pipelines per video (0: lpray's default for the device)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--loop", type=int, default=1,
                        help="play the clip this many times (remuxed) so start-up costs amortise")
    args = parser.parse_args()
    video = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"
    if args.loop > 1:
        video = looped_video(video, Path(tempfile.gettempdir()) / f"lpray-loop{args.loop}.mp4", args.loop)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(None, [f"model.backbone={args.backbone}", "data.image_size=[256,256]"])
    names = [f"kp{k}" for k in range(17)]
    module = PoseModule(cfg.to_dict(), names).eval().to(device)
    if device.type == "cuda" and not args.nchw:
        module = module.to(memory_format=torch.channels_last)  # as load_trained does
    trained = TrainedModel(module, Path("."), device, compile=args.compile)
    rows = []
    for chunk in args.chunks:
        raw = raw_model_rate(trained, chunk, device)
        for decoders in args.decoders:
            rates = []
            for _ in range(args.repeats + 1):  # first run warms up (cuDNN autotune, decoder)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                xy, _ = predict_video_arrays(trained, str(video), chunk_size=chunk,
                                             backend=args.backend, decoders=decoders or None)
                rates.append(len(xy) / (time.perf_counter() - start))
            end_to_end = median(rates[1:])
            rows.append({"chunk": chunk, "decoders": decoders or "default", "end_to_end_fps": end_to_end,
                         "raw_model_fps": raw, "e2e/raw": end_to_end / raw, "frames": len(xy)})
            print(rows[-1], flush=True)
    print(f"device: {device}, backbone {args.backbone}, 256x256, bf16 autocast on CUDA, reader {args.backend}")
    print_table(rows, ["chunk", "decoders", "end_to_end_fps", "raw_model_fps", "e2e/raw", "frames"])
    suffix = (f"_loop{args.loop}" if args.loop > 1 else "") + ("_compiled" if args.compile else "")
    write_json(f"predict_{device.type}_{args.backend}{suffix}", {"args": vars(args), "video": str(video), "rows": rows})


if __name__ == "__main__":
    main()

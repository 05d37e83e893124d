"""End-to-end video prediction throughput: decode -> resize/normalise -> network -> soft-argmax -> CPU.

Times :func:`lpray.track.predict.predict_video_arrays` (what ``lpray predict`` / ``lpray track``
run) on the mirror-mouse video with a ResNet-50 heatmap model at 256x256, against the raw network
alone on random input (the ceiling), at several chunk sizes.

    python bench/predict.py --backend pyav --chunks 64 128 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, median, print_table, write_json  # noqa: E402

from lpray.config import load_config  # noqa: E402
from lpray.track.predict import TrainedModel, predict_video_arrays  # noqa: E402
from lpray.train.module import PoseModule  # noqa: E402


def raw_model_rate(module: PoseModule, batch: int, device: torch.device, repeats: int = 10) -> float:
    frames = torch.randn(batch, 3, *module.image_size, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for _ in range(3):
            module.heatmaps_to_image_coords(module.model.forward_sequence(frames))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            module.heatmaps_to_image_coords(module.model.forward_sequence(frames))
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    video = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(None, [f"model.backbone={args.backbone}", "data.image_size=[256,256]"])
    names = [f"kp{k}" for k in range(17)]
    module = PoseModule(cfg.to_dict(), names).eval().to(device)
    if args.channels_last:
        module = module.to(memory_format=torch.channels_last)
    trained = TrainedModel(module, Path("."), device)
    rows = []
    for chunk in args.chunks:
        rates = []
        for _ in range(args.repeats + 1):  # first run warms up (cuDNN autotune, decoder)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            xy, _ = predict_video_arrays(trained, str(video), chunk_size=chunk, backend=args.backend)
            rates.append(len(xy) / (time.perf_counter() - start))
        end_to_end = median(rates[1:])
        raw = raw_model_rate(module, chunk, device)
        rows.append({"chunk": chunk, "end_to_end_fps": end_to_end, "raw_model_fps": raw,
                     "e2e/raw": end_to_end / raw, "frames": len(xy)})
    print(f"device: {device}, backbone {args.backbone}, 256x256, bf16 autocast on CUDA, reader {args.backend}")
    print_table(rows, ["chunk", "end_to_end_fps", "raw_model_fps", "e2e/raw", "frames"])
    write_json(f"predict_{device.type}_{args.backend}", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()

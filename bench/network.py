"""Where one inference network's time goes: trunk, head and decoding, under each setting.

For one random network (ResNet-50 256x256, 17 keypoints by default) on one chunk of random
frames, bf16 channels_last as prediction runs it, the median time of each stage and of the whole
``predict_sequence``, for every combination of:

- ``cudnn.benchmark`` off / on (cuDNN picks its algorithms by heuristics or by timing them);
- BatchNorm folded into the convolutions or not (:mod:`lpray.models.fold`);
- the head's keypoint channels padded to a multiple of 8 with zero weights (the same maps);

then the whole network compiled (``compile_shared``). A profile of the best eager setting lists
the kernels that take the most GPU time.

    python bench/network.py                  # GPU machine
    python bench/network.py --smoke          # CPU, seconds
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, write_json  # noqa: E402

from lpray.config import config_from_dict  # noqa: E402
from lpray.inference.network import PoseNetwork, compile_shared, random_network  # noqa: E402


def pad_head(network: PoseNetwork, multiple: int) -> None:
    """Pad the head's transposed convs to ``multiple`` keypoint channels with zero weights
    and bias, and slice the real maps out after it (the same function)."""
    layers = network.model.head.layers
    k = layers[-1].out_channels
    padded = -(-k // multiple) * multiple
    if padded == k:
        return
    with torch.no_grad():
        for layer in layers:
            if not isinstance(layer, nn.ConvTranspose2d):
                continue
            w = layer.weight  # (in, out, kh, kw)
            new_in = padded if w.shape[0] == k else w.shape[0]
            grown = torch.zeros(new_in, padded, *w.shape[2:], dtype=w.dtype, device=w.device)
            grown[: w.shape[0], :k] = w
            layer.weight = nn.Parameter(grown.contiguous(memory_format=torch.channels_last))
            bias = torch.zeros(padded, dtype=w.dtype, device=w.device)
            bias[:k] = layer.bias
            layer.bias = nn.Parameter(bias)
            layer.in_channels, layer.out_channels = new_in, padded
    forward = network.model.head.forward
    network.model.head.forward = lambda x: forward(x)[:, :k]


def timed(fn, sync, repeats: int) -> float:
    """Median seconds of ``fn()`` over 3 runs of ``repeats`` calls (after warm-up)."""
    for _ in range(3):
        fn()
    runs = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        runs.append((time.perf_counter() - start) / repeats)
    return median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--keypoints", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, ResNet-18 64x64")
    parser.add_argument("--name", default="network_gpu")
    args = parser.parse_args()
    if args.smoke:
        args.backbone, args.size, args.chunk, args.repeats = "resnet18", 64, 8, 2
        args.no_compile, args.name = True, "network_smoke"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = config_from_dict(
        {"data": {"image_size": [args.size, args.size]}, "model": {"backbone": args.backbone}}
    )
    names = [f"kp{k}" for k in range(args.keypoints)]
    frames = torch.randn(args.chunk, 3, args.size, args.size, device=device)
    frames = frames.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    for benchmark, fold, pad in itertools.product((False, True), (False, True), (False, True)):
        torch.backends.cudnn.benchmark = benchmark
        torch.manual_seed(0)
        network = random_network(cfg, names, device, fold=fold)
        if pad:
            pad_head(network, 8)
        times = stage_times(network, frames, sync, args.repeats)
        rows.append(
            {
                "cudnn_benchmark": benchmark,
                "fold": fold,
                "pad_head": pad,
                **{f"{k}_ms": 1e3 * v for k, v in times.items()},
                "img_per_s": args.chunk / times["whole"],
            }
        )
        print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r["img_per_s"])
    results = {"settings": vars(args), "rows": rows, "best_eager": best}
    torch.backends.cudnn.benchmark = best["cudnn_benchmark"]
    torch.manual_seed(0)
    network = random_network(cfg, names, device, fold=best["fold"])
    if best["pad_head"]:
        pad_head(network, 8)
    if device == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode():
            for _ in range(3):
                network.predict_sequence(frames)
            sync()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    network.predict_sequence(frames)
                sync()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        print(table)
        results["profile"] = table
    if not args.no_compile:
        for fold in (False, True):
            torch.manual_seed(0)
            network = random_network(cfg, names, device, fold=fold, compile=True)
            compile_shared([network])
            started = time.perf_counter()
            with torch.inference_mode():
                network.predict_sequence(frames)
            sync()
            compile_s = time.perf_counter() - started
            with torch.inference_mode():
                seconds = timed(lambda n=network: n.predict_sequence(frames), sync, args.repeats)
            results[f"compiled_fold_{fold}"] = {
                "compile_s": compile_s,
                "whole_ms": 1e3 * seconds,
                "img_per_s": args.chunk / seconds,
            }
            print(f"compiled fold={fold}", results[f"compiled_fold_{fold}"], flush=True)
            torch._dynamo.reset()
    print()
    print_table(
        rows,
        ["cudnn_benchmark", "fold", "pad_head", "trunk_ms", "head_ms", "decode_ms", "whole_ms"]
        + ["img_per_s"],
    )
    write_json(args.name, results)


def stage_times(network: PoseNetwork, frames: torch.Tensor, sync, repeats: int) -> dict:
    """Median seconds of the trunk, the head, the decoding and the whole prediction."""
    model = network.model

    def run(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        with network.autocast():
            return module(inputs)

    with torch.inference_mode():
        features = run(model.backbone, frames)
        heatmaps = run(model.head, features)
        stages = {
            "trunk": lambda: run(model.backbone, frames),
            "head": lambda: run(model.head, features),
            "decode": lambda: network.heatmaps_to_keypoints(heatmaps),
            "whole": lambda: network.predict_sequence(frames),
        }
        return {k: timed(fn, sync, repeats) for k, fn in stages.items()}


if __name__ == "__main__":
    main()

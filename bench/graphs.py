"""K members eager vs replayed from one CUDA graph, with busy Python threads beside them.

The tracking worker runs the networks on one thread while a DALI drain thread and a part thread
per reader run Python beside it. Eagerly, every kernel launch is a PyTorch call that releases
the GIL and must win it back; a graph replay is one call per chunk. This bench measures the
K-member network rate (random frames, chunk 128, bf16) eager and graphed, with 0 and 1
thread(s) spinning in Python (a worst case of the engine's threads, which mostly wait in DALI
with the GIL released), and checks that the replayed keypoints equal the eager ones.

    python bench/graphs.py                 # GPU machine
    python bench/graphs.py --smoke         # CPU: eager only, seconds
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, print_table, write_json  # noqa: E402


def spin(stop: threading.Event) -> None:
    """Pure-Python work that holds the GIL between switch intervals."""
    while not stop.is_set():
        sum(range(2000))


def rate(passes, members: list[int], frames, repeats: int) -> float:  # noqa: ANN001
    import torch

    def sync() -> None:
        if frames.is_cuda:
            torch.cuda.synchronize()

    for _ in range(3):
        passes(members, frames)
    rates = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            passes(members, frames)
        sync()
        rates.append(len(frames) * repeats / (time.perf_counter() - start))
    return median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=128)
    # one spinning thread already slows eager passes ~95x (H100): more threads or repeats
    # take minutes per figure
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--name", default="graphs_gpu")
    args = parser.parse_args()
    import torch

    from lpray.config import config_from_dict
    from lpray.inference.graphs import ChunkPasses
    from lpray.inference.network import random_network

    if args.smoke:
        args.members, args.backbone, args.size, args.chunk = [1], "resnet18", 64, 16
        args.threads, args.repeats, args.name = [0, 2], 2, "graphs_smoke"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = config_from_dict(
        {"data": {"image_size": [args.size, args.size]}, "model": {"backbone": args.backbone}}
    )
    names = [f"kp{k}" for k in range(17)]
    networks = []
    for k in range(max(args.members)):
        torch.manual_seed(k)
        networks.append(random_network(cfg, names, device))
    frames = torch.randn(args.chunk, 3, args.size, args.size, device=device)
    rows = []
    for count in args.members:
        members = list(range(count))
        eager = ChunkPasses(networks, cuda_graphs=False)
        modes = {"eager": eager}
        check = {}
        if device == "cuda":
            graphed = ChunkPasses(networks, cuda_graphs=True)
            started = time.perf_counter()
            replay = [(x.clone(), c.clone()) for x, c in graphed(members, frames)]
            torch.cuda.synchronize()
            check["capture_s"] = time.perf_counter() - started
            fresh = torch.randn_like(frames)  # a second chunk: no stale outputs
            replay = [(x.clone(), c.clone()) for x, c in graphed(members, fresh)]
            expected = eager(members, fresh)
            check["max_px_diff"] = max(
                float((x - e[0]).abs().max()) for (x, _), e in zip(replay, expected)
            )
            modes["graphed"] = graphed
        for threads in args.threads:
            stop = threading.Event()
            workers = [threading.Thread(target=spin, args=(stop,)) for _ in range(threads)]
            for worker in workers:
                worker.start()
            try:
                for mode, passes in modes.items():
                    fps = rate(passes, members, frames, args.repeats)
                    rows.append(
                        {"K": count, "threads": threads, "mode": mode, "video_fps": fps, **check}
                    )
                    print(rows[-1], flush=True)
            finally:
                stop.set()
                for worker in workers:
                    worker.join()
    print()
    print_table(rows, ["K", "threads", "mode", "video_fps"])
    write_json(args.name, {"settings": vars(args), "device": device, "rows": rows})


if __name__ == "__main__":
    main()

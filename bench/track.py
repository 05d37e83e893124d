"""Corpus tracking at the GPU's speed: ``lpray track`` side by side with its bounds.

One run prints, for each corpus and ensemble size K:

- the whole ``lpray track`` command (a fresh process, Ray started inside it): video-frames/s
  and member-frames/s (K x video-frames), and its start-up (process start to first decoded
  frame, from ``done.json``'s ``first_chunk_at``);
- the decode bound: lpray's prediction reader alone (DALI on a GPU, decode + resize +
  normalise, no network) on one video of the corpus with 1..16 concurrent readers;
- the network bound: K members on random input at the chunk size, eager (BatchNorm folded, and
  with ``--bound-chunks`` also unfolded) and compiled (the K members through one shared
  compiled graph, as ``lpray track --compile``; the compile's seconds beside it);
- the ratio of the command's rate to min(decode bound, network bound).

Corpora, made by the bench in ``--work``: the mirror-mouse clip looped 10x (9,940 frames,
396x406) and the clip upscaled to 1280x1024 and re-encoded with x264 defaults, looped 10x,
``--videos`` copies each. Members: random ResNet-50 256x256 networks with 17 keypoints (speed
does not depend on the weights). Also single-video ``lpray predict`` of one member on the
looped clip: in process (the rate it prints) and whole command.

    python bench/track.py --work /tmp/lpray-track            # GPU machine
    python bench/track.py --smoke                            # CPU, seconds: tiny corpora
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, looped_video, median, print_table, write_json  # noqa: E402

CLIP = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"
KEYPOINTS = [f"kp{k}" for k in range(17)]


def upscaled(source: Path, target: Path, width: int, height: int, frames: int | None) -> Path:
    """``source`` resized to width x height and re-encoded as H.264 (x264 defaults)."""
    import av

    if target.exists():
        return target
    partial = target.with_name(f"partial-{target.name}")
    with av.open(str(source)) as src, av.open(str(partial), "w") as dst:
        stream_in = src.streams.video[0]
        rate = stream_in.average_rate or 30
        stream = dst.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_type = "AUTO"
        for k, frame in enumerate(src.decode(stream_in)):
            if frames is not None and k >= frames:
                break
            out = frame.reformat(width=width, height=height, format="yuv420p")
            out.pts, out.time_base = k, 1 / Fraction(rate)
            for packet in stream.encode(out):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    partial.rename(target)
    return target


def make_corpus(work: Path, name: str, video: Path, copies: int) -> Path:
    folder = work / f"corpus-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(copies):
        target = folder / f"{name}-{k}{video.suffix}"
        if not target.exists():
            shutil.copy(video, target)
    return folder


def make_ensemble(work: Path, members: int, backbone: str, size: int) -> Path:
    """``members`` random networks as model directories (config.yaml + best.ckpt)."""
    import torch

    from lpray.config import config_from_dict, save_config
    from lpray.inference.network import random_network, save_checkpoint
    from lpray.io.layout import ModelDir

    folder = work / f"ensemble-{backbone}-{size}-k{members}"
    cfg = config_from_dict({"data": {"image_size": [size, size]}, "model": {"backbone": backbone}})
    for k in range(members):
        paths = ModelDir(folder / f"member-{k}")
        if paths.best_checkpoint.exists():
            continue
        torch.manual_seed(k)
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths.config)
        save_checkpoint(random_network(cfg, KEYPOINTS, "cpu", fold=False), paths.best_checkpoint)
    return folder


def network_bound(
    ensemble: Path,
    members: int,
    chunk: int,
    compiled: bool = False,
    decode: bool = True,
    fold: bool | None = None,
    graphs: bool = False,
) -> dict[str, float]:
    """Video-frames/s of K members on one chunk of random frames (all members per chunk).

    ``decode=False``: the networks' heatmaps only (no soft-argmax), the decoding's share.
    ``compiled``: the K members through one shared compiled graph (``compile_shared``), as
    ``lpray track --compile`` runs them; ``compile_s`` is the first chunk's time (the compile).
    ``fold``: BatchNorms folded or not (None: as ``lpray track`` does, folded when compiled).
    ``graphs``: the K members' pass replayed from one CUDA graph (``ChunkPasses``).
    """
    import torch

    from lpray.inference.graphs import ChunkPasses
    from lpray.inference.network import compile_shared, load_network

    dirs = sorted(ensemble.glob("member-*"))[:members]
    networks = [load_network(d, compile=compiled, fold=fold) for d in dirs]
    if compiled:
        compile_shared(networks)
    frames = torch.randn(chunk, 3, *networks[0].image_size, device=networks[0].device)
    frames = frames.contiguous(memory_format=torch.channels_last)
    passes = ChunkPasses(networks, cuda_graphs=graphs)

    def step() -> None:
        if decode:
            passes(range(len(networks)), frames)
            return
        for network in networks:
            with torch.inference_mode(), network.autocast():
                network.model.forward_sequence(frames)

    def sync() -> None:
        if frames.is_cuda:
            torch.cuda.synchronize()

    started = time.perf_counter()
    with torch.inference_mode():
        step()
    sync()
    first = time.perf_counter() - started
    warm, repeats = (5, 20) if frames.is_cuda else (1, 2)
    for _ in range(warm):
        step()
    rates = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        sync()
        rates.append(chunk * repeats / (time.perf_counter() - start))
    if compiled:
        torch._dynamo.reset()
    return {"video_fps": median(rates), "compile_s": first if compiled or graphs else 0.0}


def decode_bound(video: Path, readers: int, chunk: int, size: int) -> dict[str, float]:
    """lpray's reader alone (decode + resize + normalise, no network): ``readers`` parts of one
    video, each decoded by its own reader on its own thread, as the engine runs them."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from lpray.data.video import validate_video
    from lpray.inference.chunks import iter_prediction_chunks
    from lpray.inference.engine import split_range

    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = validate_video(str(video))
    parts = split_range(0, info.n_frames, readers, 1)
    firsts = []

    def drain(part: tuple[int, int]) -> int:
        frames = 0
        backend = "dali" if device == "cuda" else "auto"
        for item in iter_prediction_chunks(
            str(video), (size, size), chunk, 0, backend, device, 1, part[0], part[1], info
        ):
            if not frames:
                firsts.append(time.perf_counter())
            frames += item["valid_rows"][1] - item["valid_rows"][0]
        if device == "cuda":
            torch.cuda.synchronize()
        return frames

    start = time.perf_counter()
    with ThreadPoolExecutor(len(parts)) as pool:
        frames = sum(pool.map(drain, parts))
    end = time.perf_counter()
    return {
        "frames": frames,
        "fps": frames / (end - start),
        "fps_after_start": frames / max(end - max(firsts), 1e-9),
        "startup_s": max(firsts) - start,
    }


def run_command(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lpray.cli", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"lpray {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def track_command(
    ensemble: Path, corpus: Path, out: Path, env: dict[str, str], extra: list[str]
) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    videos = sorted(str(p) for p in corpus.iterdir())
    if "TORCHINDUCTOR_CACHE_DIR" not in env:
        # a cold compile, as on a fresh node; a variant named NAME-warm reuses NAME's cache
        # (a node that compiled these members before)
        name = out.name.replace("-warm-", "-")
        cache = out.with_name(f"{name}-inductor")
        if name == out.name:
            shutil.rmtree(cache, ignore_errors=True)
        env = {**env, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    began = time.time()
    seconds, printed = run_command(
        [
            "track",
            str(ensemble),
            *videos,
            "--out",
            str(out),
            "--overlay",
            "none",
            "--no-progress",
            *extra,
        ],
        env,
    )
    records = [json.loads((out / Path(v).stem / "done.json").read_text()) for v in videos]
    manifest = json.loads((out / "manifest.json").read_text())
    frames = sum(r["frames"] for r in records)
    first = min(r["first_chunk_at"] for r in records)
    return {
        "frames": frames,
        "seconds": seconds,
        "video_fps": frames / seconds,
        "startup_s": first - began,
        # where the start-up goes: Ray up, a worker process started, its members loaded
        "ray_ready_s": manifest["ray_ready_at"] - began,
        "worker_created_s": min(r["worker_created_at"] for r in records) - began,
        "worker_ready_s": min(r["worker_ready_at"] for r in records) - began,
        "fps_after_first_frame": frames / max(seconds - (first - began), 1e-9),
        "printed": printed.strip().splitlines()[-2:],
    }


def predict_command(
    member: Path, video: Path, out: Path, env: dict[str, str], extra: list[str] | None = None
) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    args = ["predict", str(member), str(video), "--out", str(out), *(extra or [])]
    seconds, printed = run_command(args, env)
    in_process = float(re.search(r"at ([\d.]+) frames/s", printed).group(1))
    first = re.search(r"first frame decoded ([\d.]+) s", printed)
    return {
        "seconds": seconds,
        "in_process_fps": in_process,
        "whole_command_fps": float(re.search(r": (\d+) frames", printed).group(1)) / seconds,
        "startup_s": float(first.group(1)) if first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpray-bench-track"))
    parser.add_argument(
        "--corpora", nargs="+", default=["clip", "large"], choices=["clip", "large"]
    )
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--loop", type=int, default=10)
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=64, help="chunk of the network bound")
    parser.add_argument("--bound-chunks", type=int, nargs="+", default=[], help="also these")
    parser.add_argument("--no-compiled-bound", action="store_true")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["eager="],
        help="NAME=FLAGS: `lpray track` runs per corpus and K, e.g. 'compiled=--compile'",
    )
    parser.add_argument("--no-predict", action="store_true", help="skip the `lpray predict` run")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU run: 2 short videos, ResNet-18 64"
    )
    parser.add_argument("--name", default="track_gpu")
    args = parser.parse_args()
    if args.smoke:
        args.corpora, args.members, args.videos, args.loop = ["clip"], [1, 2], 2, 1
        args.readers, args.backbone, args.size, args.chunk = [1, 2], "resnet18", 64, 32
        args.no_compiled_bound, args.name = True, "track_smoke"
    import torch

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    sources = {}
    if "clip" in args.corpora:
        sources["clip"] = (
            looped_video(CLIP, work / f"clip-x{args.loop}.mp4", args.loop)
            if args.loop > 1
            else CLIP
        )
    if "large" in args.corpora:
        started = time.perf_counter()
        big = upscaled(CLIP, work / "clip-1280x1024.mp4", 1280, 1024, None)
        print(f"re-encoded the clip at 1280x1024 in {time.perf_counter() - started:.1f} s")
        sources["large"] = (
            looped_video(big, work / f"large-x{args.loop}.mp4", args.loop) if args.loop > 1 else big
        )
    rows, results = [], {"settings": vars(args) | {"work": str(work)}, "corpora": {}}
    ensembles = {k: make_ensemble(work, k, args.backbone, args.size) for k in args.members}
    bounds, bound_rows = {}, []
    for k in args.members:
        bounds[k] = {"eager": network_bound(ensembles[k], k, args.chunk)["video_fps"]}
        if torch.cuda.is_available():
            graphed = network_bound(ensembles[k], k, args.chunk, graphs=True)
            bounds[k]["graphed"] = graphed["video_fps"]
            bounds[k]["capture_s"] = graphed["compile_s"]
        if not args.no_compiled_bound and torch.cuda.is_available():
            compiled = network_bound(ensembles[k], k, args.chunk, compiled=True)
            bounds[k]["compiled"] = compiled["video_fps"]
            bounds[k]["compile_s"] = compiled["compile_s"]
            both = network_bound(ensembles[k], k, args.chunk, compiled=True, graphs=True)
            bounds[k]["compiled_graphed"] = both["video_fps"]
        for chunk in args.bound_chunks:
            for fold, decode in ((True, True), (True, False), (False, True), (False, False)):
                rate = network_bound(ensembles[k], k, chunk, decode=decode, fold=fold)
                bound_rows.append(
                    {"K": k, "chunk": chunk, "fold": fold, "decoding": decode, **rate}
                )
        print(f"network bound K={k}: {bounds[k]}")
    results["network_bound"] = bounds
    results["network_bound_rows"] = bound_rows
    variants = dict(v.split("=", 1) for v in args.variants)
    for name, video in sources.items():
        corpus = make_corpus(work, name, video, args.videos)
        decode = {r: decode_bound(video, r, args.chunk, args.size) for r in args.readers}
        best_decode = max(d["fps"] for d in decode.values())
        print(
            f"decode bound {name}: " + ", ".join(f"{r}: {d['fps']:.0f}" for r, d in decode.items())
        )
        entry = {"video": str(video), "decode": decode, "track": {}}
        for variant, flags in variants.items():
            for k in args.members:
                out = work / f"out-{name}-{variant}-k{k}"
                run = track_command(ensembles[k], corpus, out, env, flags.split())
                network = max(v for n, v in bounds[k].items() if not n.endswith("_s"))
                entry["track"][f"{variant}-k{k}"] = run
                rows.append(
                    {
                        "corpus": name,
                        "variant": variant,
                        "K": k,
                        "video_fps": run["video_fps"],
                        "member_fps": run["video_fps"] * k,
                        "after_first": run["fps_after_first_frame"],
                        "startup_s": run["startup_s"],
                        "ray_s": run["ray_ready_s"],
                        "worker_s": run["worker_ready_s"],
                        "decode_bound": best_decode,
                        "net_eager": bounds[k]["eager"],
                        "net_graphed": bounds[k].get("graphed", float("nan")),
                        "net_compiled": bounds[k].get("compiled", float("nan")),
                        "ratio_to_bound": run["video_fps"] / min(best_decode, network),
                    }
                )
                print(rows[-1])
        results["corpora"][name] = entry
    results["rows"] = rows
    print()
    if bound_rows:
        print_table(bound_rows, ["K", "chunk", "fold", "decoding", "video_fps"])
        print()
    columns = ["corpus", "variant", "K", "video_fps", "member_fps", "after_first", "startup_s"]
    columns += ["ray_s", "worker_s", "decode_bound", "net_eager", "net_graphed", "net_compiled"]
    columns += ["ratio_to_bound"]
    print_table(rows, columns)
    if not args.no_predict:
        member = sorted(ensembles[min(args.members)].glob("member-*"))[0]
        video = sources[args.corpora[0]]
        network_fps = max(
            v for n, v in bounds[min(args.members)].items() if not n.endswith("_s")
        ) * min(args.members)
        predicts = []
        for variant, flags in (("graphs", ["--cuda-graphs"]), ("nographs", [])):
            predict = predict_command(member, video, work / "out-predict", env, flags)
            predict["variant"] = variant
            predict["network_bound_fps"] = network_fps
            predict["in_process_vs_network"] = predict["in_process_fps"] / network_fps
            predicts.append(predict)
        results["predict"] = predicts
        print()
        print_table(
            predicts,
            [
                "variant",
                "seconds",
                "in_process_fps",
                "whole_command_fps",
                "startup_s",
                "network_bound_fps",
                "in_process_vs_network",
            ],
        )
    write_json(args.name, results)


if __name__ == "__main__":
    main()

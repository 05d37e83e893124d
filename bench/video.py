"""Video decoding + preprocessing throughput of lpray's readers on the mirror-mouse clip.

CPU (default): PyAV on the H.264 original; DALI CPU vs PyAV on a VP9 re-encode of it made in a
temporary folder (DALI's CPU decoder does not read H.264). ``--gpu`` (on a CUDA machine): DALI GPU
(``fn.experimental.readers.video(device="gpu")``) vs PyAV vs OpenCV (if importable) on the H.264
original, delivering tensors on the GPU.

Rows:
- ``decode``: decoded RGB frames only (PyAVReader.iter_chunks / a bare DALI reader pipeline /
  OpenCV), the decoder's own rate.
- ``predict``: ``iter_prediction_chunks`` at the model input size (decode + resize + ImageNet
  normalisation, chunks of 96 with 4 frames of context as the context model needs), including
  its per-video setup (validation, DALI pipeline build).
- ``train``: ``make_unlabeled_loader`` with augmentation (random 16-frame sequences, batch 8),
  steady state after the first batch: random access, so decoding forward from the previous
  keyframe dominates on long-GOP video.

Each figure is the median over ``--repeats`` runs in frames/s; ratios are against PyAV on the
same video and row. Results go to bench/results/video_cpu.json or video_gpu.json.

On CPU each measurement covers the first 384 frames (``--frames``) so the run stays short on a
small machine; with ``--gpu`` the whole clip.

Usage: python bench/video.py [--gpu] [--repeats 3] [--frames N] [--video PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, SHARED_DATA, cpu_model  # noqa: E402

from lpray.data.clips import make_unlabeled_loader  # noqa: E402
from lpray.data.geometry import to_frame_matrix  # noqa: E402
from lpray.data.video import OpenCVReader, PyAVReader  # noqa: E402
from lpray.data.warp import warp_normalise  # noqa: E402
from lpray.inference.chunks import iter_prediction_chunks  # noqa: E402

DEFAULT_VIDEO = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"
CHUNK, CONTEXT = 96, 4
TRAIN_BATCH, TRAIN_SEQUENCE, TRAIN_BATCHES = 8, 16, 6


def reencode_vp9(source: Path, folder: Path) -> Path:
    """A VP9 .webm copy of ``source`` (same frames, same rate, keyframe every 200 frames)."""
    target = folder / (source.stem + "_vp9.webm")
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        src = inp.streams.video[0]
        rate = src.average_rate or Fraction(30)
        stream = out.add_stream("libvpx-vp9", rate=rate)
        stream.width, stream.height, stream.pix_fmt = src.width, src.height, "yuv420p"
        stream.codec_context.gop_size = 200
        stream.options = {"crf": "30", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        for i, frame in enumerate(inp.decode(src)):
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return target


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(
    run: Callable[[int], int | tuple[int, float]], device: str, repeats: int, limit: int
) -> dict:
    """Median frames/s over ``repeats`` runs; ``run`` returns its frame count, or the count and
    the seconds it timed itself."""
    rates = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = run(limit)
        sync(device)
        frames, seconds = out if isinstance(out, tuple) else (out, time.perf_counter() - start)
        rates.append(frames / seconds)
    return {"fps": statistics.median(rates), "runs": rates, "frames": frames}


def pyav_decode(video: Path, limit: int) -> int:
    count = 0
    with PyAVReader(video) as reader:
        for chunk in reader.iter_chunks(CHUNK):
            count += len(chunk)
            if count >= limit:
                break
    return count


def opencv_decode(video: Path, size: tuple[int, int] | None, device: str, limit: int) -> int:
    """OpenCV decode, plus lpray's resize/normalise on ``device`` when ``size`` is given."""
    reader = OpenCVReader(video)
    frame_size = (reader.info.height, reader.info.width)
    to_frame = (
        torch.from_numpy(to_frame_matrix(np.eye(2, 3), frame_size, size)).float() if size else None
    )
    count = 0
    for chunk in reader.iter_chunks(CHUNK):
        if size:
            warp_normalise(torch.from_numpy(chunk).to(device), to_frame, size)
        count += len(chunk)
        if count >= limit:
            break
    reader.close()
    return count


def dali_decode(video: Path, gpu: bool, limit: int) -> int:
    """Bare DALI reader (no preprocessing), chunks of CHUNK, tail padded."""
    from nvidia.dali import fn, pipeline_def  # noqa: PLC0415

    @pipeline_def(batch_size=1, num_threads=2, device_id=0 if gpu else None)
    def bare():
        return fn.experimental.readers.video(
            device="gpu" if gpu else "cpu",
            filenames=[str(video)],
            sequence_length=CHUNK,
            pad_mode="edge",
            name="reader",
        )

    pipe = bare()
    pipe.build()
    batches = min(pipe.epoch_size("reader"), -(-limit // CHUNK))
    for _ in range(batches):
        pipe.run()
    return batches * CHUNK


def predict(video: Path, size: tuple[int, int], backend: str, device: str, limit: int) -> int:
    count = 0
    for chunk in iter_prediction_chunks(str(video), size, CHUNK, CONTEXT, backend, device):
        count += int(chunk["valid"].sum())
        if count >= limit:
            break
    return count


def train(
    video: Path, size: tuple[int, int], backend: str, device: str, limit: int
) -> tuple[int, float]:
    """Steady-state training-loader rate: the first batch (validation, pipeline build, shuffle
    buffer fill) is taken before the clock starts."""
    loader = make_unlabeled_loader(
        [str(video)], TRAIN_SEQUENCE, TRAIN_BATCH, size, backend, augment=True, device=device
    )
    next(loader)
    sync(device)
    start = time.perf_counter()
    batches = max(1, min(TRAIN_BATCHES, limit // (TRAIN_BATCH * TRAIN_SEQUENCE)))
    for _ in range(batches):
        next(loader)
    sync(device)
    seconds = time.perf_counter() - start
    loader.close()
    return TRAIN_BATCH * TRAIN_SEQUENCE * batches, seconds


def machine(note: str) -> dict:
    import nvidia.dali  # noqa: PLC0415

    info = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus_visible": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "ffmpeg_libavcodec": av.library_versions.get("libavcodec"),
        "dali": nvidia.dali.__version__,
        "note": note,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def cases(video: Path, vp9: Path | None, size, gpu: bool) -> list[tuple[str, str, str, Callable]]:
    """(row, video label, reader, run(limit)) for every measurement."""
    if gpu:
        dev = "cuda"
        rows = [
            ("decode", "h264", "pyav", lambda n: pyav_decode(video, n)),
            ("decode", "h264", "dali-gpu", lambda n: dali_decode(video, True, n)),
            ("predict", "h264", "pyav", lambda n: predict(video, size, "pyav", dev, n)),
            ("predict", "h264", "dali-gpu", lambda n: predict(video, size, "dali", dev, n)),
            ("train", "h264", "pyav", lambda n: train(video, size, "pyav", dev, n)),
            ("train", "h264", "dali-gpu", lambda n: train(video, size, "dali", dev, n)),
        ]
        if opencv_available():
            rows += [
                ("decode", "h264", "opencv", lambda n: opencv_decode(video, None, dev, n)),
                ("predict", "h264", "opencv", lambda n: opencv_decode(video, size, dev, n)),
            ]
        return rows
    return [
        ("decode", "h264", "pyav", lambda n: pyav_decode(video, n)),
        ("predict", "h264", "pyav", lambda n: predict(video, size, "pyav", "cpu", n)),
        ("train", "h264", "pyav", lambda n: train(video, size, "pyav", "cpu", n)),
        ("decode", "vp9", "pyav", lambda n: pyav_decode(vp9, n)),
        ("decode", "vp9", "dali-cpu", lambda n: dali_decode(vp9, False, n)),
        ("predict", "vp9", "pyav", lambda n: predict(vp9, size, "pyav", "cpu", n)),
        ("predict", "vp9", "dali-cpu", lambda n: predict(vp9, size, "dali", "cpu", n)),
        ("train", "vp9", "pyav", lambda n: train(vp9, size, "pyav", "cpu", n)),
        ("train", "vp9", "dali-cpu", lambda n: train(vp9, size, "dali", "cpu", n)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="DALI GPU vs PyAV vs OpenCV on H.264")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per measurement (default: 384 on CPU, the whole video with --gpu)",
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--note", default="", help="free text stored with the machine description")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.video.exists():
        raise SystemExit(f"video not found: {args.video}")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA machine")
    size = (args.image_size, args.image_size)
    limit = args.frames or (10**9 if args.gpu else 4 * CHUNK)
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lpray-bench-") as folder:
        vp9 = None if args.gpu else reencode_vp9(args.video, Path(folder))
        device = "cuda" if args.gpu else "cpu"
        for row, label, reader, run in cases(args.video, vp9, size, args.gpu):
            run(CHUNK)  # warm-up: file cache, DALI/FFmpeg libraries, CUDA context
            result = timed(run, device, args.repeats, limit)
            results.append({"row": row, "video": label, "reader": reader, **result})
            print(f"  {row:8s} {label:5s} {reader:9s} {result['fps']:9.1f} frames/s", flush=True)
    for r in results:
        base = [
            b
            for b in results
            if (b["row"], b["video"], b["reader"]) == (r["row"], r["video"], "pyav")
        ]
        r["vs_pyav"] = r["fps"] / base[0]["fps"] if base else None
    print()
    print(f"{'row':8s} {'video':5s} {'reader':9s} {'frames/s':>10s} {'x pyav':>7s}")
    for r in results:
        print(
            f"{r['row']:8s} {r['video']:5s} {r['reader']:9s} {r['fps']:10.1f} {r['vs_pyav']:7.2f}"
        )
    report = {
        "machine": machine(args.note),
        "video": str(args.video),
        "image_size": size,
        "chunk": CHUNK,
        "context": CONTEXT,
        "train": {"batch": TRAIN_BATCH, "sequence": TRAIN_SEQUENCE, "batches": TRAIN_BATCHES},
        "repeats": args.repeats,
        "frames_per_measurement": limit,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    out = args.out or RESULTS / ("video_gpu.json" if args.gpu else "video_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

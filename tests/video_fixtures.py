"""Small test videos made with PyAV, whose every frame says which frame it is.

Frame ``i`` (greyscale content, like the lab videos) carries the bits of ``i`` as bright 8x8
blocks along the top row and a square whose position moves with ``i``; :func:`frame_index_of`
reads the index back from a decoded frame, so a test can tell which frame a reader returned
without trusting the reader. :func:`write_dot_video` draws one bright Gaussian dot at known
sub-pixel positions instead, the ground truth for ``to_frame``.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
BLOCK = 8
DARK, BRIGHT = 40, 220

# codec name -> (PyAV encoder, pixel format, file suffix, encoder options)
CODECS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    # lossless VP9: decoded frames equal the drawn ones (up to the RGB->YUV->RGB round trip)
    "vp9": ("libvpx-vp9", "yuv420p", ".webm", {"lossless": "1"}),
    "mjpeg": ("mjpeg", "yuvj420p", ".avi", {"q:v": "2"}),
    # B-frames on purpose: presentation order differs from decode order
    "h264": ("libx264", "yuv420p", ".mp4", {"crf": "12", "bf": "2"}),
}


def index_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Greyscale (height, width) uint8 frame encoding ``index`` (bits in the top block row)."""
    img = np.full((height, width), DARK, np.uint8)
    bits = width // BLOCK
    if index >= 2**bits:
        raise ValueError(f"{width} px wide frames encode indices below {2**bits}")
    for b in range(bits):
        if (index >> b) & 1:
            img[0:BLOCK, b * BLOCK : (b + 1) * BLOCK] = BRIGHT
    x = 4 + (index * 3) % (width - 16)
    img[height // 2 - 6 : height // 2 + 6, x : x + 12] = 180
    return img


def frame_index_of(frame: np.ndarray) -> int:
    """Read the index back from a decoded (H, W) or (H, W, 3) frame."""
    grey = frame if frame.ndim == 2 else frame[..., 0]
    bits = grey.shape[1] // BLOCK
    means = [grey[2 : BLOCK - 2, b * BLOCK + 2 : (b + 1) * BLOCK - 2].mean() for b in range(bits)]
    return sum(1 << b for b, m in enumerate(means) if m > (DARK + BRIGHT) / 2)


def write_video(
    path: str | Path,
    codec: str = "vp9",
    n_frames: int = 40,
    fps: int = 25,
    gop: int = 10,
    draw: Callable[[int], np.ndarray] | None = None,
    pts_ms: list[int] | None = None,
    colorspace: int | None = None,
) -> str:
    """Encode ``n_frames`` frames drawn by ``draw(i)`` (default :func:`index_frame`).

    Args:
        path: output file; its suffix should match the codec's container.
        codec: "vp9" (.webm), "mjpeg" (.avi) or "h264" (.mp4).
        n_frames: frame count.
        fps: nominal rate.
        gop: keyframe interval, small so seeking is exercised.
        draw: frame i -> (H, W) greyscale or (H, W, 3) RGB uint8.
        pts_ms: explicit presentation times in ms (uneven values make a variable-frame-rate file).
        colorspace: FFmpeg AVColorSpace code to convert with and tag (1 = BT.709); None: untagged.
    """
    encoder, pix_fmt, _, options = CODECS[codec]
    draw = draw or index_frame
    first = draw(0)
    container = av.open(str(path), "w")
    stream = container.add_stream(encoder, rate=fps)
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = pix_fmt
    if colorspace is not None:  # tag the stream (and each frame below) with this matrix
        stream.codec_context.colorspace = colorspace
    stream.codec_context.gop_size = gop
    stream.options = dict(options)
    if pts_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    for i in range(n_frames):
        drawn = draw(i)
        rgb = drawn if drawn.ndim == 3 else np.stack([drawn] * 3, -1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace)
        if pts_ms is not None:
            frame.pts = pts_ms[i]
            frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def make_video(folder: str | Path, codec: str, n_frames: int = 40, **kwargs) -> str:
    """:func:`write_video` into ``folder`` with the codec's usual suffix."""
    suffix = CODECS[codec][2]
    return write_video(Path(folder) / f"{codec}_{n_frames}{suffix}", codec, n_frames, **kwargs)


def make_vfr_video(folder: str | Path, n_frames: int = 40) -> str:
    """H.264 .mp4 whose frame spacing alternates 30/50 ms: variable frame rate."""
    pts = np.cumsum([0] + [30 if i % 2 else 50 for i in range(n_frames - 1)]).tolist()
    return write_video(Path(folder) / "vfr.mp4", "h264", n_frames, pts_ms=pts)


def make_truncated_video(folder: str | Path) -> str:
    """An .mp4 cut to a third of its size: the index (moov atom, written last) is missing."""
    whole = write_video(Path(folder) / "whole.mp4", "h264", 40)
    data = Path(whole).read_bytes()
    path = Path(folder) / "truncated.mp4"
    path.write_bytes(data[: len(data) // 3])
    return str(path)


def make_garbage_video(folder: str | Path) -> str:
    """Random bytes named like a video."""
    path = Path(folder) / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return str(path)


def dot_frame(x: float, y: float, width: int, height: int, sigma: float = 2.0) -> np.ndarray:
    """A dark (height, width) frame with one bright Gaussian dot centred at pixel coords (x, y)
    (centre of pixel column j is x = j)."""
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.clip(20 + 220 * blob, 0, 255).round().astype(np.uint8)


def dot_position(index: int, width: int, height: int) -> tuple[float, float]:
    """The dot's true position in frame ``index``: a slow sub-pixel path near the centre."""
    return (
        width * 0.5 + 0.25 * width * np.sin(0.37 * index) + 0.3,
        height * 0.5 + 0.25 * height * np.cos(0.23 * index) - 0.2,
    )


def make_dot_video(
    folder: str | Path, codec: str = "vp9", n_frames: int = 30, width: int = 120, height: int = 96
) -> str:
    """A video of one moving dot at :func:`dot_position` (ground truth for ``to_frame``)."""
    suffix = CODECS[codec][2]
    return write_video(
        Path(folder) / f"dot_{codec}{suffix}",
        codec,
        n_frames,
        draw=lambda i: dot_frame(*dot_position(i, width, height), width, height),
    )


def make_lying_avi(folder: str | Path, n_frames: int = 40, claimed: int = 500) -> str:
    """An MJPEG .avi whose headers (avih dwTotalFrames, strh dwLength) claim ``claimed`` frames."""
    data = bytearray(Path(make_video(folder, "mjpeg", n_frames)).read_bytes())
    main = data.find(b"avih") + 8 + 16
    stream = data.find(b"strh") + 8 + 32
    for offset in (main, stream):
        data[offset : offset + 4] = int(claimed).to_bytes(4, "little")
    path = Path(folder) / "lying.avi"
    path.write_bytes(bytes(data))
    return str(path)


def make_10bit_video(folder: str | Path, n_frames: int = 5) -> str:
    """A lossless FFV1 .mkv in 10-bit yuv420p10le, a pixel format lpray refuses."""
    path = Path(folder) / "tenbit.mkv"
    container = av.open(str(path), "w")
    stream = container.add_stream("ffv1", rate=25)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p10le"
    for i in range(n_frames):
        rgb = np.stack([index_frame(i)] * 3, -1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p10le")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)

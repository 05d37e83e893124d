"""Colour conversion of raw 4:2:0 planes (lpray.data.yuv) against PyAV's own RGB output.

The GPU prediction path uploads decoded I420 planes and converts them with torch; it must give
the frames the reference reader gives. Truth here is swscale's conversion of the same decoded
frames, in its exact mode and in the fast default PyAV uses (rgb24), on colour clips (saturated
colours expose a wrong matrix or range at once).
"""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import Interpolation

from lpray.data.video import PyAVReader, VideoError
from lpray.data.yuv import yuv420_layout, yuv420_to_rgb

import video_fixtures as vf

BT709 = 1


def colour_frame(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Saturated colour blocks plus smooth gradients, shifting with ``index``."""
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack(
        [
            (xs * 255 // (width - 1) + 7 * index) % 256,
            (ys * 255 // (height - 1)) % 256,
            ((xs + ys) * 3 + 11 * index) % 256,
        ],
        -1,
    ).astype(np.uint8)
    rgb[4:20, 4:20] = (255, 0, 0)
    rgb[4:20, 24:40] = (0, 255, 0)
    rgb[24:40, 4:20] = (0, 0, 255)
    rgb[24:40, 24:40] = (255, 255, 0)
    return rgb


def decoded(path: str, interpolation: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every frame's raw planes, and its RGB from swscale (PyAV's default conversion, or the
    one with the given interpolation flags)."""
    with PyAVReader(path) as reader:
        planes = reader.read(0, len(reader), planes=True)
        if interpolation is None:
            return planes, reader.read(0, len(reader))
    with av.open(path) as container:
        frames = container.decode(container.streams.video[0])
        rgb = [f.reformat(format="rgb24", interpolation=interpolation).to_ndarray() for f in frames]
    return planes, np.stack(rgb)


# swscale's exact path: nearest chroma, full chroma interpolation in and out, accurate rounding
EXACT = int(
    Interpolation.POINT
    | Interpolation.ACCURATE_RND
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)


def colour_clip(tmp_path, codec: str, colorspace: int | None = None) -> str:
    suffix = vf.CODECS[codec][2]
    return vf.write_video(
        tmp_path / f"colour{suffix}", codec, n_frames=12, draw=colour_frame, colorspace=colorspace
    )


@pytest.mark.parametrize(("codec", "full_range"), [("vp9", False), ("mjpeg", True)])
def test_planes_convert_like_swscales_exact_mode(tmp_path, codec, full_range):
    path = colour_clip(tmp_path, codec)
    layout = yuv420_layout(path)
    assert layout is not None
    assert (layout.full_range, layout.kr) == (full_range, 0.299)
    planes, truth = decoded(path, EXACT)
    assert planes.shape == (12, layout.plane_bytes)
    converted = yuv420_to_rgb(torch.from_numpy(planes), layout).numpy().astype(int)
    diff = np.abs(converted - truth.astype(int))
    assert diff.max() <= 1
    assert diff.mean() < 0.05


@pytest.mark.parametrize(
    ("codec", "colorspace", "kr"),
    [("vp9", None, 0.299), ("h264", None, 0.299), ("h264", BT709, 0.2126)],
)
def test_planes_stay_near_the_readers_rgb_and_follow_the_matrix_tag(
    tmp_path, codec, colorspace, kr
):
    """The reader's RGB (swscale's fast default) rounds with a bias of about one grey level;
    the wrong matrix would be off by tens of levels on these saturated colours."""
    path = colour_clip(tmp_path, codec, colorspace)
    layout = yuv420_layout(path)
    assert layout is not None and layout.kr == kr
    planes, rgb = decoded(path)
    converted = yuv420_to_rgb(torch.from_numpy(planes), layout).numpy().astype(int)
    diff = converted - rgb.astype(int)
    assert np.abs(diff).max() <= 3
    assert abs(diff.mean()) < 2
    other = dataclasses.replace(layout, kr=0.2126 if kr == 0.299 else 0.299)
    wrong = yuv420_to_rgb(torch.from_numpy(planes), other).numpy().astype(int)
    assert np.abs(wrong - rgb.astype(int)).max() > 10


def test_layout_refuses_what_it_cannot_convert_exactly(tmp_path):
    odd = vf.write_video(
        tmp_path / "odd.webm", "vp9", n_frames=3, draw=lambda i: np.full((47, 63), 90, np.uint8)
    )
    assert yuv420_layout(odd) is None
    with PyAVReader(odd) as reader, pytest.raises(ValueError, match="even frame sides"):
        reader.read(0, 1, planes=True)


def test_planes_refuse_a_non_420_stream(tmp_path):
    path = str(tmp_path / "rgb444.mp4")
    import av  # noqa: PLC0415

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(colour_frame(i), format="rgb24")
            for packet in stream.encode(frame.reformat(format="yuv444p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert yuv420_layout(path) is None
    with PyAVReader(path) as reader, pytest.raises(VideoError, match="not 4:2:0"):
        reader.read(0, 2, planes=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_pyav_prediction_chunks_equal_the_cpu_ones(tmp_path):
    from lpray.inference.chunks import iter_prediction_chunks  # noqa: PLC0415

    path = vf.write_video(tmp_path / "c.mp4", "h264", n_frames=50, draw=colour_frame)
    kwargs = {"chunk_size": 16, "context": 2, "backend": "pyav"}
    cpu = list(iter_prediction_chunks(path, (40, 56), device="cpu", **kwargs))
    gpu = list(iter_prediction_chunks(path, (40, 56), device="cuda", **kwargs))
    assert len(cpu) == len(gpu) == 4
    for a, b in zip(cpu, gpu, strict=True):
        assert np.array_equal(a["valid_frames"], b["valid_frames"])
        # three grey levels (the reader's swscale rounding), in ImageNet-normalised units
        assert (a["frames"] - b["frames"].cpu()).abs().max() <= 3.01 / (255 * 0.224)

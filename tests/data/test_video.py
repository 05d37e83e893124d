"""Probing, validation and frame-exact reading (lpray.data.video).

The truth is independent of the reader: every fixture frame encodes its own index
(video_fixtures.index_frame), and the lossless VP9 fixture must decode to the drawn pixels.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from lpray.data.video import PyAVReader, VideoError, probe_video, validate_video

import video_fixtures as vf
from conftest import SHARED_DATA

CODECS = ["vp9", "mjpeg", "h264"]
MIRROR_MOUSE = SHARED_DATA / "mirror-mouse-example" / "videos" / "test_vid.mp4"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("videos")
    return {codec: vf.make_video(folder, codec, 37) for codec in CODECS}


@pytest.mark.parametrize(
    "codec, name, pix_fmt",
    [("vp9", "vp9", "yuv420p"), ("mjpeg", "mjpeg", "yuvj420p"), ("h264", "h264", "yuv420p")],
)
def test_probe_fields(videos, codec, name, pix_fmt):
    info = probe_video(videos[codec])
    assert (info.codec, info.pix_fmt) == (name, pix_fmt)
    assert (info.width, info.height) == (vf.WIDTH, vf.HEIGHT)
    assert info.n_frames == 37
    assert info.fps == pytest.approx(25.0)
    assert info.variable_frame_rate is False
    assert info.path == videos[codec]


def test_frame_count_ignores_lying_container_header(tmp_path):
    path = vf.make_lying_avi(tmp_path, n_frames=40, claimed=500)
    with av.open(path) as container:
        assert container.streams.video[0].frames == 500  # the header lies
    assert probe_video(path).n_frames == 40


@pytest.mark.parametrize("codec", CODECS)
def test_sequential_decoding_returns_each_frame_in_order(videos, codec):
    with PyAVReader(videos[codec]) as reader:
        frames = np.concatenate(list(reader.iter_chunks(8)))
    assert frames.shape == (37, vf.HEIGHT, vf.WIDTH, 3) and frames.dtype == np.uint8
    assert [vf.frame_index_of(f) for f in frames] == list(range(37))


def test_lossless_vp9_decodes_to_the_drawn_pixels(videos):
    with PyAVReader(videos["vp9"]) as reader:
        frames = reader.read(0, 37)
    drawn = np.stack([vf.index_frame(i) for i in range(37)])
    # RGB -> yuv420p (limited range) -> RGB rounds by at most 2 grey levels; greyscale content
    # has no chroma to lose.
    assert np.abs(frames.astype(int) - drawn[..., None]).max() <= 2
    assert np.array_equal(frames[..., 0], frames[..., 1])


@pytest.mark.parametrize("codec", CODECS)
def test_read_after_seek_equals_sequential_decoding(videos, codec):
    with PyAVReader(videos[codec]) as reader:
        sequential = reader.read(0, 37)
    # Keyframes every 10 frames: these reads seek backwards, across keyframes, onto keyframes,
    # to the last frame, and continue forwards without seeking.
    requests = [(36, 1), (3, 5), (25, 4), (29, 3), (10, 1), (0, 2), (19, 12), (31, 6), (9, 2)]
    with PyAVReader(videos[codec]) as reader:
        for start, count in requests:
            got = reader.read(start, count)
            assert np.array_equal(got, sequential[start : start + count]), (start, count)
            assert [vf.frame_index_of(f) for f in got] == list(range(start, start + count))


def test_read_rejects_frames_outside_the_video(videos):
    with PyAVReader(videos["vp9"]) as reader:
        assert len(reader) == 37
        with pytest.raises(IndexError):
            reader.read(35, 3)
        with pytest.raises(IndexError):
            reader.read(-1, 1)


def test_variable_frame_rate_is_refused_with_a_reencode_command(tmp_path):
    path = vf.make_vfr_video(tmp_path)
    assert probe_video(path).variable_frame_rate is True
    with pytest.raises(VideoError) as err:
        validate_video(path)
    message = str(err.value)
    assert path in message and "variable frame rate" in message
    assert "ffmpeg -i" in message and "-pix_fmt yuv420p" in message
    assert validate_video(path, allow_variable_frame_rate=True).n_frames == 40


def test_unsupported_pixel_format_is_refused_with_a_reencode_command(tmp_path):
    path = vf.make_10bit_video(tmp_path)
    with pytest.raises(VideoError, match="yuv420p10le") as err:
        validate_video(path)
    assert path in str(err.value) and "ffmpeg -i" in str(err.value)


@pytest.mark.parametrize(
    "make, problem",
    [
        (vf.make_truncated_video, "cannot open"),
        (vf.make_garbage_video, "cannot open"),
        (lambda folder: str(Path(folder) / "missing.mp4"), "no such file"),
        (lambda folder: str(folder), "not a regular file"),
    ],
)
def test_bad_files_raise_video_error_naming_the_file(tmp_path, make, problem):
    path = make(tmp_path)
    for call in (validate_video, probe_video, PyAVReader):
        with pytest.raises(VideoError, match=problem) as err:
            call(path)
        assert path in str(err.value)
        assert isinstance(err.value, ValueError)


def test_valid_video_passes_validation(videos):
    assert validate_video(videos["h264"]) == probe_video(videos["h264"])


@pytest.mark.skipif(not MIRROR_MOUSE.exists(), reason=f"real data not present at {MIRROR_MOUSE}")
def test_mirror_mouse_probe_and_frame_500():
    info = validate_video(MIRROR_MOUSE)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.n_frames, info.width, info.height) == (994, 396, 406)
    assert info.fps == pytest.approx(250.0)
    with PyAVReader(MIRROR_MOUSE) as reader:
        direct = reader.read(500, 2)
    # independent sequential decode with plain PyAV, no lpray code
    with av.open(str(MIRROR_MOUSE)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 500:
                frame_500 = frame.to_ndarray(format="rgb24")
            if i == 501:
                frame_501 = frame.to_ndarray(format="rgb24")
                break
    assert direct.shape == (2, 406, 396, 3)
    assert np.array_equal(direct[0], frame_500) and np.array_equal(direct[1], frame_501)
    assert not np.array_equal(frame_500, frame_501)

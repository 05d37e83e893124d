"""Video probing, validation and the frame-exact CPU reader.

Every frame in lpray is addressed by its index in presentation order: frame ``i`` is the ``i``-th
frame a decoder outputs when it plays the file from the start. Labels, predictions, the DALI
pipelines and this reader all use that numbering, so a reader that seeks must land on exactly the
frame a sequential decode would produce. :class:`PyAVReader` guarantees it by building an index of
every packet's presentation timestamp (pts) up front, seeking to the keyframe at or before the
wanted frame, decoding forward and checking each decoded frame's pts against the index.

Bad input is caught here, before any DALI pipeline sees it: :func:`validate_video` turns a missing,
corrupt, truncated, variable-frame-rate or oddly encoded file into a :class:`VideoError` that names
the file, the problem, and (where re-encoding fixes it) the exact ``ffmpeg`` command to run.

Truncation (a copy or recording cut short) is told apart from the other problems: an MP4/MOV whose
sample table (the ``moov`` atom, which a "faststart" file carries before the data) lists more
frames than the file holds data for, a last group of pictures with frames missing, or a stream
that stops decoding before its last indexed frame is reported as "truncated", with the frame
where it ends, never tracked silently as a shorter video nor mistaken for a variable frame rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lpray.errors import UserError

# Pixel formats every backend decodes to 8-bit RGB without surprises. Others (10-bit, alpha,
# palette) are refused with a re-encode command rather than silently mangled.
SUPPORTED_PIX_FMTS = frozenset(
    {
        "yuv420p",
        "yuvj420p",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
        "nv12",
        "gray",
        "rgb24",
        "bgr24",
    }
)

# 8-bit 4:2:0 formats whose raw planes PyAVReader can hand out (planes=True).
PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})

# A timestamp step may differ from the mean step by this many time-base ticks (containers round
# pts, e.g. WebM stores milliseconds, so 30 fps alternates 33/34 ms) or by this fraction of the
# mean step, whichever is larger, before the video counts as variable frame rate.
_VFR_TICKS = 1.01
_VFR_FRACTION = 0.02


class VideoError(UserError, ValueError):
    """A video lpray cannot read reliably; the message names the file and the fix."""


@dataclass(frozen=True)
class VideoInfo:
    """What lpray needs to know about a video before reading it.

    Attributes:
        path: the file, as given.
        codec: FFmpeg decoder name (``h264``, ``vp9``, ``mjpeg``, ...).
        pix_fmt: FFmpeg pixel format of the coded frames (``yuv420p``, ...).
        width: frame width in pixels.
        height: frame height in pixels.
        n_frames: exact frame count: the number of video packets carrying data, counted by
            demuxing the whole file (container headers are not trusted; the same count DALI's
            frame index builds).
        fps: nominal frame rate (the stream's average rate, else from the timestamps).
        variable_frame_rate: True when the presentation timestamps are not evenly spaced.
        declared_frames: the frame count the container declares: exact for MP4/MOV (the
            sample table lists every frame), from the duration times the rate for a WebM/MKV
            holding only the video (exact to one frame); None where headers are not to be
            trusted (AVI headers are often wrong) or say nothing.
        declared_exact: whether ``declared_frames`` is exact (else it may be one frame off).
    """

    path: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    n_frames: int
    fps: float
    variable_frame_rate: bool
    declared_frames: int | None = None
    declared_exact: bool = True

    @property
    def truncated(self) -> bool:
        """True when the container declares more frames than the file holds."""
        if self.declared_frames is None:
            return False
        return self.n_frames < self.declared_frames - (0 if self.declared_exact else 1)


@dataclass(frozen=True)
class _Index:
    """Presentation timestamps of every frame (sorted) and of the keyframes, in stream ticks."""

    pts: np.ndarray
    keyframe_pts: np.ndarray
    time_base: Fraction


def reencode_command(path: str | os.PathLike, fps: float | None = None) -> str:
    """The ffmpeg command that turns ``path`` into a constant-rate 8-bit yuv420p H.264 file.

    Args:
        path: the offending video.
        fps: the frame rate to force; rounded to 3 decimals; 30 when unknown.
    """
    rate = 30 if not fps or not np.isfinite(fps) else round(float(fps), 3)
    rate_text = f"{rate:g}"
    stem = Path(path).with_suffix("")
    return (
        f"ffmpeg -i {path} -vf fps={rate_text} -c:v libx264 -pix_fmt yuv420p -crf 18 {stem}_cfr.mp4"
    )


def _open(path: str) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning every failure into a :class:`VideoError`."""
    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a regular file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(
            f"{path}: cannot open as a video (corrupt or not a video file): {exc}"
        ) from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: contains no video stream")
    return container


def _scan(container: av.container.InputContainer, path: str) -> _Index:
    """Demux every packet of the first video stream and index its timestamps.

    Demuxing reads the file but decodes nothing, so it is fast (about 10 ms for the 994-frame
    mirror-mouse clip) and exact where container headers may lie about the frame count.
    """
    stream = container.streams.video[0]
    pts: list[int] = []
    keys: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                raise VideoError(
                    f"{path}: packet {len(pts)} has no timestamp, so frames cannot be addressed "
                    f"reliably; re-encode it: {reencode_command(path)}"
                )
            pts.append(int(stamp))
            if packet.is_keyframe:
                keys.append(int(stamp))
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: corrupt stream after {len(pts)} packets: {exc}") from exc
    if not pts:
        raise VideoError(f"{path}: the video stream holds no frames")
    order = np.sort(np.asarray(pts, dtype=np.int64))
    if np.any(np.diff(order) == 0):
        raise VideoError(
            f"{path}: two frames share one timestamp; re-encode it: {reencode_command(path)}"
        )
    if not keys:
        raise VideoError(f"{path}: no keyframe found; re-encode it: {reencode_command(path)}")
    time_base = stream.time_base or Fraction(1, 1)
    return _Index(pts=order, keyframe_pts=np.sort(np.asarray(keys, np.int64)), time_base=time_base)


def _uneven_steps(pts: np.ndarray) -> np.ndarray:
    """Indices ``i`` of the timestamp steps ``pts[i] -> pts[i + 1]`` that deviate from the mean
    step by more than rounding explains."""
    if len(pts) < 3:
        return np.zeros(0, dtype=np.int64)
    steps = np.diff(pts).astype(np.float64)
    mean = (pts[-1] - pts[0]) / (len(pts) - 1)
    tolerance = max(_VFR_TICKS, _VFR_FRACTION * mean)
    return np.flatnonzero(np.abs(steps - mean) > tolerance)


def _is_variable_rate(pts: np.ndarray) -> bool:
    """True when the timestamp steps deviate from their mean by more than rounding explains."""
    return bool(len(_uneven_steps(pts)))


def _regular_steps(pts: np.ndarray) -> bool:
    """True when every step is a whole multiple of the most common step (missing frames of a
    constant-rate stream, not a variable rate)."""
    if len(pts) < 3:
        return True
    steps = np.diff(pts).astype(np.float64)
    values, counts = np.unique(steps, return_counts=True)
    base = values[np.argmax(counts)]
    if base <= 0:
        return False
    ratio = steps / base
    return bool(np.all(np.abs(ratio - np.round(ratio)) * base <= max(_VFR_TICKS, 0.02 * base)))


def _truncation_problem(info: VideoInfo, index: _Index) -> str | None:
    """Why ``info``'s file looks cut short, or None.

    Two signs, both checked before any frame-rate diagnosis (a cut in the middle of a group of
    pictures leaves gaps in the last timestamps, which would otherwise look like a variable
    frame rate): the container's index lists more frames than the file holds, or the only uneven
    timestamp steps lie in the last group of pictures and are whole missing frames.
    """
    n = info.n_frames
    if info.truncated:
        what = "index lists" if info.declared_exact else "duration makes"
        return (
            f"truncated: the container's {what} {info.declared_frames} frames but the file "
            f"holds data for only {n} (it ends after frame {n - 1}); the file was cut short "
            "(an interrupted copy, download or recording): copy or export it again"
        )
    uneven = _uneven_steps(index.pts)
    if len(uneven) and len(index.keyframe_pts) > 1:
        last_key = int(np.searchsorted(index.pts, index.keyframe_pts[-1]))
        if uneven.min() >= last_key and _regular_steps(index.pts):
            return (
                f"truncated: frames are missing from its last group of pictures (after frame "
                f"{last_key}, of {n}); the file was cut short: copy or export it again"
            )
    return None


def _info_from(container: av.container.InputContainer, index: _Index, path: str) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    n = len(index.pts)
    if stream.average_rate:
        fps = float(stream.average_rate)
    elif n > 1:
        fps = float((n - 1) / ((index.pts[-1] - index.pts[0]) * index.time_base))
    else:
        fps = float("nan")
    return VideoInfo(
        path=path,
        codec=ctx.name,
        pix_fmt=ctx.pix_fmt or "unknown",
        width=int(ctx.width),
        height=int(ctx.height),
        n_frames=n,
        fps=fps,
        variable_frame_rate=_is_variable_rate(index.pts),
        **_declared_frames(container),
    )


def _declared_frames(container: av.container.InputContainer) -> dict[str, int | bool | None]:
    """The frame count the container declares (``VideoInfo.declared_*`` fields)."""
    stream = container.streams.video[0]
    name = container.format.name
    if name.startswith("mov") and stream.frames:  # the sample table: one entry per frame
        return {"declared_frames": int(stream.frames), "declared_exact": True}
    # Matroska/WebM: the segment duration, if the video is all the file holds (an audio track
    # may run longer than the video)
    if "matroska" in name and len(container.streams) == 1 and container.duration:
        if stream.average_rate:
            seconds = container.duration / av.time_base
            count = round(seconds * float(stream.average_rate))
            return {"declared_frames": int(count), "declared_exact": False}
    return {"declared_frames": None, "declared_exact": True}


def _probe_with_index(path: str | os.PathLike) -> tuple[VideoInfo, _Index]:
    text = str(path)
    container = _open(text)
    try:
        index = _scan(container, text)
        return _info_from(container, index, text), index
    finally:
        container.close()


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Describe a video, counting its frames exactly.

    Args:
        path: a local video file.

    Raises:
        VideoError: the file is missing, unreadable, has no video stream, no frames, or frames
            without timestamps.
    """
    return _probe_with_index(path)[0]


def _decode_to_end(path: str, index: _Index, n_frames: int) -> None:
    """Decode the last group of pictures (from the last keyframe to the end), so a stream that
    stops decoding before its last indexed frame fails now, saying where, not mid-run."""
    key = int(np.searchsorted(index.pts, index.keyframe_pts[-1]))
    try:
        with PyAVReader(path) as reader:
            reader.read(key, n_frames - key)
    except VideoError as err:
        raise VideoError(
            f"{path}: truncated or corrupt at the end: frames {key}..{n_frames - 1} (of "
            f"{n_frames}) do not all decode ({str(err).removeprefix(f'{path}: ')}); copy or export "
            "the file again"
        ) from err


def _decode_first_frame(path: str) -> None:
    """Decode one frame so a file with a valid header but broken data fails now, not mid-run."""
    container = _open(path)
    try:
        for _ in container.decode(video=0):
            return
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: the first frame does not decode (corrupt data?): {exc}") from exc
    finally:
        container.close()
    raise VideoError(f"{path}: no frame decodes (corrupt data?)")


def validate_video(path: str | os.PathLike, allow_variable_frame_rate: bool = False) -> VideoInfo:
    """Probe a video and refuse the ones lpray cannot read frame-exactly.

    Args:
        path: a local video file.
        allow_variable_frame_rate: accept uneven timestamps. Off by default because frame
            indices of such files disagree between tools that seek by time (OpenCV, DALI's
            legacy reader) and tools that count frames, so labels silently land on wrong frames.

    Returns:
        The video's :class:`VideoInfo`.

    Raises:
        VideoError: naming the file and the problem; a file cut short says "truncated" and
            where it ends; for a variable frame rate or an unsupported pixel format the message
            includes the ffmpeg command that fixes the file.
    """
    info, index = _probe_with_index(path)
    problem = _truncation_problem(info, index)
    if problem is not None:
        raise VideoError(f"{info.path}: {problem}")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"{info.path}: invalid frame size {info.width}x{info.height}")
    if info.pix_fmt not in SUPPORTED_PIX_FMTS:
        raise VideoError(
            f"{info.path}: unsupported pixel format {info.pix_fmt!r} (supported: "
            f"{', '.join(sorted(SUPPORTED_PIX_FMTS))}); re-encode it to 8-bit yuv420p: "
            f"{reencode_command(info.path, info.fps)}"
        )
    if info.variable_frame_rate and not allow_variable_frame_rate:
        raise VideoError(
            f"{info.path}: variable frame rate (timestamps are unevenly spaced), so frame "
            f"indices are ambiguous between tools; re-encode it to a constant rate: "
            f"{reencode_command(info.path, info.fps)}"
        )
    _decode_first_frame(info.path)
    _decode_to_end(info.path, index, info.n_frames)
    return info


class PyAVReader:
    """Frame-exact random and sequential access to one video with PyAV (any FFmpeg codec).

    Frame ``i`` is the ``i``-th frame in presentation order. :meth:`read` seeks to the last
    keyframe at or before the wanted frame and decodes forward (reusing the open decoder instead
    when it is already positioned before the wanted frame and no keyframe lies in between), and
    checks every decoded frame's timestamp against the index built on opening.

    Args:
        path: a local video file.
        threads: decoder threads; 0 lets FFmpeg choose.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        self.path = str(path)
        self.info, self._index = _probe_with_index(self.path)
        problem = _truncation_problem(self.info, self._index)
        if problem is not None:
            raise VideoError(f"{self.path}: {problem}")
        self._pos_of_pts = {int(p): i for i, p in enumerate(self._index.pts)}
        self._threads = threads
        self._container: av.container.InputContainer | None = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._pending: av.VideoFrame | None = None  # a frame decoded ahead while seeking
        self._next = 0  # index of the frame the decoder yields next

    def __len__(self) -> int:
        return self.info.n_frames

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the decoder."""
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None
        self._pending = None

    def _stream(self) -> av.video.stream.VideoStream:
        if self._container is None:
            self._container = _open(self.path)
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self._threads
        return self._container.streams.video[0]

    def _keyframe_index_before(self, index: int) -> int:
        """Frame index of the last keyframe whose pts is at or before frame ``index``."""
        target = self._index.pts[index]
        k = int(np.searchsorted(self._index.keyframe_pts, target, side="right")) - 1
        return self._pos_of_pts[int(self._index.keyframe_pts[max(k, 0)])]

    def _position_at(self, index: int) -> None:
        """Make the decoder's next output frame ``index`` (seeking only when it saves work)."""
        if self._frames is not None and self._next <= index:
            if self._keyframe_index_before(index) <= self._next:
                self._skip_to(index)
                return
        stream = self._stream()
        key = self._keyframe_index_before(index)
        self._container.seek(int(self._index.pts[key]), stream=stream, backward=True)
        self._frames = self._container.decode(stream)
        first = self._next_frame(expect=None)
        position = self._pos_of_pts.get(int(first.pts)) if first.pts is not None else None
        if position is None or position > index:
            # The demuxer landed after the wanted frame: restart from the beginning, which is
            # always correct, only slower.
            self._container.seek(int(self._index.pts[0]), stream=stream, backward=True)
            self._frames = self._container.decode(stream)
            first = self._next_frame(expect=None)
            position = self._pos_of_pts.get(int(first.pts)) if first.pts is not None else None
            if position is None or position > index:
                raise VideoError(f"{self.path}: cannot seek to frame {index}")
        self._pending = first
        self._next = position
        self._skip_to(index)

    def _next_frame(self, expect: int | None) -> av.VideoFrame:
        """The decoder's next frame; with ``expect``, check it is that frame index."""
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            try:
                frame = next(self._frames)
            except StopIteration:
                raise VideoError(
                    f"{self.path}: truncated or corrupt: decoding stopped before frame {expect} "
                    f"of the {len(self)} the file indexes"
                ) from None
            except av.error.FFmpegError as exc:
                where = f"near frame {expect}" if expect is not None else "after a seek"
                raise VideoError(
                    f"{self.path}: decoding failed {where} (the file indexes {len(self)} "
                    f"frames; truncated or corrupt data): {exc}"
                ) from exc
        if expect is not None and (frame.pts is None or frame.pts != self._index.pts[expect]):
            raise VideoError(
                f"{self.path}: decoded frame has pts {frame.pts}, expected frame {expect} at pts "
                f"{int(self._index.pts[expect])}; the stream is corrupt or its timestamps are "
                f"inconsistent: {reencode_command(self.path, self.info.fps)}"
            )
        return frame

    def _skip_to(self, index: int) -> None:
        while self._next < index:
            self._next_frame(expect=self._next)
            self._next += 1

    def _take(self, count: int, planes: bool) -> np.ndarray:
        height, width = self.info.height, self.info.width
        if planes:
            out = np.empty((count, height * width * 3 // 2), np.uint8)
        else:
            out = np.empty((count, height, width, 3), np.uint8)
        for k in range(count):
            frame = self._next_frame(expect=self._next)
            if planes:
                same_size = (frame.height, frame.width) == (height, width)
                if frame.format.name not in PLANAR_420 or not same_size:
                    raise VideoError(
                        f"{self.path}: frame {self._next} is {frame.format.name} "
                        f"{frame.width}x{frame.height}, not 4:2:0 {width}x{height} like the "
                        f"stream: {reencode_command(self.path, self.info.fps)}"
                    )
                # Y, U, V planes back to back (PyAV drops each plane's line padding)
                out[k] = frame.to_ndarray().reshape(-1)
            else:
                out[k] = frame.to_ndarray(format="rgb24")
            self._next += 1
        return out

    def read(self, start: int, count: int, planes: bool = False) -> np.ndarray:
        """Frames ``start .. start + count - 1`` as RGB, or as their raw 4:2:0 planes.

        Args:
            start: first frame index.
            count: number of frames.
            planes: return each frame's I420 planes (Y, U, V back to back) as decoded, for
                :func:`lpray.data.yuv.yuv420_to_rgb`; only for yuv420p/yuvj420p videos with
                even sides.

        Returns:
            ``(count, height, width, 3)`` uint8 (greyscale content has three equal channels), or
            with ``planes`` ``(count, height * width * 3 // 2)`` uint8.

        Raises:
            IndexError: the range leaves the video.
            VideoError: the stream does not decode to the indexed frames (or, with ``planes``,
                to 4:2:0 frames of the stream's size).
        """
        if count < 0 or start < 0 or start + count > len(self):
            raise IndexError(
                f"{self.path}: frames [{start}, {start + count}) outside 0..{len(self)}"
            )
        if planes and (self.info.height % 2 or self.info.width % 2):
            raise ValueError(f"{self.path}: planes=True needs even frame sides")
        if count == 0:
            return self._take(0, planes)
        self._position_at(start)
        return self._take(count, planes)

    def iter_chunks(self, chunk: int, start: int = 0, planes: bool = False) -> Iterator[np.ndarray]:
        """Decode from ``start`` to the end in order, ``chunk`` frames at a time, never seeking
        after the first frame; the last chunk holds the remainder. ``planes``: as in
        :meth:`read`."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        position = start
        while position < len(self):
            count = min(chunk, len(self) - position)
            yield self.read(position, count, planes)
            position += count


class OpenCVReader:
    """Sequential/random reading with OpenCV, for benchmarks beside :class:`PyAVReader`.

    OpenCV is not a dependency of lpray; this class only works where ``cv2`` is installed. Its
    seeking (``CAP_PROP_POS_FRAMES``) is time-based inside FFmpeg and is not verified frame-exact
    the way :class:`PyAVReader` is, so lpray's loaders never use it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import cv2  # noqa: PLC0415 - optional dependency
        except ImportError as exc:
            raise ImportError(
                "OpenCVReader needs opencv-python (pip install opencv-python)"
            ) from exc
        self._cv2 = cv2
        self.info = validate_video(path, allow_variable_frame_rate=True)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise VideoError(f"{path}: OpenCV cannot open it")
        self._next = 0

    def __len__(self) -> int:
        return self.info.n_frames

    def close(self) -> None:
        self._cap.release()

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames ``start .. start + count - 1`` as RGB uint8 ``(count, H, W, 3)``."""
        if start != self._next:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, start)
        out = np.empty((count, self.info.height, self.info.width, 3), np.uint8)
        for k in range(count):
            ok, bgr = self._cap.read()
            if not ok:
                raise VideoError(f"{self.info.path}: OpenCV stopped at frame {start + k}")
            out[k] = bgr[..., ::-1]
        self._next = start + count
        return out

    def iter_chunks(self, chunk: int) -> Iterator[np.ndarray]:
        """Decode the whole video in order, ``chunk`` frames at a time."""
        position = 0
        while position < len(self):
            count = min(chunk, len(self) - position)
            yield self.read(position, count)
            position += count

"""YUV 4:2:0 frames to RGB with torch, so a GPU does the colour conversion instead of the CPU.

Decoding an H.264 clip with FFmpeg's frame threads is fast; converting each decoded frame to RGB
on the CPU (swscale, one frame at a time from Python) halves that rate, and uploading RGB moves
twice the bytes of the 4:2:0 planes. So the GPU prediction path asks :class:`PyAVReader` for the
raw I420 planes (Y, then U, then V, each chroma plane at half resolution), uploads those, and
converts here: the matrix chosen from the frame's colorspace tag the way swscale chooses it, the
range from the pixel format (``yuvj420p`` is full range, ``yuv420p`` limited), chroma repeated
over each 2x2 block, rounded to the nearest level. That equals swscale's exact mode to 1 grey
level, and PyAV's default ``to_ndarray(format="rgb24")`` (swscale's fast tables, which round about
one level low) to 3 (tests/data/test_yuv.py).

Only what converts exactly is taken: 8-bit 4:2:0 with even frame sides and a BT.601 or BT.709
matrix. :func:`yuv420_layout` says None for anything else and callers fall back to RGB from PyAV.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av
import torch

from lpray.data.video import PLANAR_420

# FFmpeg AVColorSpace codes -> (Kr, Kb) of the matrix swscale applies for that tag. Untagged
# (2), "reserved" (3), BT.470BG (5) and SMPTE 170M (6) all mean BT.601 to swscale.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    2: (0.299, 0.114),
    3: (0.299, 0.114),
    5: (0.299, 0.114),
    6: (0.299, 0.114),
}


@dataclass(frozen=True)
class Yuv420Layout:
    """How to read one video's I420 planes.

    Attributes:
        height: frame height (even).
        width: frame width (even).
        pix_fmt: ``yuv420p`` or ``yuvj420p``.
        full_range: luma 0-255 (JPEG range) rather than 16-235.
        kr: red luma weight of the matrix.
        kb: blue luma weight of the matrix.
    """

    height: int
    width: int
    pix_fmt: str
    full_range: bool
    kr: float
    kb: float

    @property
    def plane_bytes(self) -> int:
        """Bytes of one frame's three planes back to back."""
        return self.height * self.width * 3 // 2


def yuv420_layout(path: str | os.PathLike) -> Yuv420Layout | None:
    """The layout of ``path``'s decoded frames, or None when lpray cannot convert them exactly
    (another pixel format, odd sides, an uncommon matrix): read RGB from PyAV instead."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream), None)
    if frame is None:
        return None
    name = frame.format.name
    matrix = _KR_KB.get(int(frame.colorspace))
    if name not in PLANAR_420 or matrix is None or frame.width % 2 or frame.height % 2:
        return None
    # The range comes from the format ("j" = JPEG, full range), not from the range tag: PyAV asks
    # swscale to convert with an unspecified source range, which means "the format's own".
    full_range = name == "yuvj420p"
    return Yuv420Layout(frame.height, frame.width, name, full_range, *matrix)


def yuv420_to_rgb(planes: torch.Tensor, layout: Yuv420Layout) -> torch.Tensor:
    """Convert I420 frames to RGB on ``planes``' device.

    Args:
        planes: ``(N, plane_bytes)`` uint8, each row one frame's Y, U and V planes back to back
            (what :meth:`lpray.data.video.PyAVReader.iter_chunks` gives with ``planes=True``).
        layout: from :func:`yuv420_layout`.

    Returns:
        ``(N, height, width, 3)`` uint8 RGB.
    """
    n = planes.shape[0]
    h, w = layout.height, layout.width
    luma = h * w
    chroma = luma // 4
    y = planes[:, :luma].view(n, h, w).float()
    u = planes[:, luma : luma + chroma].view(n, h // 2, w // 2).float().sub_(128.0)
    v = planes[:, luma + chroma :].view(n, h // 2, w // 2).float().sub_(128.0)
    if layout.full_range:
        chroma_scale = 1.0
    else:  # expand 16-235 luma and 16-240 chroma to 0-255
        y = y.sub_(16.0).mul_(255.0 / 219.0)
        chroma_scale = 255.0 / 224.0
    kr, kb = layout.kr, layout.kb
    kg = 1.0 - kr - kb
    # R = Y + 2(1-Kr) V;  B = Y + 2(1-Kb) U;  G = Y - (2 Kb (1-Kb) U + 2 Kr (1-Kr) V) / Kg
    r_v = 2.0 * (1.0 - kr) * chroma_scale
    b_u = 2.0 * (1.0 - kb) * chroma_scale
    g_u = 2.0 * kb * (1.0 - kb) / kg * chroma_scale
    g_v = 2.0 * kr * (1.0 - kr) / kg * chroma_scale
    # chroma at half resolution, each sample covering a 2x2 block of luma
    red = (v * r_v).repeat_interleave(2, 1).repeat_interleave(2, 2)
    blue = (u * b_u).repeat_interleave(2, 1).repeat_interleave(2, 2)
    green = (u * g_u + v * g_v).repeat_interleave(2, 1).repeat_interleave(2, 2)
    rgb = torch.stack((y + red, y - green, y + blue), dim=-1)
    return rgb.round_().clamp_(0.0, 255.0).to(torch.uint8)

"""Which video reader decodes a set of videos: the backend choice shared by training clips
(:mod:`lpray.data.clips`) and prediction chunks (:mod:`lpray.inference.chunks`).

The readers and the backend names that pick them are :mod:`lpray.data.reader_registry`'s; the
built-in backends are:

- ``"pyav"``: CPU decoding with :class:`lpray.data.video.PyAVReader` (any codec FFmpeg reads),
  warped on the target device by :func:`lpray.data.warp.warp_normalise`.
- ``"dali"``: :mod:`lpray.data.dali_pipeline`; on a GPU any codec NVDEC reads, on the CPU only
  VP8/VP9/MJPEG.
- ``"auto"``: DALI on the GPU when ``device`` is CUDA and NVDEC reads every video (prediction
  adds a length threshold, :func:`lpray.inference.chunks.short_for_dali`); else DALI on the CPU
  when every video is VP8/VP9/MJPEG; else PyAV. Deliberately keyed on ``device``, not on whether
  a GPU exists: a caller that asks for CPU tensors gets CPU decoding.

A backend name of one reader resolves to that reader; ``auto`` and ``dali`` (two readers)
choose as above. A new reader is a module with its producers and one line in the registry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from lpray.data.dali_pipeline import dali_available, dali_support_problem
from lpray.data.reader_registry import AUTO, list_backends, readers_of
from lpray.data.video import VideoError, VideoInfo
from lpray.errors import UserError
from lpray.io import storage

# the fallback reader: FFmpeg reads every codec
_PYAV = "pyav"


class DaliMissing(UserError, ImportError):
    """The DALI reader was asked for where DALI is not installed."""


def choose_backend(backend: str, infos: Sequence[VideoInfo], device: str) -> str:
    """Resolve a backend name to a reader name: ``"pyav"``, ``"dali-cpu"``, ``"dali-gpu"``, ...

    Raises:
        ValueError: unknown backend, or a CUDA device without CUDA.
        VideoError: ``backend="dali"`` and DALI cannot decode one of the videos (named).
        DaliMissing: ``backend="dali"`` without DALI installed.
    """
    if backend not in list_backends():
        raise ValueError(f"unknown video backend {backend!r}; choose one of {list_backends()}")
    wants_gpu = torch.device(device).type == "cuda"
    if wants_gpu and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    own = readers_of(backend)
    if len(own) == 1:  # a backend of one reader: nothing to choose
        return own[0].name
    if backend not in (AUTO, "dali"):  # the rule below knows DALI's two readers only
        raise ValueError(f"backend {backend!r} has several readers and no rule to choose one")
    if not dali_available():
        if backend == "dali":
            raise DaliMissing(
                "backend='dali' (data.video_backend / --backend): DALI is not installed; "
                "pip install nvidia-dali-cuda120, or use backend 'auto' or 'pyav'"
            )
        return _PYAV
    first_problem = None
    for dali_device in (["gpu"] if wants_gpu else []) + ["cpu"]:
        problems = [(i.path, dali_support_problem(i, dali_device)) for i in infos]
        problems = [(p, why) for p, why in problems if why is not None]
        if not problems:
            return f"dali-{dali_device}"
        first_problem = first_problem or problems[0]
    if backend == "dali":
        raise VideoError(f"{first_problem[0]}: {first_problem[1]}")
    return _PYAV


def local_video_path(path: str | os.PathLike) -> str:
    """The local file a reader opens; remote videos are refused (copied first by the caller)."""
    if not storage.is_local(path):
        raise VideoError(f"{path}: videos must be local files (copy remote videos first)")
    return str(storage.local_path(path))


def cuda_index(device: str) -> int:
    """The CUDA device index ``device`` names (the current device for a bare ``"cuda"``)."""
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def decoder_threads() -> int:
    """CPU threads of one DALI pipeline: a few, fewer on a small machine."""
    return max(1, min(4, os.cpu_count() or 1))

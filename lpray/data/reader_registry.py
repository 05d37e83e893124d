"""Video-reader registry: the readers that decode video, and the backend names that pick them.

A reader is one :class:`VideoReader`: its name (what :func:`lpray.data.readers.choose_backend`
resolves to), the backend name a user picks it by (``data.video_backend``, ``--backend``), where
it decodes, and its two producers named as ``"module:function"``: the training clips
(:func:`lpray.data.clips.make_unlabeled_loader` calls it) and the prediction blocks
(:func:`lpray.inference.chunks.iter_prediction_chunks` calls it). Producers are imported only
when used: this module imports nothing heavy, so the CLI builds its ``--backend`` choices from it
without torch.

To add a reader: a module with the two producers (their signatures are those of
:func:`lpray.data.clips.pyav_training` and :func:`lpray.inference.chunks.pyav_blocks`), one
``VideoReader`` line in ``_READERS`` below, and a test against the PyAV reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lpray.importpath import resolve

# The backend that picks a reader per video and device (lpray.data.readers.choose_backend).
AUTO = "auto"


@dataclass(frozen=True)
class VideoReader:
    """One video reader.

    Attributes:
        name: what ``choose_backend`` resolves to (``"pyav"``, ``"dali-gpu"``, ...).
        backend: the name users pick it by; several readers may share one (``dali`` decodes on
            the GPU or the CPU, chosen per device and codec).
        decodes_on: ``"cpu"`` or ``"gpu"``.
        training: ``"module:function"`` yielding training clips.
        prediction: ``"module:function"`` yielding prediction blocks.
    """

    name: str
    backend: str
    decodes_on: Literal["cpu", "gpu"]
    training: str
    prediction: str

    def producer(self, which: Literal["training", "prediction"]) -> Callable[..., Any]:
        """The function named by ``training`` or ``prediction``, imported now."""
        return resolve(getattr(self, which))


_CLIPS, _CHUNKS = "lpray.data.clips", "lpray.inference.chunks"
_READERS = (
    VideoReader("pyav", "pyav", "cpu", f"{_CLIPS}:pyav_training", f"{_CHUNKS}:pyav_blocks"),
    VideoReader("dali-cpu", "dali", "cpu", f"{_CLIPS}:dali_training", f"{_CHUNKS}:dali_blocks"),
    VideoReader("dali-gpu", "dali", "gpu", f"{_CLIPS}:dali_training", f"{_CHUNKS}:dali_blocks"),
)
_REGISTRY = {reader.name: reader for reader in _READERS}


def list_readers() -> list[str]:
    """Every reader name (what ``choose_backend`` may return)."""
    return list(_REGISTRY)


def get_reader(name: str) -> VideoReader:
    """The reader called ``name``.

    Raises:
        ValueError: no such reader; the message names the registered ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown video reader {name!r}; choose one of {list_readers()}")
    return _REGISTRY[name]


def list_backends() -> tuple[str, ...]:
    """Every backend name users may pick: ``auto`` and each reader's, in registry order."""
    return (AUTO, *dict.fromkeys(reader.backend for reader in _READERS))


def readers_of(backend: str) -> list[VideoReader]:
    """The readers a backend name stands for (``auto``: none of its own)."""
    return [reader for reader in _READERS if reader.backend == backend]

"""Path strings that may be local paths or fsspec URLs; pure functions, no I/O.

They sit below :mod:`lpray.io.storage` (which re-exports them) so that path layouts such as
:class:`lpray.io.layout.ModelDir` can use them and storage can use the layouts without a cycle.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_local(path: str | os.PathLike) -> bool:
    """True for plain paths and ``file://`` URLs."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """The local filesystem path of a plain path or ``file://`` URL."""
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts with ``/``, keeping a URL scheme intact."""
    text = str(base).rstrip("/")
    return "/".join([text, *[p.strip("/") for p in parts]])

"""Paths on any filesystem fsspec reaches, and atomic writes.

Every output lpray writes goes through :func:`atomic_write` so that a killed run never leaves a
half-written file that a resumed run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec


def is_local(path: str | os.PathLike) -> bool:
    """True for plain paths and ``file://`` URLs."""
    text = str(path)
    return "://" not in text or text.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """The local filesystem path of a plain path or ``file://`` URL."""
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def filesystem(path: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``path`` and the path inside it."""
    fs, _, paths = fsspec.get_fs_token_paths(str(path))
    return fs, paths[0]


def exists(path: str | os.PathLike) -> bool:
    fs, inner = filesystem(path)
    return fs.exists(inner)


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes of all files under ``path`` (local or remote; 0 when it does not exist)."""
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        return 0
    return int(fs.du(inner, total=True))


def makedirs(path: str | os.PathLike) -> None:
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts with ``/``, keeping a URL scheme intact."""
    text = str(base).rstrip("/")
    return "/".join([text, *[p.strip("/") for p in parts]])


def expand(patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Expand globs on local or remote paths; keep order, drop duplicates.

    A pattern that matches nothing raises, naming the pattern, so a typo never turns into a run
    over zero videos.
    """
    found: list[str] = []
    for pattern in patterns:
        if is_local(pattern):
            text = str(local_path(pattern))
            matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
            matches = [m for m in matches if os.path.exists(m)]
        else:
            fs, inner = filesystem(pattern)
            protocol = pattern.split("://", 1)[0]
            matches = [f"{protocol}://{m}" for m in sorted(fs.glob(inner))]
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        found.extend(m for m in matches if m not in found)
    return found


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears complete or not at all.

    Locally the data goes to a temporary file in the same folder and is renamed over the target
    (rename is atomic on POSIX). On object stores (s3, gs) a single PUT is already atomic, so the
    file is written directly.
    """
    if is_local(path):
        target = local_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    else:
        with fsspec.open(str(path), mode) as handle:
            yield handle

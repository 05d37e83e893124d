"""Paths on any filesystem fsspec reaches, and atomic writes.

Every output lpray writes goes through :func:`atomic_write` so that a killed run never leaves a
half-written file that a resumed run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec

from lpray.io import layout

# re-exported: the pure path helpers are in lpray.io.paths (no I/O there, so layouts can use them)
from lpray.io.paths import is_local, join, local_path  # noqa: F401


def filesystem(path: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``path`` and the path inside it."""
    # url_to_fs leaves glob characters alone: get_fs_token_paths expands a pattern and returns
    # its first match, which made a remote corpus glob one video long
    fs, inner = fsspec.core.url_to_fs(str(path))
    return fs, inner


def exists(path: str | os.PathLike) -> bool:
    """Whether ``path`` exists now (a remote listing cached earlier in this process is dropped
    first: workers on other nodes write the objects that mark work as done)."""
    fs, inner = filesystem(path)
    if not is_local(path):
        fs.invalidate_cache(inner)
    return fs.exists(inner)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The contents of a local file or a stored object."""
    if is_local(path):
        return local_path(path).read_bytes()
    fs, inner = filesystem(path)
    return fs.cat_file(inner)


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode()


def remove(path: str | os.PathLike, recursive: bool = False) -> None:
    """Delete a file (or a folder with ``recursive``); nothing when it does not exist."""
    if not exists(path):
        return
    fs, inner = filesystem(path)
    fs.rm(inner, recursive=recursive)


def stored_files(path: str | os.PathLike) -> dict[str, int]:
    """Every file under ``path``, relative to it (``/``-separated) -> size in bytes."""
    fs, inner = filesystem(path)
    if not is_local(path):
        fs.invalidate_cache()
    prefix = inner.rstrip("/") + "/"
    if not fs.exists(inner):
        return {}
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in fs.find(inner, detail=True).items()
        if info.get("type") != "directory" and name.startswith(prefix)
    }


def upload_tree(
    local: str | os.PathLike, url: str, first: tuple[str, ...] = (), last: tuple[str, ...] = ()
) -> list[str]:
    """Copy every file of the local folder ``local`` to ``url``; returns the relative paths.

    The files named in ``first`` (relative paths) go before all others, those in ``last`` (the
    records that say the folder is complete, e.g. ``summary.json``) after all others: an upload
    interrupted part way leaves a folder that a rerun recognises as unfinished, and whose first
    records say what it holds. Each object is one PUT (or one multipart upload), complete or
    absent.
    """
    root = Path(local)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    edges = set(first) | set(last)
    ordered = [n for n in first if n in names] + [n for n in names if n not in edges]
    ordered += [n for n in last if n in names]
    fs, inner = filesystem(url)
    for name in ordered:
        fs.put_file(str(root / name), f"{inner.rstrip('/')}/{name}")
    return ordered


def download_tree(url: str, local: str | os.PathLike) -> list[str]:
    """Copy every file stored under ``url`` into the local folder ``local``; returns them."""
    fs, inner = filesystem(url)
    files = stored_files(url)
    for name in sorted(files):
        target = Path(local) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{inner.rstrip('/')}/{name}", str(target))
    return sorted(files)


def matches(pattern: str) -> list[str]:
    """Paths or URLs matching a glob, sorted ([] when none; :func:`expand` raises instead)."""
    try:
        return expand([pattern])
    except FileNotFoundError:
        return []


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes of all files under ``path`` (local or remote; 0 when it does not exist)."""
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        return 0
    return int(fs.du(inner, total=True))


def makedirs(path: str | os.PathLike) -> None:
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)


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
            fs.invalidate_cache()  # other processes (workers, other tools) may have written since
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


@contextlib.contextmanager
def local_file(path: str) -> Iterator[str]:
    """A local file for ``path``: itself when local, else a download removed afterwards.

    Decoders (PyAV, DALI) need a seekable local file; object stores are not one.
    """
    if is_local(path):
        yield str(local_path(path))
        return
    import tempfile

    fs, inner = filesystem(path)
    with tempfile.TemporaryDirectory(prefix="lpray-video-") as tmp:
        target = os.path.join(tmp, os.path.basename(inner) or "video")
        fs.get(inner, target)
        yield target


# What prediction does not need from a model directory stays in storage: the resume checkpoint
# (where best.ckpt exists; ~3x its size, with the optimizer state), the logs, and the Ray Train
# runs of an ensemble's multi-worker members (OUT/ray/, every kept epoch checkpoint).
def _needed_for_prediction(relative: str, with_best: set[str]) -> bool:
    parts = relative.split("/")
    if layout.LOG_FOLDERS & set(parts[:-1]):
        return False
    if relative.endswith(layout.LAST_CHECKPOINT):
        return relative[: -len(layout.LAST_CHECKPOINT)] not in with_best
    return True


def local_copy(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A local folder holding ``path``'s files: ``path`` itself when local, else a download.

    For a model directory or an ensemble folder on an object store: the files prediction needs
    (not ``last.ckpt`` where ``best.ckpt`` exists, not the logs) are fetched into ``cache``
    (default: ``lpray-cache`` under the system temp dir). The copy is named after the URL and
    the stored files' sizes and stamps, so later calls on the same machine reuse it and a
    retrained model is fetched anew. A download is written beside its target and renamed, so an
    interrupted one is never taken for complete.

    Raises:
        FileNotFoundError: nothing is stored under ``path``.
    """
    if is_local(path):
        return local_path(path)
    import hashlib
    import shutil
    import tempfile

    fs, inner = filesystem(path)
    fs.invalidate_cache()
    prefix = inner.rstrip("/") + "/"
    listing = {
        name[len(prefix) :]: info
        for name, info in fs.find(inner, detail=True).items()
        if info.get("type") != "directory" and name.startswith(prefix)
    }
    if not listing:
        raise FileNotFoundError(f"{path}: nothing stored there (a model or ensemble folder?)")
    with_best = {
        r[: -len(layout.BEST_CHECKPOINT)] for r in listing if r.endswith(layout.BEST_CHECKPOINT)
    }
    wanted = sorted(r for r in listing if _needed_for_prediction(r, with_best))
    stamp = hashlib.sha1(str(path).encode())
    for relative in wanted:
        info = listing[relative]
        version = next(
            (info[k] for k in ("ETag", "etag", "LastModified", "mtime", "updated") if k in info), ""
        )
        stamp.update(f"{relative}:{info.get('size')}:{version}".encode())
    root = Path(cache) if cache else Path(tempfile.gettempdir()) / "lpray-cache"
    target = root / stamp.hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    partial = root / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        for relative in wanted:
            destination = partial / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            fs.get(prefix + relative, str(destination))
        (partial / ".complete").touch()
        if target.exists():  # another process finished the same download first
            shutil.rmtree(partial)
        else:
            os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def replace_folder(staged: Path, target: Path) -> None:
    """Put the complete local folder ``staged`` at ``target`` with renames: an existing
    ``target`` is moved aside first and deleted only once ``staged`` is in place (restored if
    the rename fails), so ``target`` is always either the old folder or the new one."""
    aside = None
    if target.exists():
        aside = target.parent / f".{target.name}.lpray-old-{uuid.uuid4().hex[:8]}"
        os.replace(target, aside)
    try:
        os.replace(staged, target)
    except OSError:
        if aside is not None:
            os.replace(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)

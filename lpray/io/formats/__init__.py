"""Pose-table file formats: one module per format, one registry of their names.

A format is a :class:`PoseFormat` (name, file extension, writer, the packages it needs),
registered once in its module; ``lpray predict/track --format`` and :func:`save_pose` take their
names from :func:`list_formats` (and ``--help`` its descriptions: the format modules import
pandas and their writers' packages only when they write, so the CLI reads the registry at
start-up). To add one: write ``lpray/io/formats/<name>.py`` with a
``FORMAT = PoseFormat(...)`` and add the module to ``_BUILT_IN`` below.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lpray.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


class FormatError(UserError, ValueError):
    """An unknown output format, or one whose packages are not installed."""


@dataclass(frozen=True)
class PoseMeta:
    """What some formats record beside the table.

    Attributes:
        video: the source video's path or URL.
        fps: its frame rate (timestamps in NWB).
        description: what produced the table (e.g. "EKS over 5 members").
    """

    video: str | None = None
    fps: float | None = None
    description: str = ""


@dataclass(frozen=True)
class PoseFormat:
    """One file format for pose tables.

    Attributes:
        name: the ``--format`` name.
        extension: appended to the output stem (``.csv``).
        write: ``write(table, path, meta)``; local paths or URLs, complete or absent.
        requires: import names the writer needs (checked before any work).
        description: one line for ``--help``.
    """

    name: str
    extension: str
    write: Callable[[pd.DataFrame, str, PoseMeta], None] = field(repr=False)
    requires: tuple[str, ...] = ()
    description: str = ""


_BUILT_IN = ("csv", "parquet", "dlc_h5", "nwb")
DEFAULT_FORMATS = ("csv", "parquet")


def _registry() -> dict[str, PoseFormat]:
    formats = [importlib.import_module(f"{__name__}.{m}").FORMAT for m in _BUILT_IN]
    return {f.name: f for f in formats}


def list_formats() -> list[str]:
    """Every registered format name."""
    return list(_registry())


def get_format(name: str, check: bool = True) -> PoseFormat:
    """The format called ``name`` (with ``check``, only if its packages are installed).

    Raises:
        FormatError: no such format, or its packages are missing.
    """
    formats = _registry()
    if name not in formats:
        raise FormatError(f"unknown output format {name!r}: choose from {', '.join(formats)}")
    fmt = formats[name]
    for package in fmt.requires if check else ():
        if importlib.util.find_spec(package) is None:
            raise FormatError(
                f"output format {name!r} needs the Python package {package!r}: pip install it"
            )
    return fmt


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"csv,h5"`` (or a sequence of names) -> validated names, in order, each once."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise FormatError("no output format given: choose from " + ", ".join(list_formats()))
    for name in names:
        get_format(name)
    return tuple(names)


def save_pose(
    table: pd.DataFrame, stem: str, formats: Sequence[str], meta: PoseMeta | None = None
) -> list[str]:
    """Write ``table`` as ``stem + extension`` in each format; returns the paths."""
    paths = []
    for name in formats:
        fmt = get_format(name)
        path = f"{stem}{fmt.extension}"
        fmt.write(table, path, meta or PoseMeta())
        paths.append(path)
    return paths

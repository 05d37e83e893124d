"""Projects of other pose tools in, as lpray projects: ``lpray convert SOURCE --out DIR``.

One module per source tool (:mod:`.dlc`, :mod:`.sleap`, :mod:`.lightning_pose`), each with a
``SOURCE = ProjectSource(name, detect, load)`` registered in ``_BUILT_IN``; every source is read
into a `sleap_io.Labels` (sleap-io reads DeepLabCut projects and SLEAP files) and written by
:func:`lpray.projects.writer.write_project`. To add a tool: a module with a ``SOURCE`` that
loads its projects as ``Labels``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpray.errors import UserError


class ProjectError(UserError, ValueError):
    """A source project lpray cannot convert (unknown layout, several animals, missing files)."""


@dataclass(frozen=True)
class ProjectSource:
    """One tool's project layout.

    Attributes:
        name: the ``--from`` name.
        detect: ``detect(path) -> bool``: ``path`` looks like this tool's project.
        load: ``load(path) -> (labels, videos, description)``: the labels as a
            ``sleap_io.Labels``, the project's source video files, and one line naming the source.
    """

    name: str
    detect: Callable[[Path], bool] = field(repr=False)
    load: Callable[[Path], tuple[Any, list[Path], str]] = field(repr=False)


_BUILT_IN = ("dlc", "sleap", "lightning_pose")


def _registry() -> dict[str, ProjectSource]:
    sources = [importlib.import_module(f"{__name__}.{m}").SOURCE for m in _BUILT_IN]
    return {s.name: s for s in sources}


def list_sources() -> list[str]:
    """Every source tool name ``--from`` accepts."""
    return list(_registry())


def find_source(path: Path, name: str = "auto") -> ProjectSource:
    """The source ``name``, or (``auto``) the first whose layout ``path`` has.

    Raises:
        ProjectError: unknown name, or no known layout at ``path``.
    """
    sources = _registry()
    if name != "auto":
        if name not in sources:
            raise ProjectError(f"unknown source {name!r}: choose from {', '.join(sources)}")
        return sources[name]
    for source in sources.values():
        if source.detect(path):
            return source
    raise ProjectError(
        f"{path}: not a DeepLabCut project (config.yaml + labeled-data/), a SLEAP labels file "
        "(.slp, .pkg.slp) or a Lightning Pose project (CollectedData.csv + labeled-data/); "
        "name the tool with --from"
    )

"""``lpray merge-labels PROJECT NEW_LABELS``: corrected frames into a project's labels.

``NEW_LABELS`` is a labeling folder (``lpray select-frames --out``, after a labeler corrected it)
or its CSV; its image paths are relative to its folder and keep their place in the project
(``labeled-data/<video>/img<t>.png``). Every row is checked before anything is written:

- its image must exist (and decode) in ``NEW_LABELS``;
- its keypoints must be the project's (a keypoint the project does not know is refused; one the
  new file lacks stays empty);
- it must not be listed twice, nor put an image of another size where the project has one of
  that name (one of the same size is the same frame of the same video, e.g. a context frame:
  the project's file is kept);
- a file still marked as the ensemble's guess (scorer ``lpray-eks-guess``) is refused unless
  ``accept_guesses``: uncorrected guesses would teach the model its own mistakes.

A row whose image the project already labels is a duplicate: skipped when its labels are the
same, and when they differ the project's are kept unless ``replace``. The images are copied
first (each under a temporary name, then renamed), the CSV rewritten last, atomically; if any
step fails, the copies are removed, so a failed merge leaves the project byte-identical.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lpray.errors import UserError
from lpray.io.tables import keypoint_names, read_pose_csv, write_pose_csv
from lpray.select.extraction import GUESS_SCORER

log = logging.getLogger(__name__)

LABELS_FILE = "CollectedData.csv"


class MergeError(UserError, ValueError):
    """A row or file that cannot be merged; the message names it and what to do."""


@dataclass
class MergeResult:
    """What a merge did (image paths as in the CSVs)."""

    csv: Path
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # already labeled; the project's kept
    unchanged: list[str] = field(default_factory=list)  # already labeled the same


def _labels_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    csv = path / LABELS_FILE if path.is_dir() else path
    if not csv.is_file():
        raise MergeError(f"{csv}: no labels file ({what} must be a folder with {LABELS_FILE})")
    return csv


def _same_frame(a: Path, b: Path) -> bool:
    """Whether two files named alike hold the same frame: the same bytes, or images of the same
    size. ``labeled-data/<video>/img<t>.png`` names a frame of a video, so a project file of that
    name (a context frame, or one extracted by another decoder or saved grey) is that frame; its
    pixels may differ slightly and are not compared."""
    if a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes():
        return True
    try:
        with Image.open(a) as first, Image.open(b) as second:
            return first.size == second.size
    except (OSError, ValueError, SyntaxError):
        return False


def _values(table: pd.DataFrame, row: object, columns: list[tuple[str, str]]) -> np.ndarray:
    """One row's values in ``columns`` ((keypoint, coord) pairs); NaN where the table lacks one."""
    lookup = {(part, coord): c for c in table.columns for _, part, coord in [c]}
    return np.array(
        [float(table.at[row, lookup[c]]) if c in lookup else np.nan for c in columns], dtype=float
    )


def _check_new(new: pd.DataFrame, new_csv: Path, names: list[str], accept_guesses: bool) -> None:
    scorers = set(new.columns.get_level_values(0))
    if GUESS_SCORER in scorers and not accept_guesses:
        raise MergeError(
            f"{new_csv}: scorer {GUESS_SCORER!r}: these are still the ensemble's guesses; correct "
            "them in the labeler (saving under your scorer name), or pass --accept-guesses if "
            "you checked them"
        )
    unknown = [k for k in keypoint_names(new) if k not in names]
    if unknown:
        raise MergeError(
            f"{new_csv}: keypoint(s) {unknown} are not in the project (which has {names}); "
            "rename or drop those columns"
        )
    index = [str(i) for i in new.index]
    repeated = sorted({i for i in index if index.count(i) > 1})
    if repeated:
        raise MergeError(f"{new_csv}: row {repeated[0]} is listed more than once; keep one")


def _check_image(new_root: Path, new_csv: Path, relative: str) -> Path:
    source = new_root / relative
    if not source.is_file():
        raise MergeError(
            f"{new_csv}: row {relative}: image {source} not found; put it back or delete the row"
        )
    try:
        with Image.open(source) as image:
            image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise MergeError(
            f"{new_csv}: row {relative}: image {source} does not decode ({err})"
        ) from err
    return source


def merge_labels(
    project: str | Path,
    new_labels: str | Path,
    replace: bool = False,
    accept_guesses: bool = False,
) -> MergeResult:
    """Add ``new_labels``' rows and images to ``project`` (see the module doc).

    Raises:
        MergeError: a file or row that cannot be merged; nothing was written.
        PoseTableError: a labels file that is not a 3-row-header pose CSV.
    """
    project_csv = _labels_file(project, "PROJECT")
    new_csv = _labels_file(new_labels, "NEW_LABELS")
    root, new_root = project_csv.parent, new_csv.parent
    old = read_pose_csv(project_csv)
    new = read_pose_csv(new_csv)
    names = keypoint_names(old)
    _check_new(new, new_csv, names, accept_guesses)
    columns = [(part, coord) for _, part, coord in old.columns]
    existing = {str(i): i for i in old.index}
    result = MergeResult(project_csv)
    added_rows: dict[str, np.ndarray] = {}
    replaced_rows: dict[object, np.ndarray] = {}
    copies: list[tuple[Path, Path]] = []
    for row in new.index:
        relative = str(row)
        if os.path.isabs(relative) or ".." in Path(relative).parts:
            raise MergeError(
                f"{new_csv}: row {relative}: image paths must be relative to the labels folder"
            )
        source = _check_image(new_root, new_csv, relative)
        target = root / relative
        if target.exists() and not _same_frame(source, target):
            raise MergeError(
                f"{new_csv}: row {relative}: the project has a different image {target} under "
                "that name; rename the new frame (and its row) or remove the project's"
            )
        values = _values(new, row, columns)
        if relative in existing:
            current = _values(old, existing[relative], columns)
            if np.allclose(current, values, equal_nan=True):
                result.unchanged.append(relative)
            elif replace:
                replaced_rows[existing[relative]] = values
                result.replaced.append(relative)
            else:
                result.duplicates.append(relative)
            continue
        added_rows[relative] = values
        if not target.exists():
            copies.append((source, target))
        result.added.append(relative)
    if not added_rows and not replaced_rows:
        return result
    merged = old.copy()
    for row, values in replaced_rows.items():
        merged.loc[row] = values
    if added_rows:
        extra = pd.DataFrame(list(added_rows.values()), index=list(added_rows), columns=old.columns)
        merged = pd.concat([merged, extra])
    _write(merged, project_csv, copies)
    return result


def _write(table: pd.DataFrame, csv: Path, copies: list[tuple[Path, Path]]) -> None:
    """Copy the new images in, then rewrite the CSV; undo the copies if anything fails."""
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for source, target in copies:
            missing = []
            parent = target.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            target.parent.mkdir(parents=True, exist_ok=True)
            made.extend(reversed(missing))
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                shutil.copyfile(source, partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            placed.append(target)
        write_pose_csv(table, csv)
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    log.info("%s: %d rows now", csv, len(table))

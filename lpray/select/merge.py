"""``lpray merge-labels PROJECT NEW_LABELS``: corrected frames into a project's labels.

``NEW_LABELS`` is a labeling folder (``lpray select-frames --out``, after a labeler corrected it)
or its CSV; its image paths are relative to its folder and keep their place in the project
(``labeled-data/<video>/img<t>.png``). Either may be a local path or a URL (``s3://...``).
Every row is checked before anything is written:

- its image must exist (and decode) in ``NEW_LABELS``;
- its keypoints must be the project's (a keypoint the project does not know is refused; one the
  new file lacks stays empty);
- it must not be listed twice, nor put an image of another size where the project has one of
  that name (one of the same size is the same frame of the same video, e.g. a context frame:
  the project's file is kept);
- a file still marked as the ensemble's guess (scorer ``lpray-eks-guess``) is refused unless
  ``accept_guesses``: uncorrected guesses would teach the model its own mistakes.

DeepLabCut's labeler edits the per-video ``labeled-data/<video>/CollectedData_<scorer>.h5``
files of a labeling folder, not its ``CollectedData.csv``. When ``NEW_LABELS`` is a folder, the
rows of those files that differ from the ensemble's guess (``eks_guess.csv``, which
``select-frames`` writes and nobody edits) are corrections and take the place of the CSV's
rows; rows left at the guess in both are left out (and listed) unless ``accept_guesses``. A row
edited in both places to different labels is refused: keep one of the edits. A ``NEW_LABELS``
that names a CSV is read alone.

A row whose image the project already labels is a duplicate: skipped when its labels are the
same, and when they differ the project's are kept unless ``replace``. The context frames that
``select-frames --context-frames N`` extracted around an added row (its ``selection.json`` says
N) come along as files, not rows, where the project has none of that name.

Nothing the project holds is overwritten but its CSV: the new images are written first, each
complete or absent (a temporary name renamed locally, one PUT on an object store), and the CSV
last, in one atomic replace. If any step fails, the images written are removed (as far as the
store still answers: an image left behind by an outage is not referenced by the CSV, and a
rerun reuses it), so a failed merge leaves every file the project had byte-identical.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from lpray.errors import UserError
from lpray.io.storage import (
    atomic_write,
    exists,
    filesystem,
    is_local,
    join,
    local_path,
    read_bytes,
    remove,
)
from lpray.io.tables import keypoint_names, read_pose_csv, write_pose_csv
from lpray.projects import dlc
from lpray.select.extraction import GUESS_SCORER
from lpray.select.run import COMPLETE as SELECTION_RECORD
from lpray.select.run import GUESS_FILE

log = logging.getLogger(__name__)

LABELS_FILE = "CollectedData.csv"


class MergeError(UserError, ValueError):
    """A row or file that cannot be merged; the message names it and what to do."""


@dataclass
class MergeResult:
    """What a merge did (image paths as in the CSVs).

    Attributes:
        csv: the project's labels file (path or URL).
        added: rows added.
        replaced: rows whose labels the new file's replaced (``replace``).
        duplicates: rows already labeled differently; the project's kept.
        unchanged: rows already labeled the same.
        context: context-frame files copied beside the added rows (not rows).
        guesses: rows left out: still the ensemble's guess in the CSV and the per-video
            DeepLabCut files (``accept_guesses`` merges them).
    """

    csv: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    guesses: list[str] = field(default_factory=list)


def _labels_file(path: str, what: str) -> str:
    """The labels CSV of a folder (or the CSV itself), local or URL."""
    fs, inner = filesystem(path)
    if not is_local(path):
        fs.invalidate_cache()
    csv = join(path, LABELS_FILE) if fs.isdir(inner) else path
    if not exists(csv):
        raise MergeError(f"{csv}: no labels file ({what} must be a folder with {LABELS_FILE})")
    return csv


def _parent(path: str) -> str:
    """The folder a file path or URL is in."""
    return path.rstrip("/").rsplit("/", 1)[0] if "/" in path else "."


def _size(data: bytes) -> tuple[int, int] | None:
    """An image's (width, height), or None when it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, SyntaxError):
        return None


def _same_frame(a: str, b: str) -> bool:
    """Whether two files named alike hold the same frame: the same bytes, or images of the same
    size. ``labeled-data/<video>/img<t>.png`` names a frame of a video, so a project file of that
    name (a context frame, or one extracted by another decoder or saved grey) is that frame; its
    pixels may differ slightly and are not compared."""
    first, second = read_bytes(a), read_bytes(b)
    if first == second:
        return True
    size = _size(first)
    return size is not None and size == _size(second)


def _values(table: pd.DataFrame, row: object, columns: list[tuple[str, str]]) -> np.ndarray:
    """One row's values in ``columns`` ((keypoint, coord) pairs); NaN where the table lacks one."""
    lookup = {(part, coord): c for c in table.columns for _, part, coord in [c]}
    return np.array(
        [float(table.at[row, lookup[c]]) if c in lookup else np.nan for c in columns], dtype=float
    )


def _check_new(new: pd.DataFrame, new_csv: str, names: list[str], accept_guesses: bool) -> None:
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


def _with_dlc_edits(
    new: pd.DataFrame, new_csv: str, new_root: str, accept_guesses: bool
) -> tuple[pd.DataFrame, list[str]]:
    """``new`` with the rows that DeepLabCut's labeler corrected in the per-video files, and the
    rows left out as uncorrected guesses (see the module doc). ``new`` as it is when no
    per-video file differs from the guess."""
    files = dlc.label_files(new_root)
    if not files:
        return new, []
    guess_path = join(new_root, GUESS_FILE)
    new_is_guess = GUESS_SCORER in set(new.columns.get_level_values(0))
    guess = read_pose_csv(guess_path) if exists(guess_path) else (new if new_is_guess else None)
    if guess is None:  # a folder from before eks_guess.csv, its CSV edited: nothing to tell by
        log.info("%s: no %s; merging %s alone", new_root, GUESS_FILE, new_csv)
        return new, []
    columns = [(part, coord) for _, part, coord in new.columns]

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, atol=1e-6, equal_nan=True))

    def edited(table: pd.DataFrame, row: str) -> bool:
        if row not in guess.index:
            return True
        return not same(_values(table, row, columns), _values(guess, row, columns))

    # row -> (corrected values, the file that has them)
    found: dict[str, tuple[np.ndarray, str]] = {}
    for name in files:
        path = join(new_root, name)
        table = dlc.read_label_file(path)
        for row in map(str, table.index):
            if not edited(table, row):
                continue
            values = _values(table, row, columns)
            other = found.get(row)
            if other is None and not new_is_guess and row in new.index and edited(new, row):
                other = (_values(new, row, columns), new_csv)
            if other is not None and not same(other[0], values):
                raise MergeError(
                    f"{path}: row {row} was labeled differently in {other[1]}; keep one of the "
                    "edits (undo the other) and merge again"
                )
            found[row] = (values, path)
    edits = {row: values for row, (values, _) in found.items()}
    if not edits:
        return new, []
    rows = {str(r): _values(new, r, columns) for r in new.index}
    if new_is_guess:  # the CSV's rows are guesses; its edits are in the per-video files
        untouched = [r for r in rows if r not in edits]
        keep = {r: rows[r] for r in untouched} if accept_guesses else {}
    else:
        untouched, keep = [], rows
    keep.update(edits)
    scorer = "lpray-merged" if new_is_guess else new.columns.get_level_values(0)[0]
    table = pd.DataFrame(
        list(keep.values()),
        index=list(keep),
        columns=pd.MultiIndex.from_tuples([(scorer, p, c) for p, c in columns]),
    )
    table.columns = table.columns.set_names(new.columns.names)
    left_out = [] if accept_guesses else untouched
    if left_out:
        log.warning(
            "%d row(s) are still the ensemble's guess in %s and its per-video files; left out "
            "(--accept-guesses merges them): %s",
            len(left_out),
            new_csv,
            ", ".join(left_out[:5]) + (" ..." if len(left_out) > 5 else ""),
        )
    return table, left_out


def _check_relative(new_csv: str, relative: str) -> None:
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if relative.startswith("/") or "://" in relative or ".." in parts:
        raise MergeError(
            f"{new_csv}: row {relative}: image paths must be relative to the labels folder"
        )


def _check_image(new_root: str, new_csv: str, relative: str) -> str:
    source = join(new_root, relative)
    if not exists(source):
        raise MergeError(
            f"{new_csv}: row {relative}: image {source} not found; put it back or delete the row"
        )
    try:
        with Image.open(io.BytesIO(read_bytes(source))) as image:
            image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:
        raise MergeError(
            f"{new_csv}: row {relative}: image {source} does not decode ({err})"
        ) from err
    return source


def _context_size(new_root: str) -> int:
    """The ``--context-frames`` the labeling folder was extracted with (0 when not recorded)."""
    record = join(new_root, SELECTION_RECORD)
    if not exists(record):
        return 0
    try:
        settings = json.loads(read_bytes(record)).get("settings", {})
        return max(int(settings.get("context_frames", 0)), 0)
    except (ValueError, TypeError, AttributeError) as err:
        raise MergeError(
            f"{record}: unreadable ({err}); restore the file written by select-frames"
        ) from err


def _context_copies(
    new_root: str, root: str, rows: list[str], context: int, planned: set[str]
) -> list[str]:
    """The context frames of ``rows`` present in the labeling folder and absent from the
    project (and not already planned), as relative paths."""
    if not context:
        return []
    from lpray.data.labeled import context_paths  # (imports torch: only when there are any)

    found = []
    for row in rows:
        for name in context_paths(row, range(-context, context + 1)):
            if name in planned or name == row:
                continue
            if exists(join(new_root, name)) and not exists(join(root, name)):
                found.append(name)
                planned.add(name)
    return found


def merge_labels(
    project: str,
    new_labels: str,
    replace: bool = False,
    accept_guesses: bool = False,
) -> MergeResult:
    """Add ``new_labels``' rows and images to ``project`` (see the module doc).

    Args:
        project: the project folder (or its ``CollectedData.csv``), local or URL.
        new_labels: the labeling folder (or its CSV), local or URL.
        replace: rows the project already labels take the new labels.
        accept_guesses: merge rows still marked as the ensemble's guess.

    Returns:
        What was added, replaced, skipped.

    Raises:
        MergeError: a file or row that cannot be merged; nothing was written.
        PoseTableError: a labels file that is not a 3-row-header pose CSV.
    """
    project_csv = _labels_file(str(project).rstrip("/"), "PROJECT")
    new_csv = _labels_file(str(new_labels).rstrip("/"), "NEW_LABELS")
    root, new_root = _parent(project_csv), _parent(new_csv)
    old = read_pose_csv(project_csv)
    new = read_pose_csv(new_csv)
    names = keypoint_names(old)
    result = MergeResult(project_csv)
    if new_csv != str(new_labels).rstrip("/"):  # a folder: its per-video files count too
        new, result.guesses = _with_dlc_edits(new, new_csv, new_root, accept_guesses)
    _check_new(new, new_csv, names, accept_guesses)
    columns = [(part, coord) for _, part, coord in old.columns]
    existing = {str(i): i for i in old.index}
    added_rows: dict[str, np.ndarray] = {}
    replaced_rows: dict[object, np.ndarray] = {}
    copies: list[str] = []
    for row in new.index:
        relative = str(row)
        _check_relative(new_csv, relative)
        source = _check_image(new_root, new_csv, relative)
        target = join(root, relative)
        present = exists(target)
        if present and not _same_frame(source, target):
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
        if not present:
            copies.append(relative)
        result.added.append(relative)
    if not added_rows and not replaced_rows:
        return result
    result.context = _context_copies(
        new_root, root, list(added_rows), _context_size(new_root), set(copies)
    )
    merged = old.copy()
    for row, values in replaced_rows.items():
        merged.loc[row] = values
    if added_rows:
        extra = pd.DataFrame(list(added_rows.values()), index=list(added_rows), columns=old.columns)
        merged = pd.concat([merged, extra])
    _write(merged, project_csv, new_root, root, [*copies, *result.context])
    return result


def _missing_folders(path: str) -> list:
    """The local folders above ``path`` that do not exist yet, deepest last (none for URLs:
    object stores have no folders)."""
    if not is_local(path):
        return []
    missing = []
    parent = local_path(path).parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return list(reversed(missing))


def _write(table: pd.DataFrame, csv: str, new_root: str, root: str, copies: list[str]) -> None:
    """Copy the new images in, then rewrite the CSV; undo the copies if anything fails."""
    placed: list[str] = []
    made: list = []
    try:
        for relative in copies:
            target = join(root, relative)
            made.extend(f for f in _missing_folders(target) if f not in made)
            data = read_bytes(join(new_root, relative))
            with atomic_write(target, "wb") as handle:
                handle.write(data)
            placed.append(target)
        write_pose_csv(table, csv)
    except BaseException:
        _undo(placed, made)
        raise
    log.info("%s: %d rows now", csv, len(table))


def _undo(placed: list[str], made: list) -> None:
    """Remove the images a failed merge wrote (and the local folders it made), as far as the
    store still answers: after one removal fails, the rest are only named (each would wait for
    the client's retries), since the CSV that would reference them was never written."""
    for done, path in enumerate(placed):
        try:
            remove(path)
        except Exception as err:  # noqa: BLE001 - the store may be what failed; keep the cause
            log.warning(
                "the failed merge could not remove the %d image(s) it wrote, e.g. %s (%s); no "
                "labels file references them, and a rerun of the merge reuses them",
                len(placed) - done,
                path,
                err,
            )
            break
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            pass

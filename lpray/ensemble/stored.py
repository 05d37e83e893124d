"""Ensemble members whose folder is on an object store (``s3://``, ``gs://``, any fsspec URL).

Lightning writes a local model directory, so a member stored at a URL is trained in a staging
folder on the node that runs it and uploaded when its training is complete, ``summary.json``
last: a member counts as finished only by its stored ``summary.json`` (see
:mod:`lpray.ensemble.manifest`), so an upload cut short (a lost node, the store unreachable)
leaves a member that a rerun trains again, never one that looks finished. A member's earlier
``summary.json`` is deleted before anything of a new training is uploaded over it.

A rerun of an unfinished member starts from what is stored (a complete training whose upload
was cut short: nothing left to train) or, on the node that was training it, from the staging
folder's ``last.ckpt``; on another node it starts again. The staging folder is removed once the
member is uploaded, so nodes keep no copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lpray.io import layout
from lpray.io.layout import SUMMARY, ModelDir
from lpray.io.storage import (
    download_tree,
    exists,
    filesystem,
    join,
    remove,
    stored_files,
    upload_tree,
)

log = logging.getLogger(__name__)

# What decides whether a new run may write into a member folder (lpray.train.model_dir), small.
RECORDS = (layout.CONFIG, layout.FINGERPRINT, SUMMARY)
CHECKPOINTS = (layout.LAST_CHECKPOINT, layout.BEST_CHECKPOINT)


def staging_dir(url: str) -> Path:
    """The node-local folder member ``url`` trains in: named after the member (Ray Train names
    a run after its model directory), under a folder keyed on the whole URL."""
    key = hashlib.sha1(url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "lpray-members" / key / url.rstrip("/").rsplit("/", 1)[-1]


def prepare_staging(url: str, overwrite: bool) -> Path:
    """The staging folder for member ``url``, holding what this attempt resumes from.

    With ``overwrite``: empty. Else a training this node finished whose upload was cut short
    (its ``summary.json`` is there: nothing to train, only to upload again); else, when the store
    holds files of the member (an upload cut short elsewhere), those; else whatever an
    interrupted training left on this node.
    """
    local = staging_dir(url)
    if overwrite:
        shutil.rmtree(local, ignore_errors=True)
    elif not ModelDir(local).summary.is_file() and stored_files(url):
        shutil.rmtree(local, ignore_errors=True)
        download_tree(url, local)
        log.info("%s: resuming from its stored files", url)
    local.mkdir(parents=True, exist_ok=True)
    return local


def publish(local: Path, url: str) -> None:
    """Upload the finished member ``local`` to ``url``: its records first, ``summary.json`` last.

    The stored ``summary.json`` (an older training's) goes first, so no moment of the upload
    shows old records beside new files as a finished member; stored files the new training did
    not write (an old model's) are deleted before the new ones are written. ``config.yaml`` and
    the fingerprint lead, so a folder whose upload was cut short still says what it was trained
    on (a rerun resumes from it instead of refusing checkpoints of unknown inputs).
    """
    remove(ModelDir(url).summary)
    ours = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    for stale in sorted(set(stored_files(url)) - ours):
        remove(join(url, stale))
    upload_tree(local, url, first=RECORDS[:2], last=(SUMMARY,))


def clear_staging(local: Path) -> None:
    shutil.rmtree(local.parent, ignore_errors=True)


def drop_orphan_run(local: Path, run_folder: str) -> None:
    """Delete a Ray Train run folder (on storage) that no staged model goes with.

    It is an earlier attempt of this member on another node, whose inputs this node cannot
    check (its model directory was never uploaded); resuming it could continue checkpoints of
    other inputs, so the member starts again.
    """
    from lpray.train.model_dir import is_model_dir

    if not is_model_dir(local) and exists(run_folder):
        log.warning(
            "%s: an unfinished Ray Train run of no staged model; starting again", run_folder
        )
        remove(run_folder, recursive=True)


@contextlib.contextmanager
def records_view(url: str) -> Iterator[Path]:
    """A local stand-in of member folder ``url`` for :func:`~lpray.train.model_dir.
    check_model_dir`: its small records, and empty files in place of its checkpoints."""
    stored = stored_files(url)
    fs, inner = filesystem(url)
    with tempfile.TemporaryDirectory(prefix="lpray-member-") as tmp:
        view = Path(tmp) / url.rstrip("/").rsplit("/", 1)[-1]
        for name in (*RECORDS, *CHECKPOINTS):
            if name not in stored:
                continue
            target = view / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in RECORDS:
                fs.get_file(f"{inner.rstrip('/')}/{name}", str(target))
            else:
                target.touch()
        yield view

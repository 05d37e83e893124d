"""The ensemble manifest ``ENSEMBLE_DIR/ensemble.json``, and finding an ensemble's members.

The manifest is the ensemble's table of contents: the base config, and per member its seeds,
status (``done``, ``failed``, ``pending``), error, metrics from its ``summary.json`` and where it
ran. It is rewritten atomically after every member finishes, so an interrupted run leaves a
manifest that tells the truth about what exists. Whether a member is finished is decided by its
own ``summary.json`` (written last by training), never by the manifest alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpray.config import Config, load_config
from lpray.ensemble.members import MEMBER_PREFIX, MemberSpec, same_config
from lpray.io.layout import ModelDir
from lpray.io.storage import atomic_write, exists, join, read_text

MANIFEST_NAME = "ensemble.json"
FORMAT = "lpray-ensemble"
# summary.json keys copied into the manifest (the pixel errors are the headline numbers).
METRIC_KEYS = (
    "best_val_pixel_error",
    "val_pixel_error",
    "test_pixel_error",
    "train_pixel_error",
    "train_seconds",
    "labeled_frames_per_second",
)


def member_metrics(model_dir: Path | str) -> dict[str, Any] | None:
    """The member's headline metrics, or None when training has not finished (no summary)."""
    path = ModelDir(str(model_dir)).summary
    if not exists(path):
        return None
    summary = json.loads(read_text(path))
    return {key: summary.get(key) for key in METRIC_KEYS}


def is_finished(member: MemberSpec, cfg: Config) -> bool:
    """True when the member's model directory holds a finished run of exactly ``cfg``.

    A finished run of a different config (say, fewer epochs) is not finished: training it again
    resumes from its ``last.ckpt``.
    """
    if member_metrics(member.model_dir) is None:
        return False
    try:
        return same_config(load_config(ModelDir(str(member.model_dir)).config), cfg)
    except (OSError, ValueError):
        return False


def member_record(member: MemberSpec, status: str, **fields: Any) -> dict[str, Any]:
    """One member's manifest entry."""
    return {
        "name": member.name,
        "seed": member.seed,
        "split_seed": member.split_seed,
        "model_dir": member.name,  # relative: the ensemble folder can move
        "status": status,
        **fields,
    }


def write_manifest(
    out_dir: Path | str, cfg: Config, records: list[dict[str, Any]], vary_labels: bool
) -> Path:
    """Write ``ensemble.json`` atomically; returns its path."""
    manifest = {
        "format": FORMAT,
        "version": 1,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_members": len(records),
        "n_done": sum(r["status"] == "done" for r in records),
        "seeds": [r["seed"] for r in records],
        "vary_labels": vary_labels,
        "members": records,
        "config": cfg.to_dict(),
    }
    path = out_dir / MANIFEST_NAME if isinstance(out_dir, Path) else join(out_dir, MANIFEST_NAME)
    with atomic_write(path, "w") as handle:
        json.dump(manifest, handle, indent=2)
    return path


def read_manifest(ensemble_dir: str | Path) -> dict[str, Any]:
    """Read ``ensemble.json`` (local or at a URL); raises naming the file when it is missing or
    not a manifest."""
    path = join(str(ensemble_dir), MANIFEST_NAME)
    if not exists(path):
        raise FileNotFoundError(f"{path}: no ensemble manifest (run `lpray ensemble` first)")
    manifest = json.loads(read_text(path))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not an lpray ensemble manifest")
    return manifest


@dataclass(frozen=True)
class TrainedMember:
    """A member ready to predict: its name (used in output file names) and model directory."""

    name: str
    index: int
    model_dir: Path


def _has_checkpoint(model_dir: Path) -> bool:
    paths = ModelDir(model_dir)
    return paths.best_checkpoint.is_file() or paths.last_checkpoint.is_file()


def trained_members(path: str | Path) -> list[TrainedMember]:
    """The usable members behind ``path``.

    ``path`` may be an ensemble folder with a manifest (its ``done`` members), an ensemble
    folder without one (every ``member-<k>/`` holding a checkpoint), or a single model
    directory (an "ensemble" of one, which EKS still smooths).

    Raises:
        FileNotFoundError: nothing under ``path`` holds a trained model.
    """
    root = Path(path).expanduser().resolve()
    if (root / MANIFEST_NAME).is_file():
        records = read_manifest(root)["members"]
        members = [
            TrainedMember(r["name"], i, root / r["model_dir"])
            for i, r in enumerate(records)
            if r["status"] == "done" and _has_checkpoint(root / r["model_dir"])
        ]
    elif _has_checkpoint(root):
        members = [TrainedMember(root.name, 0, root)]
    else:
        folders = sorted(
            (p for p in root.glob(f"{MEMBER_PREFIX}*") if _has_checkpoint(p)),
            key=lambda p: (
                int(p.name[len(MEMBER_PREFIX) :])
                if p.name[len(MEMBER_PREFIX) :].isdigit()
                else 1 << 30
            ),
        )
        members = [TrainedMember(p.name, i, p) for i, p in enumerate(folders)]
    if not members:
        raise FileNotFoundError(f"{root}: no trained ensemble member or model directory here")
    return members

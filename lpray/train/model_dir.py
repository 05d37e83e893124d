"""What a model directory was trained from, and whether a new run may write into it.

Every training run records its inputs in ``MODEL_DIR/lpray_fingerprint.json``: the sha256 of the
labels file, of each split's image list, and the config's ``data`` and ``model`` sections (their
values, so a difference can be named). Before a run writes anything into an existing model
directory it compares the new inputs with that record:

- same labels, split and data/model config: the run continues the old one (resumes it, or
  trains more epochs); a finished run asked for no more epochs than it trained has nothing to
  do, and nothing is rewritten;
- anything else: :class:`ModelDirError` names the difference and says how to go on (``--overwrite``
  to replace the model, or a new ``training.output_dir``).

A directory written before fingerprints existed is judged by its ``config.yaml`` alone.

``--overwrite`` never deletes the old model up front: the new one is trained in a temporary sibling
(:func:`staging_dir`) and swapped in (:func:`swap_in`) only when it is complete, so a failed
replacement leaves the old model as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from lpray.config import Config, load_config
from lpray.errors import UserError
from lpray.io.layout import MARKERS, ModelDir
from lpray.io.storage import atomic_write, replace_folder

log = logging.getLogger(__name__)

FORMAT = "lpray-model-fingerprint"
# data keys that say where the inputs are, not what they are (their contents are hashed instead)
LOCATION_KEYS = ("root", "synthetic_dir", "csv_file", "split_file", "video_backend")


class ModelDirError(UserError, ValueError):
    """An existing model directory holds a model of other inputs than the new run's."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def comparable_sections(values: dict[str, Any]) -> dict[str, Any]:
    """The config's ``data`` (locations left out) and ``model`` sections."""
    data = {k: v for k, v in values["data"].items() if k not in LOCATION_KEYS}
    return {"data": data, "model": dict(values["model"])}


def fingerprint(cfg: Config, bundle: Any) -> dict[str, Any]:
    """The record of what a run trains on (see the module docstring)."""
    frames = bundle.frames
    split = {}
    for name in ("train", "val", "test"):
        paths = [frames.image_paths[i] for i in getattr(bundle.split, name)]
        split[name] = {
            "frames": len(paths),
            "sha256": _sha256_bytes("\n".join(sorted(paths)).encode()),
        }
    sections = comparable_sections(cfg.to_dict())
    return {
        "format": FORMAT,
        "version": 1,
        "labels": {
            "file": str(frames.csv_path),
            "sha256": _sha256_file(frames.csv_path),
            "frames": len(frames),
            "keypoints": list(frames.keypoint_names),
        },
        "split": split,
        "config_sha256": _sha256_bytes(json.dumps(sections, sort_keys=True).encode()),
        "config": sections,
    }


def is_model_dir(path: Path) -> bool:
    return any(ModelDir(path).path(marker).is_file() for marker in MARKERS)


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: values}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"data.image_size: [64, 64] -> [128, 128]"`` for each key of the compared sections."""
    left, right = _flat(old), _flat(new)
    return [
        f"{key}: {left.get(key)!r} -> {right.get(key)!r}"
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words."""
    found = []
    a, b = old.get("labels", {}), new["labels"]
    if a.get("sha256") != b["sha256"]:
        found.append(
            f"labels file: {b['file']} ({b['frames']} frames) is not the file the model was "
            f"trained on ({a.get('file')}, {a.get('frames')} frames; the contents differ)"
        )
    for name in ("train", "val", "test"):
        x, y = old.get("split", {}).get(name, {}), new["split"][name]
        if x.get("sha256") != y["sha256"]:
            found.append(
                f"{name} split: {y['frames']} images now, {x.get('frames')} before, not the same "
                "images"
            )
    found += config_differences(old.get("config", {}), new["config"])
    return found


def _read_fingerprint(model_dir: Path) -> dict[str, Any] | None:
    path = ModelDir(model_dir).fingerprint
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(
            f"{path}: unreadable ({err}); replace the model with --overwrite or train into a "
            "new training.output_dir"
        ) from err
    if record.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not an lpray model fingerprint; use --overwrite")
    return record


def _trained_epochs(model_dir: Path) -> int | None:
    """``training.max_epochs`` of the finished run in ``model_dir`` (None: not finished)."""
    layout = ModelDir(model_dir)
    if not layout.summary.is_file():
        return None
    try:
        return load_config(layout.config).training.max_epochs
    except (OSError, ValueError):
        return None


def check_model_dir(model_dir: Path, cfg: Config, new: dict[str, Any]) -> str:
    """Whether a run of ``cfg`` (fingerprint ``new``) may write into ``model_dir``.

    Returns:
        ``"new"`` (no model there yet), ``"continue"`` (same inputs: resume / train on) or
        ``"finished"`` (same inputs, and the finished run already trained ``max_epochs``
        epochs: nothing to do).

    Raises:
        ModelDirError: the directory holds a model of other labels, split or data/model config,
            or one whose inputs cannot be told; the message names the difference.
    """
    if not model_dir.exists() or not is_model_dir(model_dir):
        return "new"
    how = (
        "to replace it, rerun with --overwrite (the old model is kept until the new one is "
        "complete); to keep it, train into another folder (training.output_dir=...)"
    )
    old = _read_fingerprint(model_dir)
    config = ModelDir(model_dir).config
    if old is not None:
        found = differences(old, new)
    elif config.is_file():
        try:
            saved = load_config(config).to_dict()
        except (OSError, ValueError) as err:
            raise ModelDirError(
                f"{config}: unreadable ({err}), so this model's inputs are unknown; {how}"
            ) from None
        found = config_differences(comparable_sections(saved), new["config"])
    else:
        raise ModelDirError(
            f"{model_dir}: holds checkpoints but no config.yaml, so what they were trained on is "
            f"unknown; {how}"
        )
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise ModelDirError(
            f"training.output_dir: {model_dir} holds a model trained on other inputs ({shown}); "
            f"{how}"
        )
    trained = _trained_epochs(model_dir)
    if trained is not None and trained >= cfg.training.max_epochs:
        return "finished"
    return "continue"


def write_fingerprint(model_dir: Path, record: dict[str, Any]) -> None:
    with atomic_write(ModelDir(model_dir).fingerprint, "w") as handle:
        json.dump(record, handle, indent=2)


def staging_dir(model_dir: Path) -> Path:
    """A fresh temporary sibling of ``model_dir`` to build a replacement in."""
    return model_dir.parent / f".{model_dir.name}.lpray-new-{uuid.uuid4().hex[:8]}"


def swap_in(staged: Path, model_dir: Path) -> None:
    """Replace ``model_dir`` by the complete ``staged`` one (two renames; the old one is kept
    aside until the new one is in place, then deleted)."""
    replace_folder(staged, model_dir)
    log.info("replaced %s with the new model", model_dir)


def discard(staged: Path) -> None:
    """Remove a staging folder after a failed replacement."""
    shutil.rmtree(staged, ignore_errors=True)

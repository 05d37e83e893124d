"""What a sweep keeps in its experiment directory beside Ray Tune's own files.

::

    EXPERIMENT_DIR/                  Tune's: tuner.pkl, experiment_state-*.json, trial folders
    EXPERIMENT_DIR/lpray/sweep.json  the base config, the resolved sweep file, label counts
    EXPERIMENT_DIR/lpray/epochs/<trial_id>.json   every epoch each trial trained (see below)
    EXPERIMENT_DIR/train/<trial_id>/ the trial's Ray Train run (checkpoints, restored on resume)
    EXPERIMENT_DIR/report/           tables, plots and best configs (``lpray sweep-report``)

The epoch log is written by the Train controller right after each epoch's checkpoint is
persisted, one row per epoch TRAINED (an epoch trained twice, e.g. after a crash, appears twice).
It is the sweep's ground truth for compute spent and for per-epoch metrics: Tune's own per-trial
``result.json`` loses the rows a killed driver had not flushed and restarts its counters when a
trial is resumed without a Tune checkpoint. Both files are rewritten atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lpray.io.storage import atomic_write, exists, filesystem, join

META = "lpray/sweep.json"
EPOCHS = "lpray/epochs"
TRAIN = "train"
REPORT = "report"


@dataclass
class SweepMeta:
    """Everything needed to resume or report a sweep without its original files."""

    config: dict[str, Any]  # the base config (resolved), nested
    sweep: dict[str, Any]  # SweepSpec.to_dict()
    label_counts: dict[str, int]  # train_frames label -> labeled frames used


def write_meta(experiment_dir: str, meta: SweepMeta) -> None:
    with atomic_write(join(experiment_dir, META), "w") as handle:
        json.dump(meta.__dict__, handle, indent=2)


def read_meta(experiment_dir: str) -> SweepMeta:
    path = join(experiment_dir, META)
    if not exists(path):
        raise FileNotFoundError(f"{experiment_dir}: not an lpray sweep directory (no {META})")
    fs, inner = filesystem(path)
    with fs.open(inner, "r") as handle:
        return SweepMeta(**json.load(handle))


def train_storage(experiment_dir: str) -> str:
    """Where the trials' Ray Train runs live (one run per trial, named after the trial id)."""
    return join(experiment_dir, TRAIN)


def epoch_log_path(experiment_dir: str, trial_id: str) -> str:
    return join(experiment_dir, EPOCHS, f"{trial_id}.json")


def read_epoch_log(path: str) -> list[dict[str, Any]]:
    """The rows of one trial's epoch log, oldest first ([] when the trial never trained)."""
    if not exists(path):
        return []
    fs, inner = filesystem(path)
    with fs.open(inner, "r") as handle:
        return json.load(handle)


def append_epoch_log(path: str, row: dict[str, Any]) -> None:
    """Add one epoch's row (the log has one writer at a time: the trial's Train controller)."""
    rows = read_epoch_log(path) + [row]
    with atomic_write(path, "w") as handle:
        json.dump(rows, handle)


def latest_per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch (the last one trained), in epoch order."""
    by_epoch = {int(row["epoch"]): row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_all_epoch_logs(experiment_dir: str) -> dict[str, list[dict[str, Any]]]:
    """Every trial's epoch log, by trial id."""
    folder = join(experiment_dir, EPOCHS)
    if not exists(folder):
        return {}
    fs, inner = filesystem(folder)
    logs = {}
    for name in sorted(fs.ls(inner, detail=False)):
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".json") and not base.startswith("."):
            logs[base[: -len(".json")]] = read_epoch_log(join(folder, base))
    return logs

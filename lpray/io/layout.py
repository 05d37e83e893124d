"""The model directory's layout: every file name training writes and prediction reads, once.

A model directory (``training.output_dir``, an ensemble's ``member-<k>/``)::

    config.yaml                  the resolved config
    lpray_fingerprint.json       what the model was trained on (lpray.train.model_dir)
    checkpoints/best.ckpt        lowest validation pixel error (weights only)
    checkpoints/last.ckpt        the resume point (optimizer state included)
    metrics.csv                  one row per epoch
    logs/metrics.csv             the step log (CSVLogger; Ray Train's is exported there too)
    tb/                          the same scalars as TensorBoard events
    labeled_predictions.csv      predictions on the held-out labeled frames,
    labeled_errors.csv           their pixel errors,
    labels_vs_predictions.png    and a figure of some of them
    summary.json                 final figures; written last: the run is finished
    ray_run.json                 Ray Train runs: where the run is on storage
    predictions/                 ``lpray predict``'s default output folder

:class:`ModelDir` names these paths for a root that is a local :class:`~pathlib.Path` (paths come
back as Paths) or a string, local or an fsspec URL (paths come back as strings joined with
:func:`lpray.io.paths.join`), as the code reading them expects. The relative names are module
constants for code that lists or copies a directory's files (uploads, downloads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from lpray.io.paths import join

CONFIG = "config.yaml"
FINGERPRINT = "lpray_fingerprint.json"
CHECKPOINTS = "checkpoints"
BEST = "best"  # checkpoint names: checkpoints/<name>.ckpt
LAST = "last"
BEST_CHECKPOINT = f"{CHECKPOINTS}/{BEST}.ckpt"
LAST_CHECKPOINT = f"{CHECKPOINTS}/{LAST}.ckpt"
METRICS = "metrics.csv"
LOGS = "logs"
STEP_LOG = f"{LOGS}/metrics.csv"
TENSORBOARD = "tb"
LABELED_PREFIX = "labeled"  # lpray.inference.labeled.LabeledResult.save's prefix
LABELED_PREDICTIONS = f"{LABELED_PREFIX}_predictions.csv"
LABELED_ERRORS = f"{LABELED_PREFIX}_errors.csv"
LABELED_FIGURE = "labels_vs_predictions.png"
SUMMARY = "summary.json"
RAY_RUN = "ray_run.json"
PREDICTIONS = "predictions"
# Files whose presence makes a folder a model directory.
MARKERS = (CONFIG, FINGERPRINT, LAST_CHECKPOINT, BEST_CHECKPOINT)
# Folders of logs, which prediction never reads (``ray``: an ensemble's Ray Train runs).
LOG_FOLDERS = frozenset({LOGS, TENSORBOARD, "ray"})

P = TypeVar("P", Path, str)


@dataclass(frozen=True)
class ModelDir(Generic[P]):
    """The paths of one model directory.

    Attributes:
        root: the directory: a Path (paths come back as Paths) or a string, local or an fsspec
            URL (paths come back as ``/``-joined strings).
    """

    root: P

    def path(self, relative: str) -> P:
        """``root/relative`` (``relative`` is ``/``-separated), of the root's kind."""
        if isinstance(self.root, Path):
            return self.root.joinpath(*relative.split("/"))
        return join(self.root, relative)

    def checkpoint(self, name: str = BEST) -> P:
        """``checkpoints/<name>.ckpt`` (``best``, ``last``)."""
        return self.path(f"{CHECKPOINTS}/{name}.ckpt")

    @property
    def config(self) -> P:
        return self.path(CONFIG)

    @property
    def fingerprint(self) -> P:
        return self.path(FINGERPRINT)

    @property
    def checkpoints(self) -> P:
        return self.path(CHECKPOINTS)

    @property
    def best_checkpoint(self) -> P:
        return self.checkpoint(BEST)

    @property
    def last_checkpoint(self) -> P:
        return self.checkpoint(LAST)

    @property
    def metrics(self) -> P:
        return self.path(METRICS)

    @property
    def step_log(self) -> P:
        return self.path(STEP_LOG)

    @property
    def tensorboard(self) -> P:
        return self.path(TENSORBOARD)

    @property
    def labeled_predictions(self) -> P:
        return self.path(LABELED_PREDICTIONS)

    @property
    def labeled_errors(self) -> P:
        return self.path(LABELED_ERRORS)

    @property
    def labeled_figure(self) -> P:
        return self.path(LABELED_FIGURE)

    @property
    def summary(self) -> P:
        return self.path(SUMMARY)

    @property
    def ray_run(self) -> P:
        return self.path(RAY_RUN)

    @property
    def predictions(self) -> P:
        return self.path(PREDICTIONS)

"""Single-process training (CPU or one GPU): ``lpray train CONFIG``.

Writes a model directory::

    MODEL_DIR/config.yaml            the resolved config
    MODEL_DIR/checkpoints/best.ckpt  lowest validation pixel error
    MODEL_DIR/checkpoints/last.ckpt  resume point (a rerun continues from here)
    MODEL_DIR/metrics.csv            one row per epoch
    MODEL_DIR/logs/metrics.csv       the step log; the same scalars as TensorBoard events in tb/
    MODEL_DIR/summary.json           final figures (test pixel error, throughput, ...)
    MODEL_DIR/labeled_predictions.csv, labeled_errors.csv, labels_vs_predictions.png
    MODEL_DIR/lpray_fingerprint.json what the model was trained on (lpray.train.model_dir)

Nothing is written before every input is checked (:func:`lpray.train.data.validate_inputs`) and
the model directory is known to hold nothing or a run of the same inputs
(:func:`lpray.train.model_dir.check_model_dir`); a replacement (``overwrite``) is trained beside
the old model and swapped in only when complete.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lpray.config import Config, save_config
from lpray.io import layout
from lpray.io.layout import ModelDir
from lpray.io.storage import atomic_write
from lpray.train.data import (
    DataBundle,
    fit_loss_states,
    labeled_loader,
    make_train_loader,
    validate_inputs,
)
from lpray.train.model_dir import (
    check_model_dir,
    discard,
    fingerprint,
    is_model_dir,
    staging_dir,
    swap_in,
    write_fingerprint,
)
from lpray.train.module import PoseModule
from lpray.train.trainer import build_trainer, quiet_training_worker, throughput_meter

log = logging.getLogger(__name__)


def build_module(cfg: Config, bundle: DataBundle) -> PoseModule:
    """The module with its PCA fits, in the memory format and compile mode the config asks for."""
    module = PoseModule(cfg.to_dict(), bundle.keypoint_names, fit_loss_states(cfg, bundle))
    if cfg.training.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if cfg.training.compile:
        # In place (nn.Module.compile): parameter names, hence checkpoints, stay unchanged.
        module.model.backbone.compile()
    return module


def plan_run(cfg: Config, overwrite: bool = False) -> tuple[DataBundle, dict[str, Any], str]:
    """Check everything before a run writes: the inputs, then the model directory.

    Returns:
        The data, the run's fingerprint, and ``"new"``, ``"continue"``, ``"finished"`` or
        (with ``overwrite``, over an existing model) ``"replace"``.

    Raises:
        UserError: a bad input, or a model directory of other inputs (without ``overwrite``).
    """
    model_dir = Path(cfg.training.output_dir)
    bundle = validate_inputs(cfg)
    record = fingerprint(cfg, bundle)
    if overwrite:
        state = "replace" if model_dir.exists() and is_model_dir(model_dir) else "new"
    else:
        state = check_model_dir(model_dir, cfg, record)
    return bundle, record, state


def report_finished(model_dir: Path) -> None:
    log.info(
        "%s: already trained for training.max_epochs on these labels; nothing to do (raise "
        "training.max_epochs to train on, or --overwrite to train it again)",
        model_dir,
    )


def train(cfg: Config, overwrite: bool = False) -> Path:
    """Train one model; returns its model directory. Resumes from ``last.ckpt`` when present.

    Args:
        cfg: the run's config; ``training.output_dir`` is the model directory.
        overwrite: replace a model of other inputs in ``training.output_dir`` (trained in a
            temporary sibling, swapped in when complete). Without it such a directory is an
            error (:class:`~lpray.train.model_dir.ModelDirError`).
    """
    model_dir = Path(cfg.training.output_dir)
    bundle, record, state = plan_run(cfg, overwrite)
    if state == "finished":
        report_finished(model_dir)
        return model_dir
    work = staging_dir(model_dir) if state == "replace" else model_dir
    if state == "continue":
        log.info("%s: continuing the run there (same labels, split and model)", model_dir)
    try:
        _fit(cfg, bundle, record, work)
    except BaseException:
        if work != model_dir:
            discard(work)
        raise
    if work != model_dir:
        swap_in(work, model_dir)
    return model_dir


def _fit(cfg: Config, bundle: DataBundle, record: dict[str, Any], model_dir: Path) -> None:
    quiet_training_worker()
    pl.seed_everything(cfg.training.seed, workers=True)
    module = build_module(cfg, bundle)
    model_dir.mkdir(parents=True, exist_ok=True)
    paths = ModelDir(model_dir)
    save_config(cfg, paths.config)
    write_fingerprint(model_dir, record)
    context = module.model.context
    trainer = build_trainer(cfg, model_dir)
    meter = throughput_meter(trainer)
    device = "cuda" if trainer.accelerator.__class__.__name__.startswith("CUDA") else "cpu"
    train_loader = make_train_loader(cfg, bundle, context, device=device)
    val_loader = labeled_loader(
        cfg,
        bundle,
        bundle.split.val if len(bundle.split.val) else bundle.split.train,
        False,
        context,
    )
    last = paths.last_checkpoint
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.exists() else None)
    train_seconds = time.perf_counter() - started
    rate = meter.frames / meter.seconds if meter.seconds else None
    write_summary(cfg, bundle, model_dir, train_seconds, meter.steps, rate)


def write_summary(
    cfg: Config,
    bundle: DataBundle,
    model_dir: Path,
    train_seconds: float,
    train_steps: int,
    frames_per_second: float | None,
) -> dict[str, Any]:
    """Evaluate the best checkpoint on the labeled splits; write summary.json and the figures."""
    from lpray.inference.labeled import evaluate_labeled
    from lpray.inference.network import load_network

    trained = load_network(model_dir)
    summary: dict[str, Any] = {
        "train_seconds": train_seconds,
        "train_steps": train_steps,
        "labeled_frames_per_second": frames_per_second,
        "n_train_frames": int(len(bundle.split.train)),
        "n_val_frames": int(len(bundle.split.val)),
        "n_test_frames": int(len(bundle.split.test)),
        "keypoints": bundle.keypoint_names,
    }
    shown = None
    for name in ("train", "val", "test"):
        indices = getattr(bundle.split, name)
        if len(indices) == 0:
            summary[f"{name}_pixel_error"] = None
            continue
        result = evaluate_labeled(trained, bundle.frames.subset(indices))
        summary[f"{name}_pixel_error"] = result.mean_error
        summary[f"{name}_pixel_error_per_keypoint"] = result.per_keypoint
        shown = result  # the last held-out split (test if any) is the one saved and plotted
    if shown is not None:
        shown.save(model_dir, prefix=layout.LABELED_PREFIX)
    paths = ModelDir(model_dir)
    metrics_path = paths.metrics
    if metrics_path.exists():
        import pandas as pd

        errors = pd.read_csv(metrics_path).get("val_pixel_error")
        summary["best_val_pixel_error"] = float(errors.min()) if errors is not None else None
    with atomic_write(paths.summary, "w") as handle:
        json.dump(summary, handle, indent=2)
    return summary

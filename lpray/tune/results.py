"""A sweep's results from storage: tidy tables, plots and the best config per label count.

Everything here is rebuilt from the experiment directory alone (Tune's trial list via
``ExperimentAnalysis`` for each trial's parameters and status, this package's epoch logs for the
metrics and the compute), so ``lpray sweep-report DIR`` works on a finished, a running or an
interrupted sweep, on any machine that can read the storage.

Tables (``report/``):

- ``trials.parquet`` / ``trials.csv``: one row per trial: ``trial_id``, ``status`` (completed,
  stopped = early-stopped by ASHA, error, unfinished), ``label`` and ``n_train_frames`` (labeled
  frames used), ``loss_setting`` (the unsupervised losses switched on), ``final_<metric>``,
  ``best_<metric>``, ``best_epoch``, ``epochs`` (distinct epochs reached), ``trial_epochs``
  (epochs trained, the compute: an epoch trained twice counts twice), ``train_seconds``, and the
  trial's whole config as dotted keys (``losses.temporal.weight``, ...).
- ``epochs.parquet`` / ``epochs.csv``: one row per (trial, epoch) with every reported metric.
- ``best_configs/train_frames=<label>.yaml``: the best trial's config for each label count, ready
  for ``lpray train``; ``best_configs.csv`` lists them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from lpray.config import config_from_dict, save_config
from lpray.io.storage import atomic_write, join
from lpray.losses.registry import list_losses
from lpray.tune.space import SweepSpec, label_name, sweep_from_dict, with_values
from lpray.tune.store import (
    REPORT,
    SweepMeta,
    latest_per_epoch,
    read_all_epoch_logs,
    read_meta,
)

STATUS = {"TERMINATED": "completed", "ERROR": "error"}  # others: unfinished


def tune_trials(experiment_dir: str) -> list[dict[str, Any]]:
    """Tune's record of every trial: id, status and sampled parameters."""
    from ray.tune import ExperimentAnalysis

    from lpray.train.distributed import storage_and_filesystem

    path, filesystem = storage_and_filesystem(experiment_dir)
    analysis = ExperimentAnalysis(path, storage_filesystem=filesystem)
    return [
        {"trial_id": t.trial_id, "tune_status": t.status, "params": dict(t.config)}
        for t in analysis.trials
    ]


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config values as dotted keys; lists become JSON text so every cell is a scalar."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def loss_setting(config: dict[str, Any]) -> str:
    """Which unsupervised losses a config switches on: ``supervised``, ``temporal+pca_singleview``."""
    losses = config["losses"]
    # a config written before a loss was registered has no section for it: off
    active = [n for n in list_losses() if losses.get(n, {}).get("weight", 0) > 0]
    return "+".join(active) or "supervised"


def sweep_tables(experiment_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) tables of a sweep, rebuilt from storage."""
    meta = read_meta(experiment_dir)
    metric = meta.sweep["sweep"]["metric"]
    mode = meta.sweep["sweep"]["mode"]
    logs = read_all_epoch_logs(experiment_dir)
    trial_rows, epoch_rows = [], []
    for trial in tune_trials(experiment_dir):
        config = with_values(meta.config, trial["params"])
        log = logs.get(trial["trial_id"], [])
        epochs = latest_per_epoch(log)
        for row in epochs:
            epoch_rows.append({"trial_id": trial["trial_id"], **row})
        summary = _trial_summary(epochs, metric, mode, int(config["training"]["max_epochs"]))
        status = STATUS.get(trial["tune_status"], "unfinished")
        if status == "completed" and summary["epochs"] < config["training"]["max_epochs"]:
            status = "stopped"
        label = label_name(config["data"]["train_frames"])
        trial_rows.append(
            {
                "trial_id": trial["trial_id"],
                "status": status,
                "tune_status": trial["tune_status"],
                "label": label,
                "n_train_frames": meta.label_counts.get(label),
                "loss_setting": loss_setting(config),
                **summary,
                "trial_epochs": len(log),
                "train_seconds": float(sum(r.get("epoch_seconds", 0.0) for r in log)),
                "params": json.dumps(trial["params"], sort_keys=True),
                **flatten(config),
            }
        )
    return pd.DataFrame(trial_rows), pd.DataFrame(epoch_rows)


def _trial_summary(
    epochs: list[dict[str, Any]], metric: str, mode: str, max_epochs: int
) -> dict[str, Any]:
    values = [(int(r["epoch"]), r.get(metric)) for r in epochs]
    values = [(e, float(v)) for e, v in values if v is not None and math.isfinite(float(v))]
    pick = min if mode == "min" else max
    best = pick(values, key=lambda ev: ev[1]) if values else (None, math.nan)
    return {
        f"final_{metric}": values[-1][1] if values else math.nan,
        f"best_{metric}": best[1],
        "best_epoch": best[0],
        "epochs": len(epochs),
        "labeled_frames_per_second": epochs[-1].get("labeled_frames_per_second")
        if epochs
        else None,
    }


def best_trials(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The best trial (by its best epoch's metric) of each label count, in label-count order."""
    column = f"best_{metric}"
    scored = trials[trials[column].notna()]
    if scored.empty:
        return scored
    order = scored.sort_values(column, ascending=mode == "min", kind="stable")
    best = order.groupby("label", sort=False).head(1)
    return best.sort_values("n_train_frames", kind="stable")


def export_best_configs(
    meta: SweepMeta, spec: SweepSpec, best: pd.DataFrame, out_dir: str
) -> pd.DataFrame:
    """Write each label count's best config as YAML; returns the index of what was written.

    Each exported config trains into its own ``training.output_dir``
    (``<base output_dir>-<sweep name>-train_frames=<label>``) so retraining never overwrites the
    base model.
    """
    rows = []
    base_output = meta.config["training"]["output_dir"].rstrip("/")
    for _, trial in best.iterrows():
        params = json.loads(trial["params"])
        values = with_values(meta.config, params)
        label = trial["label"]
        values["training"]["output_dir"] = (
            f"{base_output}-{spec.settings.name}-train_frames={label}"
        )
        cfg = config_from_dict(values)
        path = join(out_dir, "best_configs", f"train_frames={label}.yaml")
        save_config(cfg, path)
        rows.append(
            {
                "label": label,
                "n_train_frames": trial["n_train_frames"],
                "trial_id": trial["trial_id"],
                f"best_{spec.settings.metric}": trial[f"best_{spec.settings.metric}"],
                "params": trial["params"],
                "path": path,
            }
        )
    return pd.DataFrame(rows)


def _write_table(frame: pd.DataFrame, out_dir: str, stem: str) -> None:
    with atomic_write(join(out_dir, f"{stem}.parquet"), "wb") as handle:
        frame.to_parquet(handle, index=False)
    with atomic_write(join(out_dir, f"{stem}.csv"), "w") as handle:
        frame.to_csv(handle, index=False)


def write_report(experiment_dir: str, out_dir: str | None = None) -> str:
    """Tables, plots and best configs of a sweep into ``out_dir`` (default ``DIR/report``)."""
    from lpray.tune.plots import plot_error_vs_labels, plot_error_vs_params, plot_learning_curves

    out_dir = out_dir or join(experiment_dir, REPORT)
    meta = read_meta(experiment_dir)
    spec = sweep_from_dict(meta.sweep)
    metric, mode = spec.settings.metric, spec.settings.mode
    trials, epochs = sweep_tables(experiment_dir)
    _write_table(trials, out_dir, "trials")
    _write_table(epochs, out_dir, "epochs")
    best = best_trials(trials, metric, mode) if len(trials) else trials
    index = export_best_configs(meta, spec, best, out_dir)
    with atomic_write(join(out_dir, "best_configs.csv"), "w") as handle:
        index.to_csv(handle, index=False)
    plot_error_vs_labels(trials, metric, mode, join(out_dir, "error_vs_labels.png"))
    plot_error_vs_params(trials, spec, metric, join(out_dir, "error_vs_params.png"))
    plot_learning_curves(trials, epochs, metric, join(out_dir, "learning_curves.png"))
    summary = {
        "experiment_dir": experiment_dir,
        "trials": int(len(trials)),
        "status": trials["status"].value_counts().to_dict() if len(trials) else {},
        "trial_epochs": int(trials["trial_epochs"].sum()) if len(trials) else 0,
        "best": index.drop(columns=["params"]).to_dict("records") if len(index) else [],
    }
    with atomic_write(join(out_dir, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2, default=str)
    return out_dir

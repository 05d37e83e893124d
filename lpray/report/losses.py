"""Why a sweep trial's number is what it is: which unsupervised losses acted, and how much.

A trial whose unsupervised weight is positive can still train exactly like the supervised one:
the temporal loss is ``relu(|p(t+1) - p(t)| - epsilon)``, so an epsilon larger than every jump of
the predictions makes it 0 on every step, and the swept weight then multiplies nothing. The
report has to say so, since it is a setting the user must change, not a result. The epoch logs
hold each loss as trained (``train/<loss>``, unweighted, and ``train/<loss>_weighted``, what
entered ``train/total``), which is all this needs.
"""

from __future__ import annotations

import math

import pandas as pd

from lpray.losses.registry import get_loss, list_losses

UNSUPERVISED = tuple(list_losses())
SUPERVISED_SETTING = "supervised (baseline)"
# What makes each loss 0 on every step, and which key to change.
HINTS = {name: get_loss(name).idle_hint for name in UNSUPERVISED}


def weights(trial: pd.Series) -> dict[str, float]:
    """The trial's unsupervised weights (the trials table's ``losses.<name>.weight`` columns)."""
    out = {}
    for name in UNSUPERVISED:
        value = trial.get(f"losses.{name}.weight", 0.0)
        out[name] = 0.0 if value is None or pd.isna(value) else float(value)
    return out


def setting_name(trial_weights: dict[str, float]) -> str:
    active = [n for n, w in trial_weights.items() if w > 0]
    return "semi: " + "+".join(active) if active else SUPERVISED_SETTING


def _mean_share(rows: pd.DataFrame, column: str) -> float:
    """Mean over epochs of ``column / train/total`` (epochs that logged both)."""
    if column not in rows or "train/total" not in rows:
        return 0.0
    part = pd.to_numeric(rows[column], errors="coerce")
    total = pd.to_numeric(rows["train/total"], errors="coerce")
    ok = part.notna() & total.notna() & (total > 0)
    return float((part[ok] / total[ok]).mean()) if ok.any() else math.nan


def loss_activity(trials: pd.DataFrame, epochs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Per trial: its setting and each active loss's share of the total loss; and warnings.

    Args:
        trials: the sweep's trials table (``trial_id``, ``losses.<name>.weight`` columns).
        epochs: its epochs table (one row per trial and epoch, ``train/...`` columns).

    Returns:
        A frame indexed by ``trial_id`` with ``setting`` (``supervised (baseline)`` or
        ``semi: temporal+...``), ``unsupervised_share_%`` (the weighted unsupervised losses'
        mean share of the total training loss over the epochs) and ``<loss>_share_%`` per loss
        any trial switched on; and one warning per (trial, loss) whose weight is positive but
        whose logged loss was 0 in every epoch, plus one when no trial is supervised.
    """
    used = [n for n in UNSUPERVISED if any(weights(t)[n] > 0 for _, t in trials.iterrows())]
    rows, warnings = [], []
    for _, trial in trials.iterrows():
        trial_id = trial["trial_id"]
        w = weights(trial)
        logged = epochs[epochs["trial_id"] == trial_id] if "trial_id" in epochs else epochs
        row: dict[str, object] = {"trial_id": trial_id, "setting": setting_name(w)}
        total_share = 0.0
        for name in used:
            share = _mean_share(logged, f"train/{name}_weighted") if w[name] > 0 else 0.0
            row[f"{name}_share_%"] = 100 * share
            total_share += 0.0 if math.isnan(share) else share
            if w[name] > 0 and _never_active(logged, f"train/{name}"):
                warnings.append(
                    f"trial {trial_id}: losses.{name}.weight = {w[name]:g}, but its logged "
                    f"{name} loss was 0 in every epoch, so the trial trained as the supervised "
                    f"one does; {HINTS[name]}."
                )
        row["unsupervised_share_%"] = 100 * total_share
        rows.append(row)
    if len(trials) and not any(r["setting"] == SUPERVISED_SETTING for r in rows):
        warnings.append(
            "no trial is supervised (every unsupervised weight 0), so nothing here shows what "
            "the unsupervised losses add; put 0 in the weights' grid (e.g. "
            "losses.temporal.weight: {grid: [0, 1.0e-2]})."
        )
    frame = pd.DataFrame(rows).set_index("trial_id") if rows else pd.DataFrame()
    return frame, warnings


def _never_active(rows: pd.DataFrame, column: str) -> bool:
    """True when the loss was logged and was 0 in every logged epoch.

    A trial that logged no training loss at all (it stopped within its first epoch: an epoch's
    row carries the losses from the epochs before it) is not judged.
    """
    if column not in rows:
        return False
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return bool(len(values)) and bool((values == 0).all())

"""What a pipeline report adds to its tables so a reader can tell why a number is what it is.

:func:`add_evidence` takes the sections :mod:`lpray.pipeline` built from the stages' outputs and
adds, from the same run folder:

- what ran and how long each stage took (the stage markers);
- per sweep trial: supervised baseline or which unsupervised losses, and their share of the total
  training loss; a warning for every unsupervised loss that was switched on but never acted
  (:mod:`lpray.report.losses`);
- on a synthetic project, errors against the exact truth of the unseen test videos: every sweep
  trial's network and every ensemble member, their median and the EKS output
  (:mod:`lpray.report.truth`), as tables, CSV files and plots under ``RUN/truth/``.

Each part is skipped, with a log line, when its inputs are missing, so a partial run still gets a
report.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from lpray.io.storage import atomic_write, exists, filesystem, join
from lpray.report import truth
from lpray.report.html import ReportSections
from lpray.report.losses import SUPERVISED_SETTING, loss_activity

logger = logging.getLogger(__name__)

TRUTH_DIR = "truth"
STAGES = ("sweep", "ensemble", "track")  # the stages that ran before the report


def _read_json(path: str) -> Any:
    fs, inner = filesystem(path)
    with fs.open(inner, "r") as handle:
        return json.load(handle)


def _read_table(path: str) -> pd.DataFrame:
    fs, inner = filesystem(path)
    with fs.open(inner, "rb") as handle:
        data = handle.read()
    if path.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data))


def _markers(run_dir: str) -> dict[str, dict[str, Any]]:
    out = {}
    for stage in STAGES:
        path = join(run_dir, "stages", f"{stage}.json")
        if exists(path):
            out[stage] = _read_json(path)
    return out


def add_evidence(sections: ReportSections, run_dir: str | Path) -> ReportSections:
    """Add timings, loss activity and truth errors to ``sections`` (changed in place, returned)."""
    run_dir = str(run_dir)
    markers = _markers(run_dir)
    info = dict(sections.run_info or {})
    info.update(_what_ran(run_dir, markers))
    sections.run_info = info
    trials = epochs = None
    sweep = markers.get("sweep", {})
    if sweep.get("ran"):
        report = join(sweep["experiment_dir"], "report")
        trials = _read_table(join(report, "trials.parquet"))
        epochs = _read_table(join(report, "epochs.parquet"))
        activity, warnings = loss_activity(trials, epochs)
        sections.sweep_warnings = [*sections.sweep_warnings, *warnings]
        if sections.sweep_trials is not None and len(activity):
            sections.sweep_trials = _with_activity(sections.sweep_trials, activity)
            sections.sweep_notes = [
                *sections.sweep_notes,
                "unsupervised share %: the weighted unsupervised losses' share of the total "
                "training loss, averaged over the epochs (per loss in the <loss> share % "
                "columns); 0 for the supervised baseline.",
            ]
    try:
        _add_truth(sections, run_dir, markers, trials)
    except (OSError, ValueError, KeyError) as err:
        # the report must still be written; the reader is told why the truth part is missing
        logger.warning("truth scores left out of the report: %s", err)
        sections.sweep_notes = [*sections.sweep_notes, f"Not scored against truth: {err}"]
    return sections


def _with_activity(table: pd.DataFrame, activity: pd.DataFrame) -> pd.DataFrame:
    """The sweep table with ``setting`` after ``trial_id`` and the loss shares at the end."""
    merged = table.join(activity, on="trial_id")
    columns = list(table.columns)
    at = columns.index("trial_id") + 1 if "trial_id" in columns else 0
    order = [*columns[:at], "setting", *columns[at:]]
    order += [c for c in activity.columns if c != "setting"]
    return merged[order]


def _what_ran(run_dir: str, markers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Run-info lines: each stage's work and time (from the markers the stages wrote)."""
    lines: dict[str, str] = {}
    sweep = markers.get("sweep", {})
    if sweep.get("ran"):
        report = join(sweep["experiment_dir"], "report")
        trials = _read_table(join(report, "trials.csv"))
        epochs = _read_table(join(report, "epochs.csv"))
        steps = epochs.groupby("trial_id")["step"].max() if "step" in epochs else pd.Series()
        lines["sweep ran"] = (
            f"{len(trials)} trials, {int(trials['epochs'].max())} epochs"
            + (f" ({int(steps.max())} training steps)" if len(steps) else "")
            + " each"
        )
    ensemble = markers.get("ensemble")
    if ensemble:
        done = ensemble.get("members_done", [])
        lines["ensemble ran"] = f"{len(done)} members ({', '.join(done)})"
    track = markers.get("track")
    if track:
        summary = join(run_dir, "track", "summary.csv")
        frames = _read_table(summary)["frames"].sum() if exists(summary) else None
        lines["tracking ran"] = f"{len(track.get('videos_done', []))} videos" + (
            f", {int(frames)} frames, each member + EKS" if frames is not None else ""
        )
    times = {s: float(m["seconds"]) for s, m in markers.items() if "seconds" in m}
    if times:
        parts = ", ".join(f"{s} {t:.0f} s" for s, t in times.items())
        lines["time"] = f"{parts}; {sum(times.values()) / 60:.1f} min before this report"
    return lines


def _project_root(run_dir: str) -> str:
    from lpray.config import load_config

    cfg = load_config(join(run_dir, "config.yaml"))
    root = cfg.data.synthetic_dir if cfg.data.root == "synthetic" else cfg.data.root
    return str(Path(root).expanduser().resolve()) if "://" not in root else root


def _add_truth(
    sections: ReportSections,
    run_dir: str,
    markers: dict[str, dict[str, Any]],
    trials: pd.DataFrame | None,
) -> None:
    summary_path = join(run_dir, "track", "summary.csv")
    if "track" not in markers or not exists(summary_path):
        return
    videos = _read_table(summary_path)
    videos = videos[videos["status"] == "done"]
    truths = truth.project_truths(_project_root(run_dir), list(videos["path"]))
    if not truths:
        logger.info("no synthetic truth for the tracked videos; nothing scored against truth")
        return
    keys = {truth.video_stem(p): k for k, p in zip(videos["video"], videos["path"])}
    names = ", ".join(sorted(truths))
    out = join(run_dir, TRUTH_DIR)
    headline: dict[str, Any] = dict(sections.headline or {})
    what = (
        f"video error px: mean distance to the exact synthetic truth over every frame and "
        f"visible keypoint of the unseen test video{'s' if len(truths) > 1 else ''} ({names}), "
        "which no network saw in training."
    )
    if trials is not None and sections.sweep_trials is not None:
        train_dir = join(markers["sweep"]["experiment_dir"], "train")
        errors = truth.trial_errors(train_dir, trials, truths)
        table = _lead_with(sections.sweep_trials.join(errors, on="trial_id"))
        sections.sweep_trials = table
        _write_csv(table, join(out, "trials.csv"))
        plot = join(out, "trials.png")
        from lpray.report.figures import trial_error_plot

        trial_error_plot(table, plot)
        sections.sweep_plots = [plot, *sections.sweep_plots]
        sections.sweep_notes = [
            *sections.sweep_notes,
            what + " Each trial is scored with its kept checkpoint of lowest validation error.",
        ]
        baseline = table["setting"] == SUPERVISED_SETTING if "setting" in table else False
        supervised, semi = table[baseline], table[~baseline]
        if len(supervised):
            headline["supervised video error (px)"] = float(supervised["video_error_px"].min())
        if len(semi) and semi["video_error_px"].notna().any():
            best = semi.loc[semi["video_error_px"].idxmin()]
            headline["best semi-supervised video error (px)"] = float(best["video_error_px"])
            if len(supervised):
                sections.sweep_notes = [
                    *sections.sweep_notes,
                    _comparison(best, float(supervised["video_error_px"].min())),
                ]
    track = _read_json(join(run_dir, "track", "manifest.json"))
    comparison = truth.ensemble_errors(join(run_dir, "track"), track["members"], truths, keys)
    sections.ensemble_comparison = comparison
    _write_csv(comparison, join(out, "ensemble.csv"), index=True)
    from lpray.report.figures import ensemble_error_plot

    plot = join(out, "ensemble.png")
    ensemble_error_plot(comparison, plot)
    sections.ensemble_plots = [plot, *sections.ensemble_plots]
    sections.ensemble_notes = [
        *sections.ensemble_notes,
        what + " " + _members_differ(markers) + " EKS smooths them together.",
    ]
    if "EKS" in comparison.index:
        eks = float(comparison.loc["EKS", "video_error_px"])
        headline["EKS video error (px)"] = eks
        members = comparison.drop(index=["EKS", "member median"], errors="ignore")
        if len(members):
            best = float(members["video_error_px"].min())
            median = float(comparison.loc["member median", "video_error_px"])
            verdict = "below every member" if eks < best else "not below every member"
            sections.ensemble_notes = [
                *sections.ensemble_notes,
                f"EKS: {eks:.2f} px, {verdict} (best member {best:.2f} px, member median "
                f"{median:.2f} px, {100 * (eks - median) / median:+.0f}% against the median).",
            ]
    sections.headline = headline


def _members_differ(markers: dict[str, dict[str, Any]]) -> str:
    """What the ensemble's members differ in (from its ``ensemble.json``), in one sentence."""
    ensemble_dir = markers.get("ensemble", {}).get("ensemble_dir")
    path = join(ensemble_dir, "ensemble.json") if ensemble_dir else None
    manifest = _read_json(path) if path and exists(path) else {}
    records = manifest.get("members", [])
    if not records:
        return "Members are the tracked predictions of each seed."
    seeds = ", ".join(str(r["seed"]) for r in records)
    if manifest.get("vary_labels"):
        splits = ", ".join(str(r["split_seed"]) for r in records)
        return (
            f"Members differ in their seed ({seeds}) and in their labeled frames (split seeds "
            f"{splits}): each trains on its own subset of the labeled frames."
        )
    return f"Members differ only in their seed ({seeds}); they share the labeled frames."


def _lead_with(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares first, right after ``trial_id`` and ``setting``."""
    first = ("trial_id", "setting", "video_error_px", "unsupervised_share_%")
    first = [c for c in first if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def _comparison(best: pd.Series, supervised: float) -> str:
    """One sentence: the best semi-supervised trial against the supervised baseline."""
    error = float(best["video_error_px"])
    change = 100 * (error - supervised) / supervised
    verdict = (
        "the unsupervised losses lowered the error"
        if error < supervised
        else "no semi-supervised trial beat the supervised one at this setting"
    )
    return (
        f"On the unseen video the best semi-supervised trial ({best['trial_id']}, "
        f"{best['setting']}) scores {error:.2f} px against the supervised baseline's "
        f"{supervised:.2f} px ({change:+.1f}%): {verdict}."
    )


def _write_csv(frame: pd.DataFrame, path: str, index: bool = False) -> None:
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=index)

"""One pipeline run: sweep -> ensemble of the best config -> track a corpus (+ EKS) -> report.

``lpray pipeline PIPELINE.yaml [overrides]``. A pipeline file::

    config: synthetic.yaml          # training config, relative to this file
    overrides: [training.max_epochs=5]
    sweep: sweep_synthetic.yaml     # sweep file (relative to this file), inline, or null
    ensemble: {seeds: 3, cpus_per_member: 1}
    track: {videos: null}           # globs/URLs; null: the synthetic project's videos-test/*
    storage: {path: outputs/pipeline}

Layout of the run folder (``storage.path``)::

    pipeline.yaml             the resolved pipeline (as run the first time)
    sweep/<name>/             the Ray Tune experiment and its report/ (best_configs/...)
    config.yaml               the config the ensemble trains: the sweep's best, else the base
    ensemble/                 member-<k>/ and ensemble.json
    track/                    per-video tables, <video>.eks.csv, strips, summary.csv
    truth/                    synthetic projects: trials' and ensemble's errors against truth
    report.html               one self-contained page
    stages/<stage>.json       done markers (sweep, ensemble, track, report), written last

Every stage is skipped when its marker exists; an interrupted stage resumes (the sweep from its
Tune state, the ensemble's finished members and the corpus's finished videos are kept).

Storage: ``storage.path`` is a local folder (a shared filesystem on several nodes) or any fsspec
URL (``s3://``, ``gs://``, ``az://``, ...). On a URL every stage reads and writes there, from
whichever node runs the work: Tune and Ray Train through fsspec's filesystem for the URL (its
endpoint and credentials from the environment: ``AWS_ENDPOINT_URL``, the standard credential
chains), ensemble members uploaded by the nodes that train them, tracked videos by the nodes
that smooth them; the driver's disk holds only caches (the ensemble fetched for tracking).
Each object is written in one piece, and every record that says something is finished (a stage
marker, a member's ``summary.json``, a video's ``done.json``) is written after what it vouches
for, so an interrupted upload is redone by a rerun, never taken as finished.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lpray.config import load_config, save_config
from lpray.configkit import (
    ConfigError,
    apply_overrides,
    build,
    check,
    errors_in,
    load_mapping,
)
from lpray.errors import UserError
from lpray.io.storage import atomic_write, exists, is_local, join, local_path, makedirs, read_text

logger = logging.getLogger(__name__)

STAGES = ("sweep", "ensemble", "track", "report")
SECTIONS = ("config", "overrides", "sweep", "ensemble", "track", "storage")


class PipelineError(ConfigError):
    """A pipeline file or override that does not describe a valid pipeline."""


class StageError(UserError, RuntimeError):
    """A stage that produced nothing the next stage can use (every member failed, ...)."""


# Field checks (lpray.configkit.check): build refuses these values, naming the key.
_AT_LEAST_ONE = check(lambda n: n >= 1, "must be >= 1, got {value}")


@dataclass
class EnsembleSettings:
    seeds: int = field(default=3, metadata=_AT_LEAST_ONE)
    cpus_per_member: float = 1.0
    gpus_per_member: float | None = None  # None: one GPU per member when the cluster has GPUs
    workers: int = field(default=1, metadata=_AT_LEAST_ONE)
    vary_labels: bool = False
    max_retries: int = 2


@dataclass
class TrackPipelineSettings:
    videos: list[str] | None = None  # None: the synthetic project's unseen test videos
    smooth_param: float | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None
    chunk_size: int | None = None
    backend: str = "auto"
    overlay: str = "strip"
    strip_frames: int = 6
    max_retries: int = 3


@dataclass
class StorageSettings:
    path: str = "outputs/pipeline"  # local folder, or a URL: s3://bucket/run, gs://..., any fsspec


@dataclass
class PipelineSpec:
    config: str | None = None  # resolved against the pipeline file's folder
    overrides: list[str] = field(default_factory=list)
    sweep: Any = None  # path of a sweep file, an inline {sweep:, parameters:} mapping, or None
    sweep_overrides: list[str] = field(default_factory=list)  # sweep.key=value (settings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    track: TrackPipelineSettings = field(default_factory=TrackPipelineSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def run_dir(self) -> Path | str:
        """The run folder: an absolute local path, or the URL (no trailing ``/``)."""
        if is_local(self.storage.path):
            return local_path(self.storage.path).expanduser().resolve()
        return self.storage.path.rstrip("/")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------- loading


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineSpec:
    """Read a pipeline file; resolve its paths; apply command-line overrides.

    Overrides: ``ensemble.*``, ``track.*``, ``storage.*``, ``config=``, ``sweep=`` change the
    pipeline file; ``sweep.key=value`` the sweep's settings (as in ``lpray sweep``); anything else
    (``training.max_epochs=2``) is appended to the config overrides.

    Raises:
        PipelineError: naming the file and key of the first problem.
    """
    path = Path(path)
    values = load_mapping(path, "pipeline", f"a mapping ({', '.join(SECTIONS)})", PipelineError)
    pipeline_overrides, sweep_overrides, config_overrides = [], [], []
    for text in overrides or []:
        key = text.split("=", 1)[0]
        head = key.split(".", 1)[0]
        if head == "sweep" and "." in key:
            sweep_overrides.append(text)
        elif head in SECTIONS and head != "overrides":
            pipeline_overrides.append(text)
        else:
            config_overrides.append(text)
    with errors_in(path, PipelineError):
        values = apply_overrides(values, pipeline_overrides)
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise PipelineError(
                f"unknown pipeline key {unknown[0]} (valid keys: {', '.join(SECTIONS)})"
            )
        for section in ("ensemble", "track", "storage"):
            if values.get(section) is None:
                values.pop(section, None)
        if values.get("overrides") is None:
            values.pop("overrides", None)
        spec = build(PipelineSpec, values)
    base = path.resolve().parent
    if spec.config is not None:
        spec.config = str((base / spec.config).resolve())
    if isinstance(spec.sweep, str):
        spec.sweep = str((base / spec.sweep).resolve())
    elif spec.sweep is not None and not isinstance(spec.sweep, dict):
        raise PipelineError(
            f"{path}: sweep: expected a sweep file path, an inline mapping with 'sweep' and "
            f"'parameters', or null; got {spec.sweep!r}"
        )
    spec.overrides = [*spec.overrides, *config_overrides]
    spec.sweep_overrides = sweep_overrides
    check_pipeline(spec, path)
    return spec


def check_pipeline(spec: PipelineSpec, where: str | Path) -> None:
    """Checks that need no training: files exist, counts positive, config and sweep valid."""
    from lpray.track.tasks import TrackSettings
    from lpray.tune.space import validate_sweep

    def fail(message: str) -> None:
        raise PipelineError(f"{where}: {message}")

    if spec.config is not None and not Path(spec.config).is_file():
        fail(f"config: training config {spec.config} not found")
    if isinstance(spec.sweep, str) and not Path(spec.sweep).is_file():
        fail(f"sweep: sweep file {spec.sweep} not found")
    if spec.sweep is None and spec.sweep_overrides:
        fail(f"sweep overrides {spec.sweep_overrides} given but sweep is null")
    if spec.track.videos is not None and not spec.track.videos:
        fail("track.videos: empty list (give globs, or null for the synthetic test videos)")
    try:
        TrackSettings(
            smooth_param=spec.track.smooth_param,
            chunk_size=spec.track.chunk_size,
            backend=spec.track.backend,
            overlay=spec.track.overlay,
            strip_frames=spec.track.strip_frames,
        )
    except ValueError as err:
        fail(f"track: {err}")
    if not spec.storage.path:
        fail("storage.path: empty")
    cfg = load_config(spec.config, spec.overrides)
    if spec.sweep is not None:
        validate_sweep(cfg, load_sweep_spec(spec))


def load_sweep_spec(spec: PipelineSpec, extra: list[str] | None = None) -> Any:
    """The pipeline's :class:`~lpray.tune.space.SweepSpec` (file or inline), overrides applied."""
    from lpray.tune.space import SweepError, load_sweep, sweep_from_dict

    overrides = [*spec.sweep_overrides, *(extra or [])]
    if isinstance(spec.sweep, str):
        return load_sweep(spec.sweep, overrides)
    values = {k: v for k, v in spec.sweep.items()}
    values["sweep"] = {"name": "sweep", **(values.get("sweep") or {})}
    with errors_in("sweep (inline)", SweepError):
        return sweep_from_dict(apply_overrides(values, overrides))


def at(run_dir: Path | str, *parts: str) -> Path | str:
    """A path inside the run folder, of the run folder's kind (Path, or URL string)."""
    return run_dir.joinpath(*parts) if isinstance(run_dir, Path) else join(run_dir, *parts)


# ------------------------------------------------------------------------------- stages


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    seconds: float
    record: dict[str, Any]


@dataclass
class PipelineResult:
    run_dir: Path | str
    report: Path | str
    stages: list[StageOutcome]

    @property
    def skipped(self) -> list[str]:
        return [s.name for s in self.stages if s.skipped]


def marker_path(run_dir: Path | str, stage: str) -> Path | str:
    return at(run_dir, "stages", f"{stage}.json")


def read_marker(run_dir: Path | str, stage: str) -> dict[str, Any] | None:
    path = marker_path(run_dir, stage)
    return json.loads(read_text(path)) if exists(path) else None


def _write_json(path: Path | str, values: dict[str, Any]) -> None:
    with atomic_write(str(path), "w") as handle:
        json.dump(values, handle, indent=2, default=str)


def run_pipeline(
    spec: PipelineSpec, progress: bool = True, log: Callable[[str], None] | None = None
) -> PipelineResult:
    """Run every stage not yet done; returns where everything is.

    ``log`` receives the progress lines (default: INFO messages of this module's logger).

    Before anything is written, the inputs of the stages still to run are checked once: the
    labels and every labeled image of the config, and that the video patterns to track match.
    """
    log = log or logger.info
    run_dir = spec.run_dir
    check_inputs(spec, run_dir)
    makedirs(run_dir)
    if not exists(at(run_dir, "pipeline.yaml")):
        with atomic_write(at(run_dir, "pipeline.yaml"), "w") as handle:
            yaml.safe_dump(spec.to_dict(), handle, sort_keys=False)
    bodies = {
        "sweep": lambda: _stage_sweep(spec, run_dir),
        "ensemble": lambda: _stage_ensemble(spec, run_dir, progress),
        "track": lambda: _stage_track(spec, run_dir, progress),
        "report": lambda: _stage_report(spec, run_dir),
    }
    outcomes = []
    for stage in STAGES:
        record = read_marker(run_dir, stage)
        if record is not None:
            log(f"[pipeline] {stage}: done before, skipped")
            outcomes.append(StageOutcome(stage, True, 0.0, record))
            continue
        log(f"[pipeline] {stage}: running")
        started = time.perf_counter()
        record = bodies[stage]()
        seconds = time.perf_counter() - started
        record = {"stage": stage, "seconds": round(seconds, 2), **record}
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json(marker_path(run_dir, stage), record)  # last: the stage is done
        outcomes.append(StageOutcome(stage, False, seconds, record))
    return PipelineResult(run_dir, at(run_dir, "report.html"), outcomes)


def check_inputs(spec: PipelineSpec, run_dir: Path | str) -> None:
    """Check what the stages still to run read (labels, images, videos), before any writes."""
    from lpray.io.storage import expand
    from lpray.train.data import validate_inputs

    todo = [stage for stage in STAGES if read_marker(run_dir, stage) is None]
    if "sweep" in todo or "ensemble" in todo:
        validate_inputs(load_config(spec.config, spec.overrides))
    if "track" in todo and spec.track.videos:
        # every pattern must match; a corrupt video is the track stage's to record as failed
        # while the others are tracked
        expand(spec.track.videos)


def _stage_sweep(spec: PipelineSpec, run_dir: Path | str) -> dict[str, Any]:
    """Run (or resume) the sweep; write the config the ensemble trains: its best, or the base."""
    cfg = load_config(spec.config, spec.overrides)
    config_path = str(at(run_dir, "config.yaml"))
    if spec.sweep is None:
        save_config(cfg, config_path)
        return {"ran": False, "config": config_path}
    from lpray.tune.sweep import experiment_path, resume_sweep, run_sweep

    storage = f"sweep.storage_path={at(run_dir, 'sweep')}"
    sweep_spec = load_sweep_spec(spec, [storage])
    experiment = experiment_path(sweep_spec)
    if exists(join(experiment, "tuner.pkl")):
        experiment = resume_sweep(experiment)
    else:
        experiment = run_sweep(cfg, sweep_spec)
    best = best_config_row(experiment, sweep_spec.settings.metric, sweep_spec.settings.mode)
    best_cfg = load_config(best["path"])
    best_cfg.training.output_dir = str(at(run_dir, "ensemble"))
    save_config(best_cfg, config_path)
    return {"ran": True, "experiment_dir": experiment, "best": best, "config": config_path}


def best_config_row(experiment_dir: Path | str, metric: str, mode: str) -> dict[str, Any]:
    """The best exported config over all label counts (lowest best metric for mode=min)."""
    index = pd.read_csv(join(str(experiment_dir), "report", "best_configs.csv"))
    column = f"best_{metric}"
    index = index[index[column].notna()] if column in index else index.iloc[0:0]
    if index.empty:
        raise StageError(
            f"{experiment_dir}: no trial of the sweep reported {metric}; see the trials' "
            "errors in its report/ folder"
        )
    row = index.sort_values(column, ascending=mode == "min", kind="stable").iloc[0]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _stage_ensemble(spec: PipelineSpec, run_dir: Path | str, progress: bool) -> dict[str, Any]:
    from lpray.ensemble.run import MemberResources, train_ensemble

    cfg = load_config(at(run_dir, "config.yaml"))
    e = spec.ensemble
    result = train_ensemble(
        cfg,
        e.seeds,
        at(run_dir, "ensemble"),
        MemberResources(e.cpus_per_member, e.gpus_per_member, e.workers),
        vary_labels=e.vary_labels,
        max_retries=e.max_retries,
        progress=progress,
    )
    done = [r["name"] for r in result.records if r["status"] == "done"]
    if not done:
        raise StageError(
            f"{result.out_dir}: every ensemble member failed ({result.failed}); their errors "
            "are in ensemble.json"
        )
    return {
        "ensemble_dir": str(result.out_dir),
        "members_done": done,
        "members_failed": result.failed,
        "launched": result.launched,
    }


def default_videos(cfg_path: Path | str) -> list[str]:
    """The unseen test videos of the config's synthetic project."""
    from lpray.train.data import resolve_root

    _, _, videos = resolve_root(load_config(cfg_path))
    if not videos:
        raise PipelineError(
            "track.videos: not given and the config's project has no videos-test/ "
            "(not a synthetic project); list the videos to track"
        )
    return videos


def _stage_track(spec: PipelineSpec, run_dir: Path | str, progress: bool) -> dict[str, Any]:
    from lpray.track.corpus import TaskResources, track_corpus
    from lpray.track.tasks import TrackSettings

    t = spec.track
    videos = t.videos or default_videos(at(run_dir, "config.yaml"))
    result = track_corpus(
        at(run_dir, "ensemble"),
        videos,
        at(run_dir, "track"),
        TrackSettings(
            smooth_param=t.smooth_param,
            chunk_size=t.chunk_size,
            backend=t.backend,
            overlay=t.overlay,
            strip_frames=t.strip_frames,
        ),
        TaskResources(t.cpus_per_task, t.gpus_per_task, t.max_retries),
        progress=progress,
    )
    if not result.done:
        raise StageError(
            f"{result.out}: no video was tracked ({result.failed}); their errors are in summary.csv"
        )
    return {
        "out": result.out,
        "videos_done": result.done,
        "videos_failed": result.failed,
        "launched_tasks": result.launched_tasks,
    }


# ------------------------------------------------------------------------------- report


def report_sections(spec: PipelineSpec, run_dir: Path | str) -> Any:
    """The HTML report's sections from what the stages wrote (local or at the run's URL)."""
    from lpray.ensemble.manifest import read_manifest
    from lpray.io.storage import matches
    from lpray.report.html import ReportSections

    sweep = read_marker(run_dir, "sweep") or {}
    sweep_trials, sweep_plots = None, []
    if sweep.get("ran"):
        report = join(sweep["experiment_dir"], "report")
        sweep_trials = sweep_table(pd.read_parquet(join(report, "trials.parquet")))
        sweep_plots = matches(join(report, "*.png"))
    manifest = read_manifest(at(run_dir, "ensemble"))
    members = pd.DataFrame(
        [
            {
                "member": m["name"],
                "seed": m["seed"],
                "status": m["status"],
                **(m.get("metrics") or {}),
                "train_time_s": m.get("seconds"),
                "node_id": m.get("node_id"),
            }
            for m in manifest["members"]
        ]
    )
    videos = pd.read_csv(str(at(run_dir, "track", "summary.csv")))
    videos = videos.rename(columns={"mean_posterior_var": "mean_posterior_variance"})
    videos["error"] = videos["error"].astype(object).fillna("")
    strips = matches(str(at(run_dir, "track", "*", "*.labeled.png")))
    best = sweep.get("best") or {}
    info = {
        "run folder": str(run_dir),
        "config": spec.config or "(defaults)",
        "config overrides": " ".join(spec.overrides) or "-",
        "sweep": spec.sweep
        if isinstance(spec.sweep, str)
        else ("inline" if spec.sweep else "(none)"),
        "best sweep trial": (
            f"{best.get('trial_id')} (train_frames={best.get('label')})" if best else "-"
        ),
        "ensemble seeds": ", ".join(str(s) for s in manifest["seeds"]),
        "videos": len(videos),
    }
    return ReportSections(
        title=f"lpray pipeline: {str(run_dir).rstrip('/').rsplit('/', 1)[-1]}",
        run_info=info,
        sweep_trials=sweep_trials,
        sweep_plots=sweep_plots,
        ensemble_members=members,
        tracking_videos=videos,
        sample_frames=strips,
    )


def sweep_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The sweep's trials table in the report's column names: ids, searched values, errors."""
    params = [json.loads(p) for p in trials["params"]]
    searched = sorted({k for p in params for k in p} - {"data.train_frames"})
    table = pd.DataFrame(
        {
            "trial_id": trials["trial_id"],
            "status": trials["status"],
            "train_frames": trials["label"],
            **{k: [p.get(k) for p in params] for k in searched},
        }
    )
    for column in ("final_val_pixel_error", "best_val_pixel_error", "epochs"):
        if column in trials:
            table[column] = trials[column]
    table["time_s"] = trials["train_seconds"]
    return table


def _stage_report(spec: PipelineSpec, run_dir: Path | str) -> dict[str, Any]:
    from lpray.report.evidence import add_evidence
    from lpray.report.html import write_report

    path = write_report(run_dir, add_evidence(report_sections(spec, run_dir), run_dir))
    return {"report": str(path)}


def summary_lines(result: PipelineResult) -> list[str]:
    """The short summary printed at the end of ``lpray pipeline``."""
    lines = [f"pipeline run folder: {result.run_dir}"]
    for s in result.stages:
        how = "skipped (done before)" if s.skipped else f"ran in {s.seconds:.1f} s"
        extra = ""
        if s.name == "sweep" and s.record.get("best"):
            b = s.record["best"]
            metric = next((k for k in b if k.startswith("best_")), None)
            value = b.get(metric) if metric else None
            extra = f": best trial {b['trial_id']} (train_frames={b['label']})"
            if value is not None:
                extra += f" {metric}={float(value):.3f}"
        elif s.name == "sweep":
            extra = ": no sweep, base config"
        elif s.name == "ensemble":
            extra = f": {len(s.record.get('members_done', []))} members done"
            if s.record.get("members_failed"):
                extra += f", failed {s.record['members_failed']}"
        elif s.name == "track":
            extra = f": {len(s.record.get('videos_done', []))} videos tracked + EKS"
            if s.record.get("videos_failed"):
                extra += f", failed {s.record['videos_failed']}"
        lines.append(f"  {s.name}: {how}{extra}")
    lines.append(f"report: {result.report}")
    return lines

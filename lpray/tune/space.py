"""The sweep file (SWEEP.yaml): search spaces over config keys plus sweep settings, validated.

A sweep file has two sections::

    sweep:                       # how to search (SweepSettings below)
      num_samples: 4             # trials per cell of the grid
      search: optuna             # optuna (TPE) | random | grid
      scheduler: asha            # asha | fifo
    parameters:                  # dotted config key -> {kind: values}
      losses.temporal.weight: {loguniform: [1.0e-5, 1.0e-1]}
      model.backbone: {choice: [resnet18, resnet34]}
      data.train_frames: {grid: [75, 150, 300, all]}

Kinds: ``loguniform`` / ``uniform`` ([low, high]), ``choice`` (sampled by the search algorithm)
and ``grid`` (every value is run, crossed with everything else). Everything is checked here, before
any trial starts, against the :class:`lpray.config.Config` dataclasses: an unknown key, an empty
range or a value the config would refuse stops the sweep with a message naming the key, because a
typo found after an hour of trials costs an hour.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lpray.config import Config, config_from_dict
from lpray.configkit import (
    ConfigError,
    apply_overrides,
    build,
    check,
    errors_in,
    load_mapping,
    require,
)

KINDS = ("loguniform", "uniform", "choice", "grid")
LABEL_KEY = "data.train_frames"
ALL_FRAMES = "all"  # the train_frames value meaning "every labeled frame of the train split"


class SweepError(ConfigError):
    """A sweep file that does not describe a valid sweep; the message names the key."""


# Field checks (lpray.configkit.check): build refuses these values, naming the key.
_AT_LEAST_ONE = check(lambda n: n >= 1, "must be >= 1")
_NOT_NEGATIVE = check(lambda n: n >= 0, "must be >= 0")


@dataclass
class Resources:
    """What one trial takes: a Ray Train run of ``workers`` workers plus a tiny driver."""

    workers: int = field(default=1, metadata=_AT_LEAST_ONE)
    cpus_per_worker: float = field(default=1.0, metadata=check(lambda c: c > 0, "must be > 0"))
    # Fractions (0.5, 0.25) pack several small trials onto one GPU.
    gpus_per_worker: float = field(default=0.0, metadata=_NOT_NEGATIVE)
    # The trial's driver only waits on its Train run: a sliver of a CPU is enough.
    trial_cpus: float = field(default=0.01, metadata=_NOT_NEGATIVE)


@dataclass
class AshaSettings:
    """Asynchronous successive halving: stop the worst trials at epochs grace * rf^k."""

    grace_period: int = field(default=1, metadata=_AT_LEAST_ONE)
    reduction_factor: float = field(default=2.0, metadata=check(lambda r: r > 1, "must be > 1"))


@dataclass
class SweepSettings:
    name: str = field(
        default="sweep",
        metadata=check(lambda n: bool(n) and "/" not in n, "must be a folder name, got {value!r}"),
    )
    storage_path: str = "outputs/sweeps"  # local folder, s3://, gs:// or any fsspec URL
    # trials per grid cell (total = num_samples x grid cells)
    num_samples: int = field(
        default=8, metadata=check(lambda n: n >= 1, "must be >= 1 (got {value}: zero trials)")
    )
    search: Literal["optuna", "random", "grid"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: str = field(
        default="val_pixel_error",
        metadata=check(bool, "must name a reported metric, e.g. val_pixel_error"),
    )
    mode: Literal["min", "max"] = "min"
    max_concurrent_trials: int = field(default=2, metadata=_AT_LEAST_ONE)
    # search=grid: points per loguniform/uniform range
    grid_points: int = field(default=3, metadata=_AT_LEAST_ONE)
    # optuna: random trials per grid cell before TPE takes over
    n_startup_trials: int = field(default=4, metadata=_AT_LEAST_ONE)
    seed: int = 0
    # Ray Train worker-group restarts inside one trial
    max_failures: int = field(default=1, metadata=_NOT_NEGATIVE)
    resources: Resources = field(default_factory=Resources)
    asha: AshaSettings = field(default_factory=AshaSettings)


@dataclass(frozen=True)
class Param:
    """One swept config key: a range (``low``, ``high``) or a list of ``values``."""

    key: str
    kind: Literal["loguniform", "uniform", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()

    @property
    def is_range(self) -> bool:
        return self.kind in ("loguniform", "uniform")

    def points(self, n: int) -> list[Any]:
        """Values a grid search runs: ranges become ``n`` evenly spaced (log-spaced) points."""
        if not self.is_range:
            return list(self.values)
        assert self.low is not None and self.high is not None
        if n == 1:
            mid = math.sqrt(self.low * self.high) if self.kind == "loguniform" else None
            return [mid if mid is not None else (self.low + self.high) / 2]
        if self.kind == "loguniform":
            ratio = math.log(self.high / self.low)
            return [self.low * math.exp(ratio * i / (n - 1)) for i in range(n)]
        return [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]

    def candidates(self) -> list[Any]:
        """The values that bound what this parameter can take (checked against the config)."""
        return [self.low, self.high] if self.is_range else list(self.values)


@dataclass
class SweepSpec:
    settings: SweepSettings
    params: tuple[Param, ...]

    @property
    def grid(self) -> tuple[Param, ...]:
        """Parameters every value of which is run (crossed with the searched ones)."""
        if self.settings.search == "grid":
            return self.params
        return tuple(p for p in self.params if p.kind == "grid")

    @property
    def searched(self) -> tuple[Param, ...]:
        """Parameters the search algorithm samples."""
        return tuple(p for p in self.params if p not in self.grid)

    def grid_cells(self) -> list[dict[str, Any]]:
        """Every combination of the grid parameters' values (one dict per cell)."""
        cells: list[dict[str, Any]] = [{}]
        for param in self.grid:
            points = param.points(self.settings.grid_points)
            cells = [{**cell, param.key: value} for cell in cells for value in points]
        return cells

    @property
    def n_trials(self) -> int:
        return self.settings.num_samples * len(self.grid_cells())

    def to_dict(self) -> dict[str, Any]:
        """The sweep file's content (resolved), e.g. to store beside the results."""
        params = {}
        for p in self.params:
            params[p.key] = {p.kind: [p.low, p.high] if p.is_range else list(p.values)}
        return {"sweep": dataclasses.asdict(self.settings), "parameters": params}


# --------------------------------------------------------------------------------------------
# Reading


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read a sweep file; ``sweep.key=value`` overrides change its settings.

    The default ``sweep.name`` is the file's stem. Raises :class:`SweepError` naming the file and
    key of the first problem (config-dependent checks are in :func:`validate_sweep`).
    """
    path = Path(path)
    values = load_mapping(path, "sweep", "a mapping with 'sweep' and 'parameters'", SweepError)
    if values.get("sweep") is None:
        values["sweep"] = {}
    if isinstance(values["sweep"], dict):
        values["sweep"].setdefault("name", path.stem)
    with errors_in(path, SweepError):
        return sweep_from_dict(apply_overrides(values, overrides or []))


def sweep_from_dict(values: dict[str, Any]) -> SweepSpec:
    """Build a :class:`SweepSpec` from parsed YAML (the inverse of :meth:`SweepSpec.to_dict`)."""
    unknown = sorted(set(values) - {"sweep", "parameters"})
    if unknown:
        raise SweepError(f"unknown section {unknown[0]!r} (valid: sweep, parameters)")
    with errors_in(None, SweepError):
        settings = build(SweepSettings, values.get("sweep") or {}, "sweep")
    raw_params = values.get("parameters") or {}
    if not isinstance(raw_params, dict):
        raise SweepError("parameters: expected a mapping of config keys to search spaces")
    params = tuple(parse_param(str(key), spec) for key, spec in raw_params.items())
    spec = SweepSpec(settings, params)
    check_settings(spec)
    return spec


def parse_param(key: str, spec: Any) -> Param:
    """``{loguniform: [lo, hi]}``, ``{uniform: ...}``, ``{choice: [...]}``, ``{grid: [...]}``;
    a bare list is a grid."""
    where = f"parameters.{key}"
    config_field_type(key)
    if isinstance(spec, list):
        spec = {"grid": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SweepError(f"{where}: expected one of {{{' | '.join(KINDS)}: values}}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise SweepError(f"{where}: unknown kind {kind!r}; choose one of {list(KINDS)}")
    if not isinstance(values, list):
        raise SweepError(f"{where}: {kind} takes a list, got {values!r}")
    if kind in ("loguniform", "uniform"):
        bounds = [_number(v, where) for v in values]
        if len(bounds) != 2:
            raise SweepError(f"{where}: {kind} takes [low, high], got {values!r}")
        low, high = bounds
        if not low < high:
            raise SweepError(f"{where}: empty range: low ({low}) must be < high ({high})")
        if kind == "loguniform" and low <= 0:
            raise SweepError(f"{where}: loguniform needs low > 0, got {low}")
        return Param(key, kind, low=low, high=high)
    if not values:
        raise SweepError(f"{where}: empty {kind}: zero values means zero trials")
    if len({repr(v) for v in values}) != len(values):
        raise SweepError(f"{where}: {kind} lists a value twice: {values}")
    return Param(key, kind, values=tuple(values))


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SweepError(f"{where}: range bounds must be numbers, got {value!r}")
    return float(value)


def config_field_type(key: str) -> Any:
    """The annotation of the config field at dotted ``key``; raises naming the bad part."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        section = ".".join(parts[:i]) or "the top level"
        if not dataclasses.is_dataclass(cls):
            raise SweepError(f"parameters.{key}: {section} is a value, not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise SweepError(
                f"parameters.{key}: unknown config key {'.'.join(parts[: i + 1])} "
                f"(valid keys in {section}: {', '.join(sorted(hints))})"
            )
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        raise SweepError(f"parameters.{key}: is a section; sweep one of its keys")
    return cls


def check_settings(spec: SweepSpec) -> None:
    """Checks across settings and parameters (each setting's own check is on its field, run by
    :func:`lpray.configkit.build`); each error names its key."""
    r = spec.settings.resources

    def need(ok: bool, key: str, message: str) -> None:
        require(ok, key, message, SweepError)

    need(
        r.gpus_per_worker >= 1 or r.gpus_per_worker == 0 or r.workers == 1,
        "sweep.resources.gpus_per_worker",
        f"a fraction ({r.gpus_per_worker}) with {r.workers} workers would put several NCCL ranks "
        "of one trial on one GPU; pack single-worker trials instead",
    )
    need(bool(spec.params), "parameters", "empty: name at least one config key to sweep")
    keys = [p.key for p in spec.params]
    need(len(set(keys)) == len(keys), "parameters", "a key is listed twice")


# --------------------------------------------------------------------------------------------
# Checks against the config (and the labeled data) the sweep runs on


def config_value(key: str, value: Any) -> Any:
    """The config value a swept value stands for (``data.train_frames: all`` -> None)."""
    if key == LABEL_KEY and value == ALL_FRAMES:
        return None
    return value


def with_values(values: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of nested config ``values`` with each dotted key of ``updates`` set."""
    import copy

    result = copy.deepcopy(values)
    for key, value in updates.items():
        *sections, leaf = key.split(".")
        node = result
        for part in sections:
            node = node.setdefault(part, {})
        node[leaf] = config_value(key, value)
    return result


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> Config:
    """The validated config of one trial: the base config with the trial's values set."""
    return config_from_dict(with_values(base, params))


def validate_sweep(cfg: Config, spec: SweepSpec) -> dict[str, int]:
    """Check every swept value against the config and the labeled data, before any trial runs.

    Returns:
        Labeled frames actually used for each ``data.train_frames`` value of the sweep (as the
        label string, e.g. ``{"75": 75, "all": 412}``), which the results table reports.

    Raises:
        SweepError: naming the parameter (unknown key, a value the config refuses, a label count
            above the train split, ...).
    """
    base = cfg.to_dict()
    for param in spec.params:
        for value in param.candidates():
            try:
                trial_config(base, {param.key: value})
            except ConfigError as err:
                raise SweepError(f"parameters.{param.key}: value {value!r}: {err}") from None
        if param.key == LABEL_KEY and param.is_range:
            raise SweepError(
                f"parameters.{LABEL_KEY}: label counts are a grid or a choice "
                f"(e.g. {{grid: [75, 150, {ALL_FRAMES}]}}), not a range"
            )
    s, t = spec.settings, cfg.training
    if s.scheduler == "asha" and s.asha.grace_period > t.max_epochs:
        raise SweepError(
            f"sweep.asha.grace_period: {s.asha.grace_period} is beyond training.max_epochs "
            f"({t.max_epochs}): ASHA would never stop a trial"
        )
    if s.scheduler == "asha" and any(p.key == "training.max_epochs" for p in spec.params):
        raise SweepError(
            "parameters.training.max_epochs: ASHA needs one epoch budget for all trials "
            "(sweep it with scheduler: fifo)"
        )
    if t.val_every_n_epochs != 1:
        raise SweepError(
            "training.val_every_n_epochs: sweeps need the metric every epoch (set it to 1)"
        )
    labels = next((p.candidates() for p in spec.params if p.key == LABEL_KEY), None)
    return label_counts(cfg, labels if labels is not None else [cfg.data.train_frames])


def label_name(value: Any) -> str:
    """How a ``data.train_frames`` value is shown: ``75``, ``0.5`` or ``all``."""
    return ALL_FRAMES if value is None or value == ALL_FRAMES else str(value)


def label_counts(cfg: Config, values: list[Any]) -> dict[str, int]:
    """Labeled train frames each ``data.train_frames`` value gives, checked against the split."""
    from lpray.data.labeled import LabelError, read_labeled_frames, split_frames
    from lpray.train.data import resolve_root

    root, _, _ = resolve_root(cfg)
    frames = read_labeled_frames(root, cfg.data.csv_file, cfg.data.keypoints)
    d = cfg.data
    counts = {}
    for value in values:
        try:
            split = split_frames(
                frames,
                d.train_prob,
                d.val_prob,
                d.split_seed,
                config_value(LABEL_KEY, value),
                d.split_file,
            )
        except LabelError as err:
            raise SweepError(f"parameters.{LABEL_KEY}: {err}") from None
        counts[label_name(value)] = int(len(split.train))
    return counts

"""lpray.configkit: the run config, the pipeline file and the sweep file are read by one toolkit.

Each file kind: a good file loads with overrides applied; bad YAML, a top level that is not a
mapping, an unknown key and a value its field's check refuses each raise the kind's error, naming
the file and the key; a missing file names the kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lpray import configkit
from lpray.config import Config, ConfigError, load_config
from lpray.configkit import apply_overrides, build, check, errors_in, load_mapping
from lpray.pipeline import PipelineError, load_pipeline
from lpray.tune.space import SweepError, load_sweep


@dataclass(frozen=True)
class Kind:
    """One file kind: how to load it, a good file, and what to check on it."""

    name: str
    load: Callable[[Path, list[str]], Any]
    error: type[ConfigError]
    good: Callable[[Path], dict[str, Any]]
    override: str  # sets a value that read() returns
    read: Callable[[Any], Any]
    expected: Any
    unknown: str  # an override naming an unknown key, and the key in the message
    refused: tuple[str, str]  # an override the field's check refuses, and the message


def _pipeline_file(folder: Path) -> dict[str, Any]:
    (folder / "config.yaml").write_text(yaml.safe_dump({"training": {"max_epochs": 1}}))
    return {"config": "config.yaml", "sweep": None, "storage": {"path": str(folder / "run")}}


KINDS = [
    Kind(
        "config",
        lambda p, o: load_config(p, o),
        ConfigError,
        lambda folder: {"training": {"max_epochs": 3}},
        "training.batch_size=4",
        lambda cfg: (cfg.training.max_epochs, cfg.training.batch_size),
        (3, 4),
        "training.batch_sizes",
        ("training.max_epochs=0", "training.max_epochs: must be >= 1"),
    ),
    Kind(
        "pipeline",
        lambda p, o: load_pipeline(p, o),
        PipelineError,
        _pipeline_file,
        "ensemble.seeds=2",
        lambda spec: (spec.ensemble.seeds, spec.storage.path.endswith("run")),
        (2, True),
        "ensemble.sedes",
        ("ensemble.workers=0", "ensemble.workers: must be >= 1, got 0"),
    ),
    Kind(
        "sweep",
        lambda p, o: load_sweep(p, o),
        SweepError,
        lambda folder: {"parameters": {"training.lr": {"loguniform": [1e-4, 1e-2]}}},
        "sweep.num_samples=2",
        lambda spec: (spec.settings.name, spec.settings.num_samples, spec.params[0].key),
        ("good", 2, "training.lr"),
        "sweep.num_sample",
        ("sweep.num_samples=0", "sweep.num_samples: must be >= 1 (got 0: zero trials)"),
    ),
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param


def test_a_good_file_loads_with_overrides(kind: Kind, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(kind.good(tmp_path)))
    assert kind.read(kind.load(path, [kind.override])) == kind.expected


def test_bad_files_name_the_file_and_the_key(kind: Kind, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(kind.good(tmp_path)))
    key = re.escape(kind.unknown)
    with pytest.raises(kind.error, match=rf"good\.yaml: .*unknown config key {key}"):
        kind.load(good, [f"{kind.unknown}=1"])
    override, message = kind.refused
    with pytest.raises(kind.error, match=rf"good\.yaml: {re.escape(message)}"):
        kind.load(good, [override])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(kind.error, match=r"bad\.yaml: not valid YAML"):
        kind.load(bad, [])
    bad.write_text("- a list\n")
    with pytest.raises(kind.error, match=r"bad\.yaml: top level must be a mapping"):
        kind.load(bad, [])
    with pytest.raises(FileNotFoundError, match=rf"missing\.yaml: {kind.name} file not found"):
        kind.load(tmp_path / "missing.yaml", [])


def test_the_three_loaders_read_through_the_toolkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One YAML reader: each loader calls configkit.load_mapping (no private copy)."""
    import lpray.config
    import lpray.pipeline
    import lpray.tune.space

    read: list[str] = []

    def spy(path: Any, kind: str, *args: Any) -> dict[str, Any]:
        read.append(kind)
        return load_mapping(path, kind, *args)

    for module in (lpray.config, lpray.pipeline, lpray.tune.space):
        monkeypatch.setattr(module, "load_mapping", spy)
    for kind in KINDS:
        path = tmp_path / f"{kind.name}.yaml"
        path.write_text(yaml.safe_dump(kind.good(tmp_path)))
        kind.load(path, [])
    # the pipeline file also loads its training config
    assert read == ["config", "pipeline", "config", "sweep"]
    assert isinstance(load_config(None), Config)


@dataclass
class Inner:
    size: int = field(default=2, metadata=check(lambda n: n % 2 == 0, "must be even, got {value}"))
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] | None = None


def test_build_types_checks_and_names_keys() -> None:
    values = apply_overrides({"inner": {"rate": 1}}, ["inner.size=4", "tags=[a, b]"])
    built = build(Outer, values)
    assert built == Outer("x", Inner(4, 1.0), ["a", "b"])
    assert isinstance(built.inner.rate, float)
    with pytest.raises(ConfigError, match=r"^top\.inner\.size: must be even, got 3$"):
        build(Outer, {"inner": {"size": 3}}, "top")
    with pytest.raises(ConfigError, match=r"unknown config key inner\.sise \(valid keys in inner"):
        build(Outer, {"inner": {"sise": 3}})
    with pytest.raises(ConfigError, match=r"inner\.rate: expected a number, got 'fast'"):
        build(Outer, {"inner": {"rate": "fast"}})
    with pytest.raises(ConfigError, match=r"^name: expected a string, got \[1\]$"):
        build(Outer, apply_overrides({}, ["name=[1]"]))
    with pytest.raises(ConfigError, match=r"name is not a section"):
        apply_overrides({"name": "x"}, ["name.first=1"])


def test_errors_in_prefixes_the_file_and_keeps_the_kind() -> None:
    with pytest.raises(SweepError, match=r"^f\.yaml: k: bad$"):
        with errors_in("f.yaml", SweepError):
            configkit.require(False, "k", "bad")
    with pytest.raises(ConfigError, match=r"^k: bad$"):
        with errors_in(None):
            configkit.require(False, "k", "bad")

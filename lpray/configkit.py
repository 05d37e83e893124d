"""The config toolkit: YAML mapping -> overrides -> typed dataclass, every error naming its key.

The run config (:mod:`lpray.config`), the pipeline file (:mod:`lpray.pipeline`) and the sweep file
(:mod:`lpray.tune.space`) are all read the same way::

    values = load_mapping(path, "sweep", "a mapping with 'sweep' and 'parameters'", SweepError)
    with errors_in(path, SweepError):
        spec = build(SweepSettings, apply_overrides(values, overrides), "sweep")

- :func:`load_mapping` reads a YAML file (local or an fsspec URL) that must hold a mapping;
- :func:`apply_overrides` sets ``a.b.c=value`` overrides (values parsed as YAML);
- :func:`build` turns nested plain values into a dataclass, checking each value against the
  field's annotation and the field's own check (:func:`check`, declared next to the field);
- :func:`errors_in` prefixes every error of a block with the file it came from.

Errors are :class:`ConfigError` (a :class:`~lpray.errors.UserError`) or a subclass each file kind
picks, and name the key: ``sweep.num_samples: must be >= 1 (got 0: zero trials)``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from lpray.errors import UserError
from lpray.io.paths import is_local, local_path

T = TypeVar("T")
_CHECK = "lpray_check"  # dataclass field metadata key of a field's check


class ConfigError(UserError, ValueError):
    """A config file or override that does not describe a valid run; the message names the key."""


# ------------------------------------------------------------------------------- files


def load_mapping(
    path: str | os.PathLike,
    kind: str,
    expected: str = "a mapping",
    error: type[ConfigError] = ConfigError,
) -> dict[str, Any]:
    """The YAML mapping in ``path`` (a local file or an fsspec URL); an empty file is ``{}``.

    Args:
        path: the file.
        kind: what the file is, for the not-found message (``"config"``, ``"sweep"``).
        expected: what its top level must be, for the message when it is not a mapping.
        error: the error class raised for a bad file.

    Raises:
        FileNotFoundError: ``"<path>: <kind> file not found"``.
        ConfigError: (``error``) the file is not valid YAML, or not a mapping; names the file.
    """
    from lpray.io.storage import exists, read_text  # fsspec: only when a file is read

    where: Path | str = local_path(path) if is_local(path) else str(path)
    if not (where.is_file() if isinstance(where, Path) else exists(where)):
        raise FileNotFoundError(f"{where}: {kind} file not found")
    try:
        values = yaml.safe_load(read_text(where)) or {}
    except yaml.YAMLError as err:
        raise error(f"{where}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise error(f"{where}: top level must be {expected}")
    return values


@contextlib.contextmanager
def errors_in(where: str | os.PathLike | None, error: type[ConfigError] = ConfigError) -> Iterator:
    """Re-raise every :class:`ConfigError` of the block as ``error("<where>: <message>")``
    (``where`` None: the message alone)."""
    try:
        yield
    except ConfigError as err:
        raise error(f"{where}: {err}" if where is not None else str(err)) from None


# ------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``values`` with each ``a.b.c=value`` override set."""
    result = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return result


# ------------------------------------------------------------------------------- dataclasses


@dataclasses.dataclass(frozen=True)
class _Check:
    ok: Callable[[Any], bool]
    message: str


def check(ok: Callable[[Any], bool], message: str) -> dict[str, Any]:
    """Field metadata: :func:`build` refuses a value for which ``ok(value)`` is false.

    ``message`` may name the value as ``{value}`` / ``{value!r}``; the error reads
    ``"<key>: <message>"``. Use as ``n: int = field(default=8, metadata=check(...))``.
    """
    return {_CHECK: _Check(ok, message)}


def require(ok: bool, key: str, message: str, error: type[ConfigError] = ConfigError) -> None:
    """Raise ``error("<key>: <message>")`` unless ``ok`` (checks across fields)."""
    if not ok:
        raise error(f"{key}: {message}")


def _type_name(tp: Any) -> str:
    special = {bool: "true/false", type(None): "null"}  # as YAML spells them
    if tp in special:
        return special[tp]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float etc.)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        # bool is an int in Python; try the exact kinds first so 75 stays an int for int|float.
        for option in sorted((a for a in args if a is not type(None)), key=lambda a: a is float):
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping), got {value!r}")
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - programming error


def build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """The dataclass ``cls`` from nested plain values (e.g. parsed YAML); missing keys keep their
    defaults.

    Args:
        cls: a dataclass whose fields are annotated with bool, int, float, str, Any, Literal,
            lists, unions (``| None``) or dataclasses (sections, built recursively).
        values: field name -> value.
        prefix: the dotted key of ``cls`` in the file (``"sweep"``), for the messages.

    Raises:
        ConfigError: an unknown key (naming the valid ones), a value of the wrong type, or one
            its field's :func:`check` refuses; the message starts with the dotted key.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]} (valid keys in "
            f"{prefix or 'the top level'}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = coerce(value, hints[name], key)
        rule = fields[name].metadata.get(_CHECK)
        if rule is not None and not rule.ok(kwargs[name]):
            raise ConfigError(f"{key}: {rule.message.format(value=kwargs[name])}")
    return cls(**kwargs)

"""Typed experiment configuration: YAML files with command-line overrides.

Every stage is one function taking one dataclass. An experiment YAML has one section per stage
(``dataset:``, ``model:``, ``grpo:``, ...); :func:`load_config` reads a file, applies
``section.key=value`` overrides (values are parsed as YAML, so ``grpo.beta=0.02`` is a float and
``dataset.shots=[1,2,4]`` a list) and builds the dataclass, rejecting unknown keys and wrong types
with an error that names the file and the key.

>>> from dataclasses import dataclass
>>> @dataclass
... class Schedule:
...     lr: float = 1e-6
...     steps: int = 200
>>> cfg = from_dict(Schedule, {"steps": 25})
>>> apply_overrides(cfg, ["lr=2e-6"])
Schedule(lr=2e-06, steps=25)
>>> from_dict(Schedule, {"stpes": 25}, source="exp.yaml")
Traceback (most recent call last):
...
vrft.config.ConfigError: exp.yaml: stpes: unknown key (known: lr, steps)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


#: Integers beyond this are refused: no setting means anything there, and they overflow C types and floats.
MAX_CONFIG_INT = 2**63 - 1


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a forgotten earlier ``max_steps:`` would win or
    lose without a word. Merge keys (``<<:``) keep their usual meaning.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def safe_load_strict(text: str) -> Any:
    """``yaml.safe_load`` that also refuses duplicate keys (see :class:`_StrictLoader`).

    >>> safe_load_strict("{a: 1, b: 2}")
    {'a': 1, 'b': 2}
    >>> safe_load_strict("{a: 1, a: 2}")
    Traceback (most recent call last):
    ...
    yaml.constructor.ConstructorError: key 'a' appears twice (first on line 1)
    ...
    """
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a YAML error: the problem and where (PyYAML's own message spans lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}"
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ConfigError(f"{where}: {value!r} is too large for a number") from None
        elif isinstance(value, str):
            # YAML 1.1 reads "1e-6" (no dot) as a string; accept numeric strings for floats.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            # .nan passes every `< 0` check and .inf overflows int(); no setting means either.
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if abs(value) > MAX_CONFIG_INT:
            raise ConfigError(f"{where}: {value} is too large (at most {MAX_CONFIG_INT})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, *, source: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types.

    ``source`` (a file name) and ``prefix`` (the dotted path so far) go into error messages.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            msg = f"{where}: unknown key (known: {', '.join(sorted(fields))})"
            raise ConfigError(f"{source}: {msg}" if source else msg)
        try:
            kwargs[key] = _coerce(value, hints[key], where)
        except ConfigError as exc:
            if source and not str(exc).startswith(source):
                raise ConfigError(f"{source}: {exc}") from None
            raise
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        where = prefix or cls.__name__
        raise ConfigError(f"{source + ': ' if source else ''}{where}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{source + ': ' if source else ''}{exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a (nested) dataclass, with paths as strings; suitable for YAML/MLflow."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (for MLflow params).

    >>> flatten({"grpo": {"beta": 0.04, "lora": {"r": 8}}, "seed": 0})
    {'grpo.beta': 0.04, 'grpo.lora.r': 8, 'seed': 0}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"grpo.beta=0.02"`` -> ``(["grpo", "beta"], 0.02)``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. grpo.max_steps=25")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = safe_load_strict(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError as exc:  # e.g. a key twice in {a: 1, a: 2}
        raise ConfigError(f"override {text!r}: {exc.problem}") from None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"override {text!r}: value nested too deeply") from None
    return key.split("."), value


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """A copy of dataclass ``cfg`` with ``key.sub=value`` overrides applied and re-validated."""
    data = to_dict(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        _set_path(data, keys, value)
    return from_dict(type(cfg), data, source="override")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (duplicate keys refused); errors name the file.

    An empty file (or one with only comments) is an error, not "all defaults": it is far more
    often a wrong or truncated file than a wish for the built-in experiment.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid YAML: not UTF-8 text") from None
    try:
        data = safe_load_strict(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (expected a mapping of sections, e.g. dataset:, grpo:)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    section: str | None = None,
) -> T:
    """Load ``cls`` from a YAML file (or defaults), optionally one ``section`` of it, plus overrides.

    With ``section="grpo"`` the ``grpo:`` mapping of an experiment file is used, and overrides may
    be written either as ``grpo.beta=0.02`` or ``beta=0.02``.
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "defaults"
    if section is not None:
        sub = data.get(section, {})
        if not isinstance(sub, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        data = dict(sub)
    for text in overrides:
        keys, value = parse_override(text)
        if section is not None and keys[0] == section and len(keys) > 1:
            keys = keys[1:]
        _set_path(data, keys, value)
    return from_dict(cls, data, source=source)

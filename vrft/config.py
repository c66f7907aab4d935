"""Typed experiment configuration: YAML files with command-line overrides, on OmegaConf.

Every stage is one function taking one dataclass. An experiment YAML has one section per stage
(``dataset:``, ``model:``, ``grpo:``, ...). :func:`from_dict` is the one way a config is made, from a
file (:func:`load_config`), JSON or another config:

1. the data becomes an OmegaConf tree and ``section.key=value`` overrides are applied to it with
   ``OmegaConf.update`` (values are read as YAML, so ``grpo.beta=0.02`` is a float and
   ``dataset.shots=[1,2,4]`` a list; a mapping value replaces the mapping);
2. every value given is checked against the dataclass annotations, strictly: OmegaConf alone
   would turn ``image_tag: 1.10`` into ``"1.1"`` and ``enabled: 2`` into ``true``, and its errors
   span lines. Unknown keys and wrong types are one-line errors naming the file and the key;
3. the values are merged into the dataclass's OmegaConf schema, which fills in the defaults and
   resolves ``${...}`` interpolations (``sft.max_steps: ${grpo.max_steps}``), and OmegaConf builds
   the dataclasses;
4. numbers must be finite and fit in 64 bits, then each dataclass's ``validate()`` runs.

>>> from dataclasses import dataclass
>>> @dataclass
... class Schedule:
...     lr: float = 1e-6
...     steps: int = 200
...     warmup: int = 0
>>> cfg = from_dict(Schedule, {"steps": 25}, ["warmup=${steps}"])
>>> cfg
Schedule(lr=1e-06, steps=25, warmup=25)
>>> apply_overrides(cfg, ["lr=2e-6"])
Schedule(lr=2e-06, steps=25, warmup=25)
>>> from_dict(Schedule, {"stpes": 25}, source="exp.yaml")
Traceback (most recent call last):
...
vrft.config.ConfigError: exp.yaml: stpes: unknown key, did you mean steps? (known: lr, steps, warmup)
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import difflib
import functools
import hashlib
import math
import os
import pickle
import re
import stat
import threading
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


#: Integers beyond this are refused: no setting means anything there, and they overflow C types and floats.
MAX_CONFIG_INT = 2**63 - 1
#: Config files larger than this are refused before they are parsed (ours are a few kilobytes).
MAX_CONFIG_BYTES = 4 * 2**20


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


# Dates stay text, as in OmegaConf's own loader: `name: 2024-01-01` is a name, not a datetime.date.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


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


def _check(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp``, as the plain data OmegaConf then merges.

    Only what a user wrote is checked here; ``${...}`` interpolations are resolved (and converted
    to the field's type) by OmegaConf, and the final values are checked again by :func:`_check_numbers`.
    """
    if isinstance(value, str) and "${" in value:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if not any(type(value) is type(arg) and value == arg for arg in args):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        known = sorted(f.name for f in dataclasses.fields(tp) if f.init)
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f", did you mean {close[0]}?" if close else ""
                raise ConfigError(f"{_join(where, key)}: unknown key{hint} (known: {', '.join(known)})")
        return {key: _check(item, hints[key], _join(where, key)) for key, item in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check(item, args[0] if args else Any, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, item_tp = args or (Any, Any)
        checked = {}
        for key, item in value.items():
            if key_tp is str and (isinstance(key, bool) or not isinstance(key, (str, int))):
                raise ConfigError(f"{_join(where, key)}: expected a name as the key, got {key!r}")
            key = str(key) if key_tp is str else key  # YAML reads `1:` as an integer key
            checked[key] = _check(item, item_tp, _join(where, key))
        return checked
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string", Path: "a path"}
    if tp not in expected:
        return value
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        # YAML 1.1 reads "1e-6" (no dot) as a string; accept numeric strings for floats.
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value!r} is too large for a number") from None
        except ValueError:
            pass
    ok = {int: (int,), float: (float,), bool: (bool,), str: (str,), Path: (str, Path)}[tp]
    if not isinstance(value, ok) or (isinstance(value, bool) and tp is not bool):
        raise ConfigError(f"{where}: expected {expected[tp]}, got {value!r}")
    return value


def _join(where: str, key: Any) -> str:
    return f"{where}.{_shown(key)}" if where else _shown(key)


def _shown(key: Any) -> str:
    """``key`` as an error message shows it: quoted and escaped where it is not plain printable text
    (a YAML key may hold a line break, and an error stays one line)."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def _check_numbers(data: Any, where: str) -> None:
    """Numbers must be finite and fit in 64 bits: ``.nan`` passes every ``< 0`` check, ``.inf``
    overflows ``int()``, and no setting means either."""
    if isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(f"{where}: expected a finite number, got {data!r}")
    if isinstance(data, int) and abs(data) > MAX_CONFIG_INT:
        raise ConfigError(f"{where}: {data} is too large (at most {MAX_CONFIG_INT})")
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, item in items:
        _check_numbers(item, f"{where}[{key}]" if isinstance(data, list) else _join(where, key))


def _validate(obj: Any, where: str) -> None:
    """Each dataclass's ``validate()``, innermost first; a message gains the section's path."""
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(child := getattr(obj, f.name)):
            _validate(child, _join(where, f.name))
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            message = str(exc)
            if where and not message.startswith((f"{where}.", f"{where}:", f"{where}[")):
                message = f"{where}.{message}"
            raise ConfigError(message) from None


def _escape(data: Any) -> Any:
    """Data whose strings OmegaConf keeps verbatim: ``${`` escaped as ``\\${`` (backslashes before it
    doubled), and ``???`` (OmegaConf's "missing", also after backslashes) behind two more backslashes:
    OmegaConf takes one off when it makes the tree and one when the values meet the schema."""
    if isinstance(data, str):
        if re.fullmatch(r"\\*\?\?\?", data):
            return "\\\\" + data
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", data)
    if isinstance(data, dict):
        return {k: _escape(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_escape(v) for v in data]
    return data


@functools.cache
def _schema(cls: type) -> Any:
    return OmegaConf.structured(cls)  # defaults and types; OmegaConf.merge copies it


def from_dict(
    cls: type[T],
    data: dict[str, Any] | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    source: str = "",
    interpolate: bool = True,
) -> T:
    """Build dataclass ``cls`` from ``data`` plus ``key.sub=value`` overrides: the one config mechanism.

    ``source`` (a file name) goes into error messages. ``interpolate=False`` keeps ``${...}`` in
    ``data`` as text: data that is already a built config (JSON, :func:`to_dict`) is not resolved twice.

    A config built from the same data and overrides before is not built again (a sweep's iteration
    configs are built by the plan, the compile and the preflight alike; each build costs tens of
    milliseconds of OmegaConf): the caller gets a copy of it, as configs are mutable dataclasses.
    """
    key = _build_key(cls, data, overrides, interpolate)
    with _BUILT_LOCK:
        built = _BUILT.get(key) if key is not None else None
        if built is not None and built[0] is cls:
            _BUILT.move_to_end(key)
            return typing.cast(T, copy.deepcopy(built[1]))
    obj = _build(cls, data, overrides, source, interpolate)
    if key is not None:
        with _BUILT_LOCK:
            _BUILT[key] = (cls, copy.deepcopy(obj))
            while len(_BUILT) > _MAX_BUILT:
                _BUILT.popitem(last=False)
    return obj


#: Configs :func:`from_dict` built, by a digest of what they were built from (the class is kept with
#: each and compared on use: a class defined in a function may reuse a freed class's name and id).
_BUILT: collections.OrderedDict[bytes, tuple[type, Any]] = collections.OrderedDict()
_MAX_BUILT = 256
_BUILT_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _BUILT_LOCK
    _BUILT_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _build_key(cls: type, data: Any, overrides: Any, interpolate: bool) -> bytes | None:
    """What a build depends on, as a digest; ``None`` (not kept) for data pickle cannot hold and for
    interpolations to resolve (``${oc.env:...}`` reads the environment of the moment)."""
    try:
        # pickle keeps types apart where == does not (1, 1.0, True; a tuple and a list)
        given = pickle.dumps((data, list(overrides), interpolate), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
        return None
    # Overrides are never escaped: theirs resolve whatever ``interpolate`` says.
    if (interpolate and b"${" in given) or any("${" in str(text) for text in overrides):
        return None
    return hashlib.sha256(f"{cls.__module__}.{cls.__qualname__}\0".encode() + given).digest()


def _build(cls: type[T], data: Any, overrides: Any, source: str, interpolate: bool) -> T:
    parsed = [parse_override(text) for text in overrides]  # syntax errors are the override's, not the file's
    try:
        tree = OmegaConf.create(_escape(data or {}) if not interpolate else data or {})
        for keys, value in parsed:
            OmegaConf.update(tree, ".".join(keys), value, merge=False)
        given = _check(OmegaConf.to_container(tree), cls, "")
        obj = OmegaConf.to_object(OmegaConf.merge(_schema(cls), given))
        _check_numbers(to_dict(obj), "")
        _validate(obj, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
    except OmegaConfBaseException as exc:
        # An interpolation that fails, or a value OmegaConf cannot hold (a YAML !!set, a null key).
        key = f"{'.'.join(map(_shown, str(exc.full_key).split('.')))}: " if exc.full_key else ""
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source + ': ' if source else ''}{key}{problem}") from None
    return typing.cast(T, obj)


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


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """A copy of dataclass ``cfg`` with ``key.sub=value`` overrides applied and re-validated."""
    return from_dict(type(cfg), to_dict(cfg), overrides, source="override", interpolate=False)


def read_config_text(path: str | Path) -> str:
    """The text of a config file, read with a bound: a device, FIFO or directory is refused without
    reading, and so is a file larger than :data:`MAX_CONFIG_BYTES` (``vrft compile /dev/zero`` would
    otherwise read until memory runs out)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file (a config is a YAML or JSON file)")
        data = b""
        while len(data) <= MAX_CONFIG_BYTES and (chunk := os.read(fd, MAX_CONFIG_BYTES + 1 - len(data))):
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; a config is a few kilobytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (duplicate keys refused); errors name the file.

    An empty file (or one with only comments) is an error, not "all defaults": it is far more
    often a wrong or truncated file than a wish for the built-in experiment.
    """
    text = read_config_text(path)
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
        data = data.get(section, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        overrides = [text.removeprefix(f"{section}.") for text in overrides]
    return from_dict(cls, data, overrides, source=source)


def field_docs(cls: type, *, inherited: bool = True) -> dict[str, str]:
    """The ``Parameters:`` section of a config dataclass's docstring, and its bases': field -> text.

    Every field of every config dataclass is documented there, once (trl's habit); a test holds
    every config class to it. ``inherited=False``: the class's own section only.

    >>> from vrft.train.config import LoraSettings
    >>> field_docs(LoraSettings)["r"]
    'Rank of the adapter matrices.'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__) if inherited else [cls]:
        lines = (klass.__dict__.get("__doc__") or "").expandtabs().splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip() == "Parameters:"), len(lines))
        indent, name = None, None
        for line in lines[start + 1 :]:
            if not line.strip():
                continue
            depth = len(line) - len(line.lstrip())
            indent = depth if indent is None else indent
            if depth < indent:
                break
            match = re.fullmatch(r"(\w+):\s*(.*)", line.strip()) if depth == indent else None
            if match:
                name = match[1]
                docs[name] = match[2]
            elif name is not None:
                docs[name] += " " + line.strip()
    return docs

"""The config loader (bottom layer): declare fields, read YAML and ``key=value`` overrides, check and build.

A config comes from a YAML file plus ``key=value`` overrides (overrides win). Unknown keys are an error
naming the closest valid key; a bad value names the field (and the YAML line it came from); a value below a
field's bound is refused. Imports nothing of tether but ``TetherError``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from tether import TetherError


class ConfigError(TetherError):
    """A bad config file, key or value."""


def option(default: Any, help: str, minimum: float | None = None) -> Any:
    """A config field with help text (shown by ``--help``) and an optional lower bound."""
    return _field(default, {"help": help, "minimum": minimum})


def _field(default: Any, metadata: dict[str, Any]) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


C = TypeVar("C")


def defaults(
    unused: dict[str, str] | None = None, minimums: dict[str, float] | None = None, **values: Any
) -> Callable[[type[C]], type[C]]:
    """The dataclass decorator of a config that changes inherited defaults without declaring the fields
    again: each field keeps its one declaration (type, help text, bound). ``@defaults(learning_rate=5e-5)``
    on ``class PPOConfig(RLConfig)`` replaces ``@dataclass``.

    ``unused={name: why}`` marks inherited fields the config does not use: hidden from ``--help`` and from
    saved configs, and refused by :func:`build_config` when set (a one-line error naming the field).
    ``minimums={name: bound}`` raises an inherited field's lower bound for this config."""
    unused, minimums = unused or {}, minimums or {}

    def apply(cls: type[C]) -> type[C]:
        inherited: dict[str, tuple[dataclasses.Field, type]] = {}
        for base in reversed(cls.__mro__[1:]):
            if dataclasses.is_dataclass(base):
                inherited.update({f.name: (f, base) for f in dataclasses.fields(base)})
        own = dict(inspect.get_annotations(cls))
        for name in {**values, **unused, **minimums}:
            if name in own or name not in inherited:
                raise TypeError(
                    f"{cls.__name__}: defaults({name}=…) needs a field inherited, not declared here"
                )
            base_field, base = inherited[name]
            metadata = dict(base_field.metadata)
            if name in unused:
                metadata["unused"] = unused[name]
            if name in minimums:
                metadata["minimum"] = minimums[name]
            if name in values:
                default = values[name]
            elif base_field.default is not dataclasses.MISSING:
                default = base_field.default
            else:
                default = base_field.default_factory()
            own[name] = typing.get_type_hints(base)[name]
            setattr(cls, name, _field(default, metadata))
        cls.__annotations__ = own
        cls.__config_defaults__ = frozenset({**values, **unused, **minimums})  # not declarations: see tests
        return dataclasses.dataclass(cls)

    return apply


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def is_unused(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("unused"))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def narrow(cls: type[C], config: Any, **changes: Any) -> C:
    """The ``cls`` part of a config whose class extends ``cls`` (e.g. the DPO settings of an iterative-DPO
    config), with ``changes`` applied."""
    return cls(**{**{name: getattr(config, name) for name in fields_of(cls)}, **changes})


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(tp: Any, value: Any, name: str, where: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the field type ``tp``."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: field '{name}': expected {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise bad("one of " + ", ".join(map(str, choices)))
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in {"none", "null"}):
            return None
        return coerce(args[0], value, name, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise bad("an integer") from None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise bad("a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad("a string")
        return "" if value is None else str(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    raise bad(_type_name(tp))


def _key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each top-level key of a YAML mapping."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value}


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a YAML file and the line of each top-level key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of field: value, got {type(data).__name__}")
    return data, lines


def unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    names = [name for name, f in fields_of(cls).items() if not is_unused(f)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid fields: {', '.join(names)}"
    return ConfigError(f"{where}: unknown field '{key}'{hint}")


def build_config(cls: type[C], values: dict[str, Any], where: dict[str, str] | str = "config") -> C:
    """An instance of ``cls`` from raw values; ``where`` names the source of each key for errors."""
    hints = typing.get_type_hints(cls)
    known = fields_of(cls)
    kwargs = {}
    for key, value in values.items():
        origin = where.get(key, "config") if isinstance(where, dict) else where
        if key not in known:
            raise unknown_key_error(cls, key, origin)
        converted = coerce(hints[key], value, key, origin)
        if is_unused(known[key]):
            # Its default changes nothing (configs saved before the field became unused hold it); any
            # other value would be silently ignored, so it is refused.
            if converted == _default(known[key]):
                continue
            raise ConfigError(f"{origin}: field '{key}': not used: {known[key].metadata['unused']}")
        minimum = known[key].metadata.get("minimum")
        if minimum is not None and isinstance(converted, (int, float)) and converted < minimum:
            raise ConfigError(f"{origin}: field '{key}': must be at least {minimum}, got {converted!r}")
        kwargs[key] = converted
    return cls(**kwargs)


def parse_overrides(overrides: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: '{item}' is not key=value")
        key, value = item.split("=", 1)
        pairs.append((key.strip(), value))
    return pairs


def load_config(cls: type[C], config_path: str | None = None, overrides: list[str] | None = None) -> C:
    """A stage config from an optional YAML file plus ``key=value`` overrides (see :func:`read_values`)."""
    values, where = read_values(cls, config_path, overrides)
    return build_config(cls, values, where)


def read_values(
    cls: type, config_path: str | None = None, overrides: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw values of an optional YAML file plus ``key=value`` overrides (overrides win), and where each
    came from (``file:line`` or ``command line``), unchecked: :func:`build_config` checks them.

    For dict-valued fields (the pipeline's per-stage sections) a dotted override ``sft.max_steps=5`` sets one
    key inside the section.
    """
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    if config_path:
        data, lines = read_yaml(config_path)
        for key, value in data.items():
            values[str(key)] = value
            where[str(key)] = f"{config_path}:{lines.get(key, 1)}"
    known = fields_of(cls)
    for key, value in parse_overrides(overrides or []):
        head, _, rest = key.partition(".")
        if rest and head in known and typing.get_type_hints(cls)[head] is dict:
            section = dict(values.get(head) or {})
            section[rest] = value
            values[head] = section
            where.setdefault(head, "command line")
            continue
        values[key] = value
        where[key] = "command line"
    return values, where


def describe(cls: type, allowed: dict[str, tuple[Any, ...]] | None = None) -> str:
    """Every field with its type, default and help text, for ``--help``. ``allowed`` narrows fields to the
    values a command runs (the first is then the default)."""
    hints = typing.get_type_hints(cls)
    allowed = allowed or {}
    lines = []
    for f in dataclasses.fields(cls):
        if is_unused(f):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _type_name(hints[f.name])
        if f.name in allowed:
            default, kind = allowed[f.name][0], " | ".join(map(str, allowed[f.name]))
        lines.append(f"  {f.name} ({kind}, default {default!r})")
        lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def to_dict(config: Any) -> dict[str, Any]:
    """The fields of a config that it uses (what ``save_config`` writes and :func:`build_config` accepts)."""
    return {
        f.name: copy.deepcopy(getattr(config, f.name)) for f in dataclasses.fields(config) if not is_unused(f)
    }


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")

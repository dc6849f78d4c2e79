"""Recipe configs: a YAML file read into the recipe's dataclass, with ``key.sub=value`` overrides.

The dataclass *is* the schema (litgpt style): unknown keys are errors that list the known ones.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emoslm.errors import ConfigError, EmoslmError

T = TypeVar("T")


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if type(None) in args:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " or null"
    origin = typing.get_origin(hint)
    if origin in (list, tuple) and args:
        return f"a list of {_type_name(args[0])}" + (f" ({len(args)} items)" if Ellipsis not in args and
                                                       origin is tuple else "")
    if origin in (list, tuple, dict) or hint in (list, tuple, dict):
        return "a mapping" if dict in (origin, hint) else "a list"
    return getattr(hint, "__name__", str(hint))


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` asks (YAML's int for a float, a number for a str); a ConfigError naming
    ``key`` and the expected type otherwise. Types this does not know are passed through unchecked."""
    def bad() -> ConfigError:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        return ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {shown}")

    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        return _check_value(value, rest[0], key) if len(rest) == 1 else value
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise bad() from None
    elif hint is str:
        if isinstance(value, (int, float, datetime.date)) and not isinstance(value, bool):
            return str(value)  # YAML read `out_dir=2024` (or 2024-05-01) as a number (a date); the key wants text
        if not isinstance(value, str):
            raise bad()
    elif hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad()
    elif hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        if origin is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                raise bad()
            value = [_check_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        elif args:
            value = [_check_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(value) if tuple in (origin, hint) else list(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(map(str, unknown))}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, (dict, hint)):
                keys = ", ".join(f.name for f in dataclasses.fields(hint))
                raise ConfigError(f"{where}.{name} is a section (keys: {keys}); set its keys as {name}.KEY=VALUE, "
                                  f"got {type(value).__name__} {value!r}")
            if isinstance(value, dict):
                value = _build(hint, value, f"{where}.{name}")
        else:
            if isinstance(value, dict) and fields[name].default_factory is not dataclasses.MISSING:
                default = fields[name].default_factory()
                if isinstance(default, dict):  # a partial mapping updates the default one (llm.dropout=0)
                    value = {**default, **value}
            value = _check_value(value, hint, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # a __post_init__ check of the values
        raise ConfigError(f"{where}: {e}") from e


def parse_value(raw: str, item: str) -> Any:
    """The value of a ``key=value`` override, read as YAML (numbers, booleans, null, lists, mappings)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        reason = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"override {item!r}: the value {raw!r} is not valid YAML ({reason}); quote text that "
                          "has YAML syntax in it, e.g. key='\"[a\"'") from None
    except RecursionError:
        raise ConfigError(f"override {item!r}: the value is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ConfigError(f"override {item[:60]!r}...: the value cannot be read: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override must be key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a key (names joined by dots, e.g. train.lr)")
        node = data
        for depth, p in enumerate(parts[:-1]):
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {item!r}: {section} is a value ({child!r}), not a section with keys; "
                                  f"set it as {section}=VALUE")
            node = child
        node[parts[-1]] = parse_value(raw, item)
    return data


#: each paper package keeps its configs in its own ``configs/`` folder (``emoslm/<paper>/configs/*.yaml``); they are
#: found on disk, so this base module imports no paper
PACKAGE_ROOT = Path(__file__).resolve().parent


def config_dirs() -> list[Path]:
    """The ``configs/`` folders of the packages that ship recipe configs."""
    return sorted(p for p in PACKAGE_ROOT.glob("*/configs") if p.is_dir())


def packaged_configs() -> dict[str, Path]:
    """Every packaged config: name -> file (names are unique across packages)."""
    out: dict[str, Path] = {}
    for d in config_dirs():
        for p in sorted(d.glob("*.yaml")):
            if p.stem in out:
                raise EmoslmError(f"config name {p.stem!r} is used twice: {out[p.stem]} and {p}")
            out[p.stem] = p
    return out


def resolve_config(path: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``speech_lm_stage2``)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = packaged_configs()
    name = p.name.removesuffix(".yaml")
    if name in packaged:
        return packaged[name]
    raise EmoslmError(f"config {path} does not exist (packaged configs: {', '.join(sorted(packaged))})")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """The recipe config: defaults <- YAML file <- overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_config(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config {p}: cannot read it ({e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config {p}: not valid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {p}: expected a mapping of keys to values, got {type(data).__name__}")
    data = apply_overrides(data, overrides)
    return _build(cls, data, str(path or cls.__name__))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

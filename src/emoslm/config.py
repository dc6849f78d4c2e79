"""Recipe configs: a YAML file read into the recipe's dataclass, with ``key.sub=value`` overrides.

The dataclass *is* the schema (litgpt style): unknown keys are errors that list the known ones.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emoslm.errors import EmoslmError

T = TypeVar("T")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise EmoslmError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise EmoslmError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value, f"{where}.{name}")
        elif isinstance(value, dict) and fields[name].default_factory is not dataclasses.MISSING:
            default = fields[name].default_factory()
            if isinstance(default, dict):  # a partial mapping updates the default one (llm.dropout=0)
                value = {**default, **value}
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    for item in overrides or []:
        if "=" not in item:
            raise EmoslmError(f"override must be key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
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
        data = yaml.safe_load(p.read_text()) or {}
    data = apply_overrides(data, overrides)
    return _build(cls, data, str(path or cls.__name__))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

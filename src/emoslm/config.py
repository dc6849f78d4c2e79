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


CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``speech_lm_stage2``)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / f"{p.name}.yaml" if p.suffix == "" else CONFIG_DIR / p.name
    if packaged.is_file():
        return packaged
    raise EmoslmError(f"config {path} does not exist (packaged configs: {', '.join(packaged_configs())})")


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

"""Saving and loading emoslm modules HF-style: a directory with ``config.json`` and ``model.safetensors``.

Every emoslm module whose constructor takes one dataclass config inherits :class:`PretrainedMixin`::

    enc = fbank_encoder("tiny")
    enc.save_pretrained("runs/demo/scratch/encoder")    # config.json + model.safetensors in that folder
    enc2 = FbankTransformerEncoder.from_pretrained("runs/demo/scratch/encoder")
    any_model = PretrainedMixin.from_pretrained("runs/demo/scratch/encoder")   # the class named in config.json

``config.json`` is the dataclass as JSON (nested dataclass configs as nested objects) plus ``"_class"``, the
dotted path of the module class, so a directory says what it holds. Weights are written with
``safetensors.torch.save_model``, which wraps ``save_file`` and keeps one copy of tensors that share storage
(tied weights) -- ``save_file`` alone refuses them -- and ``load_model`` restores the aliases.
Nothing here touches a model hub: directories are local paths only.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from emoslm.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

T = TypeVar("T", bound="PretrainedMixin")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance as config, got {type(config).__name__}")
    return dataclasses.asdict(config)


def config_from_dict(config_class: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) dataclass config from :func:`config_to_dict`'s output.

    Field types are resolved from the annotations, so nested dataclass fields are rebuilt as dataclasses and
    list values of tuple-typed fields as tuples. Keys starting with ``_`` (metadata) are skipped; any other
    unknown key is an error, as it means the file was written by a different version of the class.
    """
    hints = typing.get_type_hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(k for k in data if not k.startswith("_") and k not in names)
    if unknown:
        raise TypeError(f"{config_class.__name__} has no field(s) {', '.join(unknown)}")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _coerce(hints.get(name), data[name])
    return config_class(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None or hint is None:
        return value
    # Optional[X] / X | None: try the non-None member.
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _coerce(args[0], value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built as ``cls(config)``.

    Subclasses set ``config_class`` (the dataclass their constructor takes) and store it as ``self.config``.
    """

    config_class: ClassVar[type]
    config: Any

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (created if missing)."""
        from safetensors.torch import save_model

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        cls = type(self)
        payload = {"_class": f"{cls.__module__}.{cls.__qualname__}", **config_to_dict(self.config)}
        (out / CONFIG_NAME).write_text(json.dumps(payload, indent=2) + "\n")
        save_model(self, str(out / WEIGHTS_NAME), metadata={"format": "pt"})  # type: ignore[arg-type]
        return out

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path, map_location: str | torch.device = "cpu") -> T:
        """Build the module from ``directory/config.json`` and load ``directory/model.safetensors``.

        The class is the one named in ``config.json`` (which must be ``cls`` or a subclass of it, so
        ``PretrainedMixin.from_pretrained(d)`` loads any emoslm module). Like HF, the module is returned in
        eval mode. Raises FileNotFoundError naming the missing file.
        """
        from safetensors.torch import load_model

        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: not a directory (expected a checkpoint directory written by save_pretrained)")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (d / name).is_file():
                raise CheckpointError(f"{d / name}: missing (expected {CONFIG_NAME} and {WEIGHTS_NAME} in {d})")
        data = json.loads((d / CONFIG_NAME).read_text())
        target = _resolve_class(data.get("_class"), d) if "_class" in data else cls
        if not (isinstance(target, type) and issubclass(target, cls)):
            raise ValueError(f"{d / CONFIG_NAME} holds a {data.get('_class')}, not a {cls.__module__}.{cls.__qualname__}")
        if not hasattr(target, "config_class"):
            raise TypeError(f"{target.__qualname__} does not set config_class")
        config = config_from_dict(target.config_class, data)
        model = target(config)  # type: ignore[call-arg]
        device = str(map_location) if isinstance(map_location, torch.device) else map_location
        missing, unexpected = load_model(model, str(d / WEIGHTS_NAME), strict=True, device=device)  # type: ignore[arg-type]
        if missing or unexpected:  # load_model(strict=True) raises already; kept for clarity
            raise RuntimeError(f"{d / WEIGHTS_NAME}: missing {missing}, unexpected {unexpected}")
        model.eval()  # type: ignore[attr-defined]
        return model


def save_weights(path: str | Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """Write an HF-style checkpoint folder: ``config.json`` and ``model.safetensors``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(path / "model.safetensors"))
    return path


def load_weights_into(model: torch.nn.Module, path: str | Path, kind: str,
                      optional: tuple[str, ...] = ("llm.",)) -> torch.nn.Module:
    """Load ``path/model.safetensors`` into ``model``; weights under the ``optional`` prefixes may be absent
    (a packaged LLM's, a projection added later with a no-op init); anything else missing or unexpected is an
    error naming ``kind``."""
    from safetensors.torch import load_file

    f = Path(path) / "model.safetensors"
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: not {kind} checkpoint")
    missing, unexpected = model.load_state_dict(load_file(str(f)), strict=False)
    bad = [m for m in missing if not m.startswith(optional)]
    if unexpected or bad:
        raise ValueError(f"{path}: weights do not fit this model (missing {bad[:5]}, unexpected {unexpected[:5]})")
    return model


def _resolve_class(dotted: Any, where: Path) -> type:
    if not isinstance(dotted, str) or "." not in dotted:
        raise ValueError(f"{where / CONFIG_NAME}: bad _class {dotted!r}")
    module_name, _, qualname = dotted.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{where / CONFIG_NAME}: cannot import class {dotted!r}: {e}") from e
    if not (isinstance(obj, type) and issubclass(obj, PretrainedMixin)):
        raise ValueError(f"{where / CONFIG_NAME}: {dotted!r} is not a PretrainedMixin module class")
    return obj

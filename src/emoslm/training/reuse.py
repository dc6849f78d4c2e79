"""A finished run is reused only when it was made with the settings about to run.

Every recipe records its run's resolved config beside the checkpoints (:func:`record_settings`, called by
``write_run_config``): ``settings.json`` holds the config as JSON, a fingerprint of every model folder the run
starts from (``init_from``, a pretrained encoder), the command that started the run and when. A pipeline asks
:func:`check_run` before each stage:

- the folder holds a finished run (``train_summary.json`` and a checkpoint) whose recorded settings equal the
  new ones: reuse it, do not train;
- it holds a run of other settings, or one that recorded none: remove that run's checkpoints and records (so
  that the trainer does not resume it) and train; one log line says which keys differ;
- otherwise (nothing there, or an unfinished run of the same settings, which the trainer resumes): train.

Keys that cannot change what a run produces are ignored in the comparison: :data:`NON_RESULT_KEYS`. A time
budget (:data:`BUDGET_KEYS`) only says where a run stops: a run that differs from the new settings in it alone is
reused when it ran all its steps, and continued from its last checkpoint when it stopped on its budget, never
removed (a long CPU run is resumed with a larger ``--minutes``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emoslm.errors import EmoslmError

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "train_summary.json"

#: config keys (the last part of a dotted key, at any depth) that cannot change what a run produces: progress
#: bars and logging, torch threads, how often the resume checkpoint is written, and where things are written
#: (the run folder, an encoder-output cache). Settings that differ only in these are the same settings.
NON_RESULT_KEYS = frozenset({"progress", "threads", "log_every", "save_every", "out_dir", "cache_dir"})

#: config keys that bound how long a run trains without changing what one step does (the schedule depends on
#: ``max_steps``, which is therefore a result key)
BUDGET_KEYS = frozenset({"max_minutes"})

#: what :func:`clear_run` removes: the trainer's checkpoints and summary, and the recorded settings
RUN_FILES = ("checkpoints", SUMMARY_FILE, SETTINGS_FILE, "config.yaml")

_MISSING = "(not recorded)"


def _weights_digest(value: str) -> str | None:
    """The sha256 (16 hex digits) of the weights a config value points at: a folder holding
    ``model.safetensors``, or a ``.safetensors`` file; None for anything else."""
    try:
        p = Path(value)
        if p.is_dir():
            p = p / "model.safetensors"
        if p.suffix != ".safetensors" or not p.is_file():
            return None
    except (OSError, ValueError):  # not a path (too long, a NUL byte)
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def run_settings(cfg: Any) -> dict[str, Any]:
    """A run's settings: its resolved config (a dataclass or a mapping) as JSON values, plus ``input_weights``,
    the fingerprint of every model folder a value of it names (a stage started from a retrained checkpoint is
    not the same stage)."""
    data = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    data = json.loads(json.dumps(data, default=str))
    weights = {k: d for k, v in _flatten(data).items() if isinstance(v, str) and v and (d := _weights_digest(v))}
    if weights:
        data["input_weights"] = weights
    return data


def command_line() -> str:
    """This process's command, as a person would type it (``emoslm run ...``, ``python benchmarks/x.py ...``)."""
    argv = list(sys.argv) or ["python"]
    prog = argv[0]
    if prog.endswith(".py"):
        try:
            prog = "python " + os.path.relpath(prog)
        except ValueError:
            prog = "python " + prog
    else:
        prog = Path(prog).name
    return " ".join([prog, *argv[1:]])


def record_settings(cfg: Any, out_dir: str | Path) -> Path:
    """Write ``out_dir/settings.json``: the run's settings (:func:`run_settings`), the command and the UTC time
    that started it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec = {"settings": run_settings(cfg), "command": command_line(),
           "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    tmp = out / f".{SETTINGS_FILE}.tmp"
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
    tmp.replace(out / SETTINGS_FILE)
    return out / SETTINGS_FILE


def read_record(out_dir: str | Path) -> dict[str, Any] | None:
    """What a run folder recorded: ``{"settings", "command", "started"}`` from ``settings.json``; for a run made
    before that file existed, its ``config.yaml`` (the same resolved config, without command or fingerprints);
    None when neither is there."""
    out = Path(out_dir)
    try:
        if (out / SETTINGS_FILE).is_file():
            rec = json.loads((out / SETTINGS_FILE).read_text())
            if isinstance(rec, dict) and isinstance(rec.get("settings"), dict):
                return rec
        if (out / "config.yaml").is_file():
            data = yaml.safe_load((out / "config.yaml").read_text())
            if isinstance(data, dict):
                return {"settings": json.loads(json.dumps(data, default=str)), "command": None, "started": None}
    except (OSError, ValueError, yaml.YAMLError) as e:  # unreadable or malformed: as if nothing were recorded
        log.warning("%s: cannot read the recorded settings (%s)", out, e)
    return None


def settings_diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = NON_RESULT_KEYS,
                  defaults: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every key whose value differs, apart from the ``ignore`` keys. A key the
    old run did not record (a setting added to the config later) whose new value is its default in
    ``defaults`` is the same setting: the old run ran with what that default does."""
    a, b, d = _flatten(old), _flatten(new), _flatten(defaults or {})
    return {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
            if k.rsplit(".", 1)[-1] not in ignore and a.get(k, _MISSING) != b.get(k, _MISSING)
            and not (k not in a and k in d and b.get(k, _MISSING) == d[k])}


def default_settings(cfg: Any) -> dict[str, Any]:
    """The settings of ``cfg``'s class with every field at its default ({} when it has no such instance)."""
    try:
        return run_settings(type(cfg)()) if dataclasses.is_dataclass(cfg) else {}
    except TypeError:  # a field without a default
        return {}


def describe_diff(diff: dict[str, tuple[Any, Any]], limit: int = 6) -> str:
    def short(v: Any) -> str:
        s = v if v == _MISSING else json.dumps(v, default=str)
        return s if len(s) <= 40 else s[:37] + "..."

    parts = [f"{k}: {short(a)} -> {short(b)}" for k, (a, b) in list(diff.items())[:limit]]
    more = len(diff) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def is_finished(out_dir: str | Path) -> bool:
    """The trainer's summary is there (written when a run ends) and a best or last model checkpoint."""
    out = Path(out_dir)
    return (out / SUMMARY_FILE).is_file() and any((out / "checkpoints" / n / "model").is_dir() for n in ("best", "last"))


def has_run(out_dir: str | Path) -> bool:
    out = Path(out_dir)
    return (out / "checkpoints").is_dir() or (out / SUMMARY_FILE).is_file()


def clear_run(out_dir: str | Path) -> None:
    """Remove a run's checkpoints and records (:data:`RUN_FILES`), nothing else of the folder."""
    out = Path(out_dir)
    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


@dataclass
class RunCheck:
    """What :func:`check_run` found: ``reuse`` (train or not), ``reason`` (one line; empty when there was
    nothing to reuse) and the folder's ``record`` (its settings, command and start time) when it is reused."""

    reuse: bool
    reason: str = ""
    record: dict[str, Any] | None = None

    def summary(self, out_dir: str | Path) -> dict[str, Any]:
        """The reused run's ``train_summary.json``, with where it came from (``reused``, ``trained_by``,
        ``trained_at``)."""
        rec = self.record or {}
        return {**json.loads((Path(out_dir) / SUMMARY_FILE).read_text()), "reused": True,
                "trained_by": rec.get("command"), "trained_at": rec.get("started")}


def check_run(out_dir: str | Path, cfg: Any, what: str | None = None) -> RunCheck:
    """Whether ``out_dir`` holds a finished run made with ``cfg``'s settings (see the module's docstring). A run
    of other (or unrecorded) settings is removed first, so that the trainer starts afresh; the reason is logged."""
    out = Path(out_dir)
    name = what or str(out)
    if not has_run(out):
        return RunCheck(False)
    new = run_settings(cfg)
    rec = read_record(out)
    if rec is None:
        why = f"{name}: {out} has a run without recorded settings (settings.json or config.yaml); training it again"
    else:
        diff = settings_diff(rec["settings"], new, defaults=default_settings(cfg))
        if diff and all(k.rsplit(".", 1)[-1] in BUDGET_KEYS for k in diff):
            return _continue_on_budget(out, name, rec, diff)
        if not diff:
            if is_finished(out):
                log.info("%s: %s was trained with the same settings; reused", name, out)
                return RunCheck(True, f"{name}: {out} was trained with the same settings; reused", rec)
            log.info("%s: continuing the unfinished run in %s (same settings)", name, out)
            return RunCheck(False, f"{name}: continuing the unfinished run in {out} (same settings)")
        why = f"{name}: {out} was trained with other settings ({describe_diff(diff)}); training it again"
    for key in new.get("input_weights", {}):  # never delete what the new run starts from
        src = _flatten(new).get(key)
        if isinstance(src, str) and Path(src).resolve().is_relative_to(out.resolve()):
            raise EmoslmError(f"{name}: {key}={src} lies inside {out}, which holds a run of other settings that "
                              "would be replaced; copy that checkpoint elsewhere or write this run to another folder")
    log.warning(why)
    clear_run(out)
    return RunCheck(False, why)


def _continue_on_budget(out: Path, name: str, rec: dict[str, Any], diff: dict[str, tuple[Any, Any]]) -> RunCheck:
    """A run whose settings differ only in its time budget: reused when it ran all its steps, else continued."""
    summary = None
    if is_finished(out):
        try:
            summary = json.loads((out / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            summary = None
    if summary is not None and not summary.get("stopped_early"):
        why = f"{name}: {out} ran all its steps ({describe_diff(diff)} changes no result); reused"
        log.info(why)
        return RunCheck(True, why, rec)
    # the trainer resumes from checkpoints/last, with the dev history kept in its state; the old summary goes, so
    # that a continuation killed before it ends is not taken for a finished run
    how = "stopped on its time budget" if summary is not None else "did not finish"
    (out / SUMMARY_FILE).unlink(missing_ok=True)
    why = f"{name}: continuing the run in {out}, which {how}, under a new one ({describe_diff(diff)})"
    log.warning(why)
    return RunCheck(False, why)


def same_weights(a: str | Path, b: str | Path) -> bool:
    """Whether two run folders hold the same best model checkpoint (by content)."""
    da, db = (_weights_digest(str(Path(p) / "checkpoints" / "best" / "model")) for p in (a, b))
    return da is not None and da == db

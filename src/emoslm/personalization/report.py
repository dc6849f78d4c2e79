"""Tables and the HTML report of the personalised-SER evaluation (paper 000, Tables II-IV, section V-D).

A :class:`Results` object holds, for each model and evaluation setting, the ``EvalResult.to_dict()`` of
:func:`emoslm.metrics.evaluate` (WA, UA, macro-F1, UA_spk with its spread, confusion matrix, labels, split
protocol), and the run's metadata (corpus, split protocol, command, date, machine, training settings). It is
plain JSON (:meth:`Results.to_json` / :meth:`Results.from_json`), so a report can be re-rendered later.

An entry is addressed by (model, setting, k):

- ``setting`` is an enrollment setting of :mod:`emoslm.data.episodes` (``"TU+LD"``, ``"TE+LU"``,
  ``"TU+LO(anger)"``; LO emotions are canonicalised) or None when the model sees no enrollment;
- ``k`` is the number of enrollment pairs; ``None`` for a model that has no k at all (a classifier).
  With k = 0 every setting is the same episode set, so the setting is dropped ("0-shot").

:meth:`Results.add` also takes the compact keys ``"0-shot"``, ``"TU+LD k=3"``, ``"TU+LO(anger) k=2"``.

Models have a kind: ``"icl"`` (the speech LM, one row per k), ``"peer"`` (e.g. the eGeMAPS peer, evaluated
on the same episodes), ``"control"`` (the speech LM with its enrollment labels shuffled or deranged) or
``"baseline"`` (no enrollment). ICL models carry their MetaICL training setting
(``"TU+LU_{0:7}"``, ``"TO+LD_7"``), which labels the rows of Table IV.

Tables (each built once as :class:`TableData`, then rendered with rich, as Markdown and as HTML):

- Table II: one row per model without k; for models with k one row per k, using the first setting of
  :data:`PRIMARY_SETTINGS` evaluated at that k (else the first one added). Columns UA_spk, σ, median, max,
  min (σ is the population std over speakers, as in :mod:`emoslm.metrics`).
- Table III (per model with k >= 1 entries): rows k = 1..max(7, largest k), columns TU+LD, TU+LU, TE+LD,
  TE+LU, then TU+LO per emotion of the label set that was evaluated (neutral last, as in the paper), then
  any other setting evaluated.
- Table IV: rows (test setting, training setting of each ICL model), columns k = 1..7.
- All results: WA, UA, macro-F1, UA_spk of every entry.

Calibration (:attr:`Results.calibration`, filled by :func:`emoslm.personalization.evaluation.run_eval`): the
temperature of each ICL model fitted on the dev split, and the test ECE before and after scaling (pooled over k,
and per k); rendered as a table and, in HTML, a reliability diagram. Without a dev split the report says that
no temperature was fitted.

Missing cells are '–'. The UA_spk-vs-k figure draws, per setting, the mean UA_spk with an error band that is
by default the 95% percentile-bootstrap confidence interval of the mean over speakers (2000 resamples of
speakers, seeded) — the uncertainty of the plotted number; ``band="sigma"`` draws ±σ across speakers
instead (the spread of speakers, as in Table II's σ column), ``band=None`` none.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from emoslm import reporting
from emoslm.data.episodes import parse_setting, setting_name
from emoslm.data.splits import describe_overlap, leakage_title
from emoslm.errors import LabelError
from emoslm.labels import canonical_emotion
from emoslm.reporting import (
    CSS,
    DASH,
    TableData,
    bootstrap_ci,
    figure_png,
    html_table,
    img,
    md_table,
    new_figure,
    rich_table,
)

KINDS = ("icl", "peer", "control", "baseline")

#: The setting shown in Table II for each k >= 1 (the first one evaluated), as in paper 000.
PRIMARY_SETTINGS = ("TU+LD", "TO+LD", "TU+LU")

#: The fixed columns of Table III, before the TU+LO columns.
TABLE3_SETTINGS = ("TU+LD", "TU+LU", "TE+LD", "TE+LU")

#: Test settings of Table IV (those present are shown; if none is, every setting of the ICL models is).
TABLE4_SETTINGS = ("TU+LD", "TU+LO(neutral)")



# ------------------------------------------------------------------------------------------- data model


def canonical_setting(setting: str | None) -> str | None:
    """``"tu+lo(Anger)"`` -> ``"TU+LO(anger)"``; None, '', '-' and '–' -> None; unknown names kept as given."""
    if setting is None or str(setting).strip() in ("", "-", DASH, "0-shot"):
        return None
    head, paren, tail = str(setting).partition("(")
    try:
        t, lab, lo = parse_setting(head.upper() + paren + tail)
    except ValueError:
        return str(setting).strip()
    if lo is not None:
        try:
            lo = canonical_emotion(lo)
        except LabelError:
            lo = lo.lower()
    return setting_name(t, lab, lo)


def parse_key(key: str) -> tuple[str | None, int | None]:
    """``"0-shot"`` -> (None, 0); ``"TU+LD k=3"`` -> ("TU+LD", 3); ``"3-shot TU+LD"`` too; ``"–"`` -> (None, None)."""
    s = str(key).strip()
    if s in ("", "-", DASH):
        return None, None
    m = re.fullmatch(r"(\d+)-shot", s)
    if m:
        return None, int(m.group(1))
    m = re.fullmatch(r"(.*?)\s*,?\s*k\s*=\s*(\d+)", s) or re.fullmatch(r"(\d+)-shot\s+(.*)", s)
    if m:
        a, b = m.groups()
        setting, k = (b, int(a)) if a.isdigit() else (a, int(b))
        return canonical_setting(setting), k
    return canonical_setting(s), None


def entry_key(setting: str | None, k: int | None) -> str:
    """The compact name of an evaluation: ``"0-shot"``, ``"TU+LD k=3"``, ``"TU+LO(anger) k=2"``, ``"–"``."""
    if k is None:
        return setting or DASH
    if k == 0 or setting is None:
        return f"{k}-shot"
    return f"{setting} k={k}"


@dataclass
class ModelInfo:
    """A model of the comparison. ``training_setting`` labels its Table IV rows (MetaICL's enrollment
    setting, e.g. ``"TU+LU_{0:7}"``); ``settings`` holds its training settings (JSON values)."""

    name: str
    kind: str = "icl"
    training_setting: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class Entry:
    """The evaluation of one model in one setting: ``result`` is ``EvalResult.to_dict()``."""

    model: str
    setting: str | None
    k: int | None
    result: dict[str, Any]

    @property
    def key(self) -> str:
        return entry_key(self.setting, self.k)

    @property
    def ua_spk(self) -> dict[str, Any]:
        return self.result["ua_spk"]


@dataclass
class RunMetadata:
    """What produced the numbers. :meth:`collect` fills date, machine and command from the running process."""

    corpus: str = ""
    split_protocol: Any = None
    command: str = ""
    date: str = ""
    machine: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: :func:`emoslm.data.splits.split_overlap` of the evaluated split against the training data (None: not run)
    leakage_check: dict[str, Any] | None = None

    @classmethod
    def collect(cls, **kw: Any) -> "RunMetadata":
        kw.setdefault("command", shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "")
        kw.setdefault("date", datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"))
        kw.setdefault("machine", f"{platform.node()} ({platform.platform()}, {os.cpu_count()} CPUs, "
                                 f"Python {platform.python_version()})")
        return cls(**kw)


@dataclass
class Results:
    """Every evaluation of a report, with its models and metadata. JSON round-trips exactly."""

    metadata: RunMetadata = field(default_factory=RunMetadata)
    models: list[ModelInfo] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    title: str = "Personalised SER evaluation"
    #: {"status": ..., "split": "dev" | None, "models": {name: {"temperature": T, "test": {...}}}, ...}
    calibration: dict[str, Any] = field(default_factory=dict)

    # ---- building

    def model(self, name: str) -> ModelInfo:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in the results (models: {', '.join(m.name for m in self.models)})")

    def add_model(self, name: str, kind: str = "icl", training_setting: str | None = None,
                  **settings: Any) -> ModelInfo:
        if any(m.name == name for m in self.models):
            raise ValueError(f"model {name!r} is already in the results")
        info = ModelInfo(name, kind, training_setting, dict(settings))
        self.models.append(info)
        return info

    def add(self, model: str, setting: str | None, result: Any, k: int | None = None) -> Entry:
        """Add one evaluation. ``setting`` is a setting name (with ``k``) or a compact key ("TU+LD k=3",
        "0-shot"); ``result`` an EvalResult or its ``to_dict()``. An unknown model is added as kind "icl"."""
        if setting is not None and k is None:
            setting, k = parse_key(setting)
        else:
            setting = canonical_setting(setting)
        if k is not None and (not isinstance(k, (int, np.integer)) or k < 0):
            raise ValueError(f"k must be an int >= 0 or None, got {k!r}")
        if k == 0:
            setting = None
        res = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        for need in ("ua_spk", "labels", "confusion", "wa", "ua", "macro_f1"):
            if need not in res:
                raise ValueError(f"result for {model} {entry_key(setting, k)} lacks {need!r}: pass "
                                 "EvalResult or EvalResult.to_dict()")
        res = json.loads(json.dumps(res))  # plain JSON values; the object then round-trips exactly
        if not any(m.name == model for m in self.models):
            self.add_model(model)
        k = None if k is None else int(k)
        if self.get(model, setting, k) is not None:
            raise ValueError(f"{model} {entry_key(setting, k)} is already in the results")
        entry = Entry(model, setting, k, res)
        self.entries.append(entry)
        return entry

    # ---- queries

    def get(self, model: str, setting: str | None = None, k: int | None = None) -> Entry | None:
        if setting is not None and k is None and (" k=" in setting or "-shot" in setting):
            setting, k = parse_key(setting)
        setting = None if k == 0 else canonical_setting(setting)
        for e in self.entries:
            if e.model == model and e.setting == setting and e.k == k:
                return e
        return None

    def of(self, model: str) -> list[Entry]:
        return [e for e in self.entries if e.model == model]

    @property
    def main_model(self) -> str | None:
        """The first ICL model (Table III, the plot's settings and the 0-shot reference), else the first."""
        for m in self.models:
            if m.kind == "icl":
                return m.name
        return self.models[0].name if self.models else None

    @property
    def labels(self) -> list[str]:
        for e in self.entries:
            return list(e.result["labels"])
        return []

    # ---- JSON

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "metadata": asdict(self.metadata),
                "models": [asdict(m) for m in self.models], "entries": [asdict(e) for e in self.entries],
                **({"calibration": self.calibration} if self.calibration else {})}

    def to_json(self, path: str | Path | None = None, indent: int | None = 1) -> str:
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Results":
        return cls(
            metadata=RunMetadata(**d.get("metadata", {})),
            models=[ModelInfo(**m) for m in d.get("models", [])],
            entries=[Entry(**e) for e in d.get("entries", [])],
            title=d.get("title", cls.title),
            calibration=dict(d.get("calibration") or {}),
        )

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "Results":
        """From a JSON string or a file written by :meth:`to_json`."""
        s = str(text_or_path)
        if not s.lstrip().startswith("{"):
            s = Path(s).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(s))


# ------------------------------------------------------------------------------------------------ tables


def _f(x: Any) -> str:
    return DASH if x is None else f"{x:.3f}"


def _k_max(results: Results, at_least: int = 7) -> int:
    ks = [e.k for e in results.entries if e.k is not None]
    return max([at_least, *ks])


def _table2_rows_of(results: Results, model: str) -> list[Entry]:
    """The entries of ``model`` in Table II: no-k entries, then one per k (primary setting first)."""
    entries = results.of(model)
    rows = [e for e in entries if e.k is None]
    for k in sorted({e.k for e in entries if e.k is not None}):
        at_k = [e for e in entries if e.k == k]
        ranked = sorted(at_k, key=lambda e: PRIMARY_SETTINGS.index(e.setting)
                        if e.setting in PRIMARY_SETTINGS else len(PRIMARY_SETTINGS))
        rows.append(ranked[0])
    return rows


def table2(results: Results) -> TableData:
    rows, sections = [], []
    for m in results.models:
        chosen = _table2_rows_of(results, m.name)
        if not chosen:
            continue
        sections.append(len(rows))
        for e in chosen:
            s = e.ua_spk
            rows.append([m.name, DASH if e.k is None else f"{e.k}-shot", e.setting or DASH,
                         _f(s["mean"]), _f(s["std"]), _f(s["median"]), _f(s["max"]), _f(s["min"])])
    return TableData(
        "Table II: UA_spk of every model",
        ["Model", "ICL", "Setting", "UA_spk ↑", "σ(UA_spk) ↓", "median ↑", "max ↑", "min ↑"],
        rows,
        caption="UA_spk: mean over test speakers of each speaker's accuracy; σ: population std over speakers. "
                f"For models with enrollment, the row of each k uses the first of {', '.join(PRIMARY_SETTINGS)} "
                "that was evaluated.",
        sections=sections[1:], text_columns=3, group_columns=1,
    )


def _lo_order(labels: Sequence[str]) -> list[str]:
    return [lab for lab in labels if lab != "neutral"] + (["neutral"] if "neutral" in labels else [])


def table3_settings(results: Results, model: str) -> list[str]:
    """Table III's columns for a model: the four TU/TE x LD/LU, TU+LO per emotion evaluated (neutral last),
    then any other setting evaluated."""
    have = {e.setting for e in results.of(model) if e.k and e.setting}
    lo = [s for s in (setting_name("TU", "LO", lab) for lab in _lo_order(results.labels)) if s in have]
    cols = list(TABLE3_SETTINGS) + lo
    return cols + sorted(have - set(cols))


def table3(results: Results, model: str | None = None) -> TableData:
    model = model or results.main_model
    cols = table3_settings(results, model) if model else list(TABLE3_SETTINGS)
    rows = []
    for k in range(1, _k_max(results) + 1):
        cells = []
        for s in cols:
            e = results.get(model, s, k) if model else None
            cells.append(_f(e.ua_spk["mean"]) if e else DASH)
        rows.append([f"{k}-shot", *cells])
    return TableData(f"Table III: UA_spk of {model} by enrollment setting", ["ICL", *cols], rows,
                     caption="TU/TE: target emotion uncontrolled/excluded among the pairs; LU/LD/LO: labels "
                             "uncontrolled/pairwise different/all one emotion (in brackets).")


def table4_settings(results: Results) -> list[str]:
    icl = [m.name for m in results.models if m.kind == "icl"]
    present = list(dict.fromkeys(e.setting for e in results.entries if e.model in icl and e.k and e.setting))
    chosen = [s for s in TABLE4_SETTINGS if s in present]
    return chosen or present


def table4(results: Results, settings: Sequence[str] | None = None) -> TableData:
    icl = [m for m in results.models if m.kind == "icl"]
    settings = [canonical_setting(s) for s in settings] if settings else table4_settings(results)
    ks = range(1, _k_max(results) + 1)
    rows, sections = [], []
    for s in settings:
        sections.append(len(rows))
        for m in icl:
            cells = [results.get(m.name, s, k) for k in ks]
            rows.append([s, m.training_setting or m.name, *[_f(e.ua_spk["mean"]) if e else DASH for e in cells]])
    return TableData("Table IV: UA_spk by MetaICL training setting and test setting",
                     ["Test setting", "Training setting", *[f"{k}-shot" for k in ks]], rows,
                     caption="Rows: each ICL model, named by the enrollment setting it was meta-trained with.",
                     sections=sections[1:], text_columns=2, group_columns=1)


def _sorted_entries(results: Results) -> list[Entry]:
    """Entries by model (in model order), then k (no k first), then setting (Table III's order)."""
    order = {m.name: i for i, m in enumerate(results.models)}

    def key(e: Entry):
        cols = table3_settings(results, e.model)
        return (order.get(e.model, len(order)), -1 if e.k is None else e.k,
                cols.index(e.setting) if e.setting in cols else -1)

    return sorted(results.entries, key=key)


def table_all(results: Results) -> TableData:
    rows = []
    for e in _sorted_entries(results):
        r = e.result
        rows.append([e.model, e.setting or DASH, DASH if e.k is None else str(e.k), str(r["n"]),
                     str(r.get("n_invalid", 0)), _f(r["wa"]), _f(r["ua"]), _f(r["macro_f1"]),
                     _f(r["ua_spk"]["mean"]), _f(r["ua_spk"]["std"]), str(r["ua_spk"].get("n_speakers", ""))])
    return TableData("All results", ["Model", "Setting", "k", "n", "invalid", "WA", "UA", "macro-F1", "UA_spk",
                                     "σ(UA_spk)", "speakers"], rows,
                     caption="WA: accuracy; UA: mean per-class recall; invalid: generations outside the label "
                             "set (counted wrong).", text_columns=3, group_columns=1)


def _calibrated_models(results: Results) -> dict[str, dict[str, Any]]:
    """The models with a fitted temperature and test episodes to report it on."""
    return {name: c for name, c in (results.calibration.get("models") or {}).items() if c.get("test")}


def calibration_table(results: Results) -> TableData | None:
    """Per ICL model: the temperature fitted on dev, and the test ECE before and after scaling (pooled over k,
    then each k)."""
    fitted = _calibrated_models(results)
    if not fitted:
        return None
    ks = sorted({int(k) for c in fitted.values() for k in c["test"]["per_k"]})
    rows = []
    for name, c in fitted.items():
        t = c["test"]
        per_k = [t["per_k"].get(str(k)) for k in ks]
        rows.append([name, f"{c['temperature']:.3f}" + (" (bound)" if c.get("at_bound") else ""), str(c["n_dev"]),
                     str(t["n"]),
                     _f(t["ece_before"]), _f(t["ece_after"]),
                     *[f"{_f(p['ece_before'])} → {_f(p['ece_after'])}" if p else DASH for p in per_k]])
    cal = results.calibration
    return TableData(
        "Calibration: expected calibration error before and after temperature scaling",
        ["Model", "T", "dev n", "test n", "ECE before", "ECE after", *[f"{k}-shot" for k in ks]], rows,
        caption=f"T: one temperature per model, fitted on the {cal.get('split')} split ({cal.get('settings')}; "
                f"at most {cal.get('episodes_per_k')} episodes per k) by minimising the NLL; ECE: top-label, "
                f"{cal.get('n_bins')} equal-width confidence bins, on the evaluated split's episodes of the same "
                "settings (per k: before → after). (bound): the fit stopped at a bound of the search.",
        text_columns=1)


def tables(results: Results) -> list[TableData]:
    """Table II, Table III of every model evaluated with k >= 1 (the main model first), Table IV (when an ICL
    model has k >= 1 entries) and the table of all results."""
    out = [table2(results)]
    with_k = [m.name for m in results.models if any(e.k for e in results.of(m.name))]
    main = results.main_model
    for name in sorted(with_k, key=lambda n: n != main):
        out.append(table3(results, name))
    if table4_settings(results):
        out.append(table4(results))
    cal = calibration_table(results)
    if cal is not None:
        out.append(cal)
    out.append(table_all(results))
    return out


# ---------------------------------------------------------------------------------------------- renderers


def _metadata_pairs(results: Results) -> list[tuple[str, str]]:
    md = results.metadata
    protocols = list(dict.fromkeys(json.dumps(e.result.get("protocol"), sort_keys=True)
                                   for e in results.entries if e.result.get("protocol")))
    split = md.split_protocol
    pairs = [
        ("Corpus", md.corpus or DASH),
        ("Split protocol", (json.dumps(split, sort_keys=True) if not isinstance(split, str) else split)
         if split else (" ; ".join(protocols) or DASH)),
    ]
    if md.leakage_check:
        pairs.append((leakage_title(md.leakage_check), describe_overlap(md.leakage_check)))
    pairs += [
        ("Command", md.command or DASH),
        ("Date", md.date or DASH),
        ("Machine", md.machine or DASH),
    ]
    if split and protocols and protocols != [json.dumps(split, sort_keys=True)]:
        pairs.append(("Protocols in results", " ; ".join(protocols)))
    if md.training:
        pairs.append(("Training", json.dumps(md.training, sort_keys=True)))
    for m in results.models:
        desc = {"kind": m.kind, **({"training_setting": m.training_setting} if m.training_setting else {}),
                **m.settings}
        pairs.append((f"Model: {m.name}", json.dumps(desc, sort_keys=True)))
    for k, v in md.extra.items():
        pairs.append((str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True)))
    if results.calibration:
        pairs.append(("Calibration", f"temperature scaling {results.calibration.get('status', DASH)}"))
    return pairs


def to_markdown(results: Results) -> str:
    """The report as Markdown: metadata, then every table of :func:`tables`."""
    out = [f"## {results.title}", ""]
    out += [f"- **{k}**: `{v}`" if k in ("Command",) else f"- **{k}**: {v}" for k, v in _metadata_pairs(results)]
    out.append("")
    for t in tables(results):
        out.append(md_table(t))
    return "\n".join(out)


def render_terminal(results: Results, console: Any = None) -> None:
    """Print the metadata and every table with rich."""
    from rich.console import Console
    from rich.table import Table

    if console is None:  # not a terminal (a pipe, a log file): wide enough for the tables, no wrapping
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 160))
    meta = Table(title=results.title, show_header=False, title_style="bold")
    meta.add_column(style="bold")
    meta.add_column(overflow="fold")
    for k, v in _metadata_pairs(results):
        meta.add_row(k, v)
    console.print(meta)
    for t in tables(results):
        console.print()
        console.print(rich_table(t))


# ------------------------------------------------------------------------------------------------ figures


def _band(e: Entry, band: str | None) -> tuple[float, float] | None:
    s = e.ua_spk
    if band is None:
        return None
    if band == "sigma":
        return s["mean"] - s["std"], s["mean"] + s["std"]
    if band == "ci":
        per = list((s.get("per_speaker") or {}).values())
        return bootstrap_ci(per) if per else None
    raise ValueError(f"band must be 'ci', 'sigma' or None, got {band!r}")


#: A panel with more lines than this draws no error bands (they would hide each other).
MAX_BANDS = 5

_BAND_TEXT = {"ci": "band: 95% bootstrap CI over speakers", "sigma": "band: ±σ across speakers", None: ""}


def _line(ax, entries: list[Entry], label: str, band: str | None, **style: Any) -> None:
    entries = sorted(entries, key=lambda e: e.k)
    ks = [e.k for e in entries]
    ys = [e.ua_spk["mean"] for e in entries]
    (ln,) = ax.plot(ks, ys, marker="o", ms=4, label=label, **style)
    bands = [_band(e, band) for e in entries]
    if band and all(b is not None for b in bands) and len(ks) > 1:
        ax.fill_between(ks, [b[0] for b in bands], [b[1] for b in bands], color=ln.get_color(), alpha=0.12,
                        linewidth=0)


def _references(ax, results: Results, main: str | None, skip: Iterable[str] = ()) -> None:
    """Horizontal levels: the main model's 0-shot, and each model without k (or with only k = 0)."""
    refs = []
    if main and results.get(main, None, 0):
        refs.append((f"{main} 0-shot", results.get(main, None, 0), "black", "--"))
    for m in results.models:
        if m.name in skip:
            continue
        es = results.of(m.name)
        if m.name != main and es and all(e.k in (None, 0) for e in es):
            refs.append((m.name, es[0], "dimgray", ":"))
    for label, e, color, ls in refs:
        y = e.ua_spk["mean"]
        ax.axhline(y, color=color, ls=ls, lw=1.2, zorder=1, label=f"{label} ({y:.1%})")


def _style_axes(ax, title: str, ks: Sequence[int]) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.set_title(title, fontsize=10)
    ax.set_xlabel("k (enrollment utterance-label pairs)")
    ax.set_ylabel("UA_spk")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if ks:
        ax.set_xticks(range(0, max(ks) + 1))
        ax.set_xlim(-0.3, max(ks) + 0.3)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)


def plot_ua_vs_k(results: Results, band: str | None = "ci"):
    """The UA_spk-vs-k figure: (a) the main model per setting with the peers' lines at the primary setting,
    (b) the main model's TU+LO settings per emotion (when evaluated), (c) one panel per Table IV test
    setting with a line per ICL model (when there are several). Returns a matplotlib Figure."""
    if band not in _BAND_TEXT:
        raise ValueError(f"band must be 'ci', 'sigma' or None, got {band!r}")
    main = results.main_model
    icl = [m.name for m in results.models if m.kind == "icl"]
    zero = results.get(main, None, 0) if main else None

    def series(model: str, setting: str) -> list[Entry]:
        es = [e for e in results.of(model) if e.setting == setting and e.k]
        z = results.get(model, None, 0)
        return ([z] if z else []) + es if es else []

    main_settings = list(dict.fromkeys(e.setting for e in results.of(main) if e.k and e.setting)) if main else []
    lo = [s for s in main_settings if "+LO" in s]
    other = [s for s in main_settings if "+LO" not in s]
    panels: list[tuple[str, list[tuple[str, list[Entry], dict]]]] = []
    a = [(s, series(main, s), {}) for s in other]
    primary = next((s for s in PRIMARY_SETTINGS if s in other), other[0] if other else None)
    peer_styles = iter([{"color": c, "ls": "--"} for c in ("dimgray", "darkgoldenrod", "darkcyan", "purple")] * 9)
    for m in results.models:
        if m.name == main or m.kind == "icl":
            continue
        have = list(dict.fromkeys(e.setting for e in results.of(m.name) if e.k and e.setting))
        s = primary if primary in have else (have[0] if have else None)
        if s:  # the peer at the main setting, on the same episodes
            a.append((f"{m.name} ({s})", series(m.name, s), next(peer_styles)))
    if a:
        panels.append((f"(a) {main}: UA_spk vs k by enrollment setting", a))
    if lo:
        panels.append((f"(b) {main}: TU+LO (all pairs one emotion)", [(s, series(main, s), {}) for s in lo]))
    if len(icl) > 1:
        for s in table4_settings(results):
            lines = [(results.model(n).training_setting or n, series(n, s), {}) for n in icl]
            panels.append((f"({chr(ord('a') + len(panels))}) test {s}: by MetaICL training setting",
                           [x for x in lines if x[1]]))
    if not panels:
        panels = [("UA_spk vs k", [])]
    import matplotlib

    palette = [c for c in matplotlib.colormaps["tab10"].colors if c[0] != c[1]]  # grey is for the peers
    colors: dict[str, Any] = {}
    fig = new_figure(6.2 * min(len(panels), 2), 4.2 * ((len(panels) + 1) // 2))
    axes = fig.subplots((len(panels) + 1) // 2, min(len(panels), 2), squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, panels):
        ks: list[int] = []
        for label, es, style in lines:
            if es:  # bands only where they stay readable; one colour per line label in every panel
                style = {"color": colors.setdefault(label, palette[len(colors) % len(palette)]), **style}
                _line(ax, es, label, band if len(lines) <= MAX_BANDS else None, **style)
                ks += [e.k for e in es]
        _references(ax, results, main if zero else None, skip=icl)
        _style_axes(ax, title, ks)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("UA_spk vs number of enrollment pairs k" + (f" ({_BAND_TEXT[band]})" if band else ""),
                 fontsize=10)
    return fig


def plot_reliability(results: Results):
    """The reliability diagram of each calibrated model: accuracy against mean confidence per confidence bin on
    the test episodes, before and after temperature scaling (marker area: the bin's share of predictions), and
    the diagonal of perfect calibration. Returns a matplotlib Figure."""
    fitted = _calibrated_models(results)
    fig = new_figure(4.2 * min(len(fitted), 3), 4.0 * ((len(fitted) + 2) // 3))
    axes = fig.subplots((len(fitted) + 2) // 3, min(len(fitted), 3), squeeze=False).ravel()
    for ax, (name, c) in zip(axes, fitted.items()):
        t = c["test"]
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
        for key, label, color in (("before", "T = 1", "tab:red"), ("after", f"T = {c['temperature']:.2f}",
                                                                       "tab:blue")):
            bins = [b for b in t[f"reliability_{key}"] if b["count"]]
            sizes = [200 * b["count"] / t["n"] for b in bins]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color=color, lw=1, alpha=0.7)
            ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=sizes, color=color,
                       alpha=0.7, label=f"{label} (ECE {t[f'ece_{key}']:.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (largest probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    for ax in axes[len(fitted):]:
        ax.set_visible(False)
    fig.suptitle("Reliability on the test episodes, before and after temperature scaling", fontsize=10)
    return fig


def plot_confusion(entry: Entry):
    """Row-normalised confusion heatmap of one entry (:func:`emoslm.reporting.plot_confusion`)."""
    return reporting.plot_confusion(entry.result, f"{entry.model} — {entry.key}")


def default_confusion_entries(results: Results) -> list[Entry]:
    """0-shot and the largest-k entry of the main model (at its primary setting), and each peer at that k."""
    main = results.main_model
    if not main:
        return []
    rows = _table2_rows_of(results, main)
    out = [e for e in rows if e.k == 0]
    with_k = [e for e in rows if e.k]
    if with_k:
        top = with_k[-1]
        out.append(top)
        for m in results.models:
            if m.name != main and m.kind != "icl":
                e = results.get(m.name, top.setting, top.k)
                if e:
                    out.append(e)
    return out or rows[:1]


# ------------------------------------------------------------------------------------------------ HTML


def to_html(results: Results, confusion: Sequence[Entry | tuple[str, str]] | None = None,
            band: str | None = "ci") -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(results.title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{e(results.title)}</h1>"]
    parts.append("<h2>Run</h2><table class=\"meta\">" + "".join(
        f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in _metadata_pairs(results)) + "</table>")
    if results.entries:
        parts.append("<h2>UA_spk vs k</h2>")
        parts.append(img(figure_png(plot_ua_vs_k(results, band)), "UA_spk vs k"))
        band_text = _BAND_TEXT[band][:1].upper() + _BAND_TEXT[band][1:] + ". " if band else ""
        parts.append(f'<div class="caption">Lines: mean UA_spk over test speakers at each k (k = 0 is the '
                     f'0-shot evaluation). {e(band_text)}Dashed horizontal line: the main '
                     "model's 0-shot level; dotted: models without enrollment; dashed lines: peers on the same "
                     f"episodes. Panels with more than {MAX_BANDS} lines have no bands.</div>")
    for t in tables(results):
        best = 3 if t.title.startswith("Table II") else None
        parts.append(html_table(t, best))
    if _calibrated_models(results):
        parts.append("<h2>Calibration</h2>")
        parts.append(img(figure_png(plot_reliability(results)), "reliability diagram"))
        parts.append('<div class="caption">Each point: the predictions of one confidence bin (area: their share), '
                     "their accuracy against their mean confidence; on the dotted diagonal the confidence is "
                     "the accuracy. The temperature was fitted on the dev split; the points are the test episodes."
                     "</div>")
    chosen: list[Entry] = []
    for c in (default_confusion_entries(results) if confusion is None else confusion):
        if isinstance(c, Entry):
            chosen.append(c)
        else:
            found = results.get(*c)
            if found is None:
                raise KeyError(f"no entry {c!r} for a confusion matrix")
            chosen.append(found)
    if chosen:
        parts.append("<h2>Confusion matrices</h2><div class=\"figs\">")
        parts += [img(figure_png(plot_confusion(c)), f"confusion {c.model} {c.key}") for c in chosen]
        parts.append('</div><div class="caption">Rows: reference emotion (support in brackets); cells: share '
                     "of the row predicted as the column, with counts. &lt;invalid&gt;: generations outside the "
                     "label set.</div>")
    parts.append(f'<div class="caption">Generated by emoslm.personalization.report on '
                 f'{e(datetime.now().isoformat(timespec="seconds"))}.</div></body></html>')
    return "\n".join(parts) + "\n"


def write_html(results: Results, path: str | Path, confusion: Sequence[Entry | tuple[str, str]] | None = None,
               band: str | None = "ci") -> Path:
    """Write :func:`to_html` to ``path``. ``confusion`` lists the (model, key) rows whose confusion matrices
    are shown (default: :func:`default_confusion_entries`); ``band`` is "ci", "sigma" or None."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(results, confusion, band), encoding="utf-8")
    return path

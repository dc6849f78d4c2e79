"""The emoslm data layer: lhotse manifests whose supervisions carry emotion and speaker attributes.

A supervision's standard lhotse fields hold ``speaker``, ``gender``, ``text`` and ``language``; emoslm adds in
``custom``:

- ``emotion``: the canonical label (see :mod:`emoslm.labels`), or None when the corpus has no agreed label;
- ``emotion_orig``: the corpus's own label, kept verbatim;
- ``corpus``; ``session`` where the corpus has sessions (IEMOCAP), used by split protocols;
- ``pitch_level``, ``tempo_level``, ``energy_level`` ("low"/"normal"/"high") where known;
- anything else an adapter knows (valence/arousal/dominance, intensity, ...).

A prepared corpus is a dict ``{split: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``,
written as ``<corpus>_recordings_<split>.jsonl.gz`` / ``<corpus>_supervisions_<split>.jsonl.gz`` (lhotse's
naming). People who do not use lhotse can export and import the same content as one flat CSV or JSONL table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping

from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource

from emoslm.audio import probe
from emoslm.errors import AudioError, LabelError, ManifestError
from emoslm.labels import ALIASES, CANONICAL, canonical_emotion

LEVELS = ("low", "normal", "high")
ATTRIBUTES = ("pitch_level", "tempo_level", "energy_level")
GENDERS = ("M", "F")

#: Columns of the flat CSV/JSONL manifest, in order. Extra columns are kept in ``custom``.
FLAT_COLUMNS = (
    "id", "audio_path", "start", "duration", "speaker", "emotion", "emotion_orig", "gender", "text",
    "language", "corpus", "session", "split", "sampling_rate", "num_samples", *ATTRIBUTES,
)

#: Header names a flat table may use for a column, besides the column's own name (matched case-insensitively,
#: surrounding spaces ignored). The first one present is used; the others stay extra columns.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "audio_path": ("path", "file", "wav", "audio", "filename", "audio_file"),
    "emotion": ("label",),
    "speaker": ("speaker_id", "spk"),
}
#: Columns a flat table must have (``id`` is derived from the audio file's name when the table has none).
REQUIRED_COLUMNS = ("audio_path", "speaker", "emotion")

PreparedCorpus = dict[str, dict[str, Any]]


def make_supervision(
    id: str,
    recording_id: str,
    duration: float,
    *,
    speaker: str,
    emotion: str | None,
    emotion_orig: str | None = None,
    corpus: str,
    start: float = 0.0,
    gender: str | None = None,
    text: str | None = None,
    language: str | None = None,
    session: str | None = None,
    **attributes: Any,
) -> SupervisionSegment:
    """Build a supervision in emoslm's schema; checks the label and attribute values."""
    if emotion is not None and emotion not in CANONICAL:
        raise ValueError(f"supervision {id}: emotion {emotion!r} is not canonical ({', '.join(CANONICAL)})")
    if gender is not None and gender not in GENDERS:
        raise ValueError(f"supervision {id}: gender must be one of {GENDERS}, got {gender!r}")
    for name in ATTRIBUTES:
        if attributes.get(name) is not None and attributes[name] not in LEVELS:
            raise ValueError(f"supervision {id}: {name} must be one of {LEVELS}, got {attributes[name]!r}")
    custom = {"emotion": emotion, "emotion_orig": emotion_orig if emotion_orig is not None else emotion,
              "corpus": corpus}
    if session is not None:
        custom["session"] = session
    custom.update({k: v for k, v in attributes.items() if v is not None})
    return SupervisionSegment(
        id=id, recording_id=recording_id, start=start, duration=duration, channel=0, text=text,
        language=language, speaker=speaker, gender=gender, custom=custom,
    )


def emotion_of(sup: SupervisionSegment) -> str | None:
    return (sup.custom or {}).get("emotion")


def attr(sup: SupervisionSegment, name: str, default: Any = None) -> Any:
    """A field of a supervision by name: a standard lhotse field or a key of ``custom``."""
    if name in ("speaker", "gender", "text", "language", "id", "recording_id", "start", "duration"):
        return getattr(sup, name)
    return (sup.custom or {}).get(name, default)


# ----------------------------------------------------------------------------------------------- files


def manifest_paths(output_dir: Path | str, corpus: str, split: str) -> tuple[Path, Path]:
    out = Path(output_dir)
    return (out / f"{corpus}_recordings_{split}.jsonl.gz", out / f"{corpus}_supervisions_{split}.jsonl.gz")


def validate_prepared(prepared: PreparedCorpus) -> None:
    """Check each split: lhotse consistency and emoslm's schema (every supervision has speaker and corpus)."""
    from lhotse.qa import validate_recordings_and_supervisions

    for split, parts in prepared.items():
        recs, sups = parts["recordings"], parts["supervisions"]
        validate_recordings_and_supervisions(recs, sups)
        for s in sups:
            if not s.speaker:
                raise ManifestError(split, f"supervision {s.id} has no speaker")
            if "corpus" not in (s.custom or {}):
                raise ManifestError(split, f"supervision {s.id} has no corpus field")


def save_prepared(prepared: PreparedCorpus, output_dir: Path | str, corpus: str) -> None:
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ManifestError(output_dir, "is a file, not a folder: choose a folder for the manifests")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for split, parts in prepared.items():
        rec_path, sup_path = manifest_paths(output_dir, corpus, split)
        parts["recordings"].to_file(rec_path)
        parts["supervisions"].to_file(sup_path)


def load_prepared(output_dir: Path | str, corpus: str | None = None) -> PreparedCorpus:
    """Read back what :func:`save_prepared` (or ``emoslm prepare``) wrote; ``corpus`` may be inferred."""
    out = Path(output_dir)
    make = ("make them with `emoslm prepare CORPUS CORPUS_DIR OUT`, `emoslm manifest import TABLE OUT` or "
            "`emoslm synth corpus --out OUT`")
    if not out.is_dir():
        raise ManifestError(out, f"{'not a folder' if out.exists() else 'no such folder'}: expected a folder of "
                                 f"lhotse manifests; {make}")
    files = sorted(out.glob("*_supervisions_*.jsonl.gz"))
    if not files:
        raise ManifestError(out, f"no lhotse manifests here (CORPUS_supervisions_SPLIT.jsonl.gz); {make}")
    if corpus is None:
        names = {f.name.split("_supervisions_")[0] for f in files}
        if len(names) != 1:
            raise ManifestError(out, f"expected manifests of exactly one corpus, found {sorted(names) or 'none'}")
        corpus = names.pop()
    prepared: PreparedCorpus = {}
    for f in files:
        name, split = f.name[: -len(".jsonl.gz")].split("_supervisions_")
        if name != corpus:
            continue
        rec_path, sup_path = manifest_paths(out, corpus, split)
        try:
            prepared[split] = {
                "recordings": RecordingSet.from_file(rec_path).to_eager(),
                "supervisions": SupervisionSet.from_file(sup_path).to_eager(),
            }
        except Exception as e:  # lhotse raises many kinds; name the file
            raise ManifestError(sup_path, f"cannot read manifest: {e}") from e
    if not prepared:
        found = sorted({f.name.split("_supervisions_")[0] for f in files})
        raise ManifestError(out, f"no manifests of corpus {corpus!r} (this folder has: {', '.join(found)})")
    return prepared


def to_cuts(prepared: PreparedCorpus, split: str | None = None) -> CutSet:
    """Cuts (one per supervision) of one split, or of every split with the split name in ``custom``."""
    splits = [split] if split is not None else list(prepared)
    cuts = []
    for sp in splits:
        parts = prepared[sp]
        cs = CutSet.from_manifests(recordings=parts["recordings"], supervisions=parts["supervisions"])
        cs = cs.trim_to_supervisions(keep_overlapping=False)
        for c in cs:
            c.supervisions[0].custom = {**(c.supervisions[0].custom or {}), "split": sp}
            cuts.append(c)
    return CutSet.from_cuts(cuts)


# ----------------------------------------------------------------------------------------- flat tables


def _row_of(rec: Recording, sup: SupervisionSegment, split: str) -> dict[str, Any]:
    custom = dict(sup.custom or {})
    row: dict[str, Any] = {
        "id": sup.id, "audio_path": rec.sources[0].source, "start": sup.start, "duration": sup.duration,
        "speaker": sup.speaker, "emotion": custom.pop("emotion", None),
        "emotion_orig": custom.pop("emotion_orig", None), "gender": sup.gender, "text": sup.text,
        "language": sup.language, "corpus": custom.pop("corpus", None), "session": custom.pop("session", None),
        "split": split, "sampling_rate": rec.sampling_rate, "num_samples": rec.num_samples,
    }
    for name in ATTRIBUTES:
        row[name] = custom.pop(name, None)
    for k, v in custom.items():
        row[k] = v
    return row


def export_table(prepared: PreparedCorpus, path: Path | str) -> Path:
    """Write every split as one flat table; the format follows the suffix (.csv or .jsonl)."""
    path = Path(path)
    rows = []
    for split, parts in prepared.items():
        recs = parts["recordings"]
        for sup in parts["supervisions"]:
            rows.append(_row_of(recs[sup.recording_id], sup, split))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with path.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif path.suffix == ".csv":
        extra = sorted({k for r in rows for k in r} - set(FLAT_COLUMNS))
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*FLAT_COLUMNS, *extra])
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    else:
        raise ManifestError(path, "export format must be .csv or .jsonl")
    return path


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise ManifestError(path, "no such file")
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8-sig") as f:  # -sig: a leading BOM (Excel, Notepad) is not data
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ManifestError(path, f"invalid JSON: {e.msg}", row=i) from None
                    except (ValueError, RecursionError) as e:  # e.g. an integer of > 4300 digits, deep nesting
                        raise ManifestError(path, f"invalid JSON: {type(e).__name__}: {e}", row=i) from None
                    if not isinstance(obj, dict):
                        raise ManifestError(path, "each line must be a JSON object", row=i)
                    rows.append((i, obj))
        elif path.suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
                if not reader.fieldnames:
                    raise ManifestError(path, "empty file: no header row")
                for i, r in enumerate(reader, start=2):
                    if None in r:
                        raise ManifestError(path, "more fields than header columns", row=i)
                    rows.append((i, {k: (v if v != "" else None) for k, v in r.items()}))
        else:
            raise ManifestError(path, "manifest format must be .csv, .tsv or .jsonl")
    except UnicodeDecodeError as e:
        raise ManifestError(path, f"not UTF-8 text: {e.reason}") from None
    except csv.Error as e:
        raise ManifestError(path, f"malformed CSV: {e}") from None
    except OSError as e:  # unreadable: permissions, a vanished network path
        raise ManifestError(path, f"cannot read it: {e.strerror or e}") from None
    if not rows:
        raise ManifestError(path, "no rows")
    return rows


def _num(value: Any, name: str, path: Path, row: int, *, required: bool) -> float | None:
    if value is None:
        if required:
            raise ManifestError(path, f"missing {name}", row=row)
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer beyond float range
        raise ManifestError(path, f"{name} must be a number, got {value!r}", row=row) from None
    if not math.isfinite(x) or x < 0:
        raise ManifestError(path, f"{name} must be finite and >= 0, got {value!r}", row=row)
    return x


def _canonical_columns(path: Path, rows: list[tuple[int, dict[str, Any]]]) -> tuple[list[tuple[int, dict[str, Any]]],
                                                                                   set[str]]:
    """Rows with their columns renamed to emoslm's names (``Path`` -> ``audio_path``, ``label`` -> ``emotion``,
    `` Speaker `` -> ``speaker``); a table without a required column is an error listing what it has."""
    found = list(dict.fromkeys(str(k) for _, r in rows for k in r))
    by_key: dict[str, str] = {}  # lower-cased, stripped header -> the header (the exact name, else the first)
    for k in found:
        low = k.strip().lower()
        if low not in by_key or k == low:
            by_key[low] = k
    rename: dict[str, str] = {}
    for col in FLAT_COLUMNS:  # a table's own spelling of emoslm's column names
        if col in by_key:
            rename[by_key[col]] = col
    missing = []
    for col, aliases in COLUMN_ALIASES.items():
        if col in by_key:
            continue
        alias = next((a for a in aliases if a in by_key), None)
        if alias is not None:
            rename[by_key[alias]] = col
        elif col in REQUIRED_COLUMNS:
            missing.append(col)
    if missing:
        accepted = "; ".join(f"{c}: {', '.join((c, *COLUMN_ALIASES.get(c, ())))}" for c in missing)
        raise ManifestError(path, f"no {' and no '.join(missing)} column. Columns found: "
                                  f"{', '.join(repr(k) for k in found) or 'none'}. Accepted names (any case): {accepted}")
    if any(k != v for k, v in rename.items()):  # one header per column name: no two keys collide
        rows = [(i, {rename.get(k, k): v for k, v in r.items()}) for i, r in rows]
    return rows, {rename.get(k, k) for k in found}


def _derived_ids(rows: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """Ids for a table that has none: the audio file's stem; a stem shared by rows gets the segment's start
    (``talk_12.5``), then a counter (``take_2``). Deterministic: the same table gives the same ids."""
    stems = [Path(str(r.get("audio_path") or f"row{i}")).stem or f"row{i}" for i, r in rows]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    base = []
    for s, (_, r) in zip(stems, rows):
        start = r.get("start")
        base.append(f"{s}_{start}".replace(" ", "") if counts[s] > 1 and start not in (None, "") else s)
    out: list[str] = []
    used: set[str] = set()
    for b in base:
        uid, n = b, 1
        while uid in used:
            n += 1
            uid = f"{b}_{n}"
        used.add(uid)
        out.append(uid)
    return out


def load_label_map(source: Mapping[str, Any] | str | Path) -> dict[str, str]:
    """A label map (the table's own label -> a canonical one): a mapping, or a file: ``.yaml``/``.yml``/``.json``
    holding one mapping, or ``.csv``/``.tsv`` with two columns (an optional header row). Targets may be any
    spelling :func:`canonical_emotion` knows ("happy" -> joy); an unknown target is an error listing the
    canonical labels."""
    where: Path | str = "label map"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        where = p = Path(source).expanduser()
        if not p.is_file():
            raise ManifestError(p, "label map: no such file (a .yaml, .json or two-column .csv of TABLE_LABEL -> "
                                   "canonical label)")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise ManifestError(p, f"label map: not UTF-8 text: {e.reason}") from None
        except OSError as e:
            raise ManifestError(p, f"label map: cannot read it: {e.strerror or e}") from None
        suffix = p.suffix.lower()
        if suffix in (".csv", ".tsv"):
            try:
                table = [r for r in csv.reader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
                         if any(c.strip() for c in r)]
            except csv.Error as e:
                raise ManifestError(p, f"label map: malformed CSV: {e}") from None
            bad = next((n for n, r in enumerate(table, start=1) if len(r) != 2), None)
            if bad is not None:
                raise ManifestError(p, "label map: each row must have two columns (table label, canonical label)",
                                    row=bad)
            if table and table[0][1].strip().lower() not in ALIASES:  # a header row ("label,emotion")
                table = table[1:]
            data = {r[0]: r[1] for r in table}
        elif suffix in (".yaml", ".yml", ".json"):
            import yaml  # JSON is YAML

            try:
                data = yaml.safe_load(text) if suffix != ".json" else json.loads(text)
            except (yaml.YAMLError, ValueError, RecursionError) as e:
                raise ManifestError(p, f"label map: not valid {suffix[1:].upper()}: "
                                       f"{' '.join(str(e).split())}") from None
        else:
            raise ManifestError(p, "label map: use a .yaml, .yml, .json, .csv or .tsv file")
    if not isinstance(data, Mapping) or not data:
        raise ManifestError(where, f"label map: expected a mapping of table labels to canonical ones, got "
                                   f"{type(data).__name__ if data is not None else 'nothing'}")
    out: dict[str, str] = {}
    bad_targets = []
    for k, v in data.items():
        try:
            if v is None or isinstance(v, (list, dict)):
                raise LabelError(str(v))
            out[str(k).strip()] = canonical_emotion(str(v))
        except LabelError:
            bad_targets.append(f"{k!r} -> {v!r}")
    if bad_targets:
        raise ManifestError(where, f"label map: {', '.join(bad_targets)}: not a canonical label; canonical labels: "
                                   f"{', '.join(CANONICAL)}")
    return out


def _map_labels(path: Path, rows: list[tuple[int, dict[str, Any]]], label_map: dict[str, str] | None) -> dict[int, str]:
    """The canonical emotion of each row (by row number); every unknown label of the table in one error."""
    folded = {k.lower(): v for k, v in (label_map or {}).items()}
    out: dict[int, str] = {}
    unknown: dict[str, list[int]] = {}
    for i, r in rows:
        if r.get("emotion") in (None, ""):
            continue  # an error naming the row, later
        orig = str(r["emotion"])
        if label_map is not None and (orig in label_map or orig.strip().lower() in folded):
            out[i] = label_map.get(orig) or folded[orig.strip().lower()]
            continue
        try:
            out[i] = canonical_emotion(orig)
        except LabelError:
            unknown.setdefault(orig, []).append(i)
    if unknown:
        def rows_of(ns: list[int]) -> str:
            return ("row " if len(ns) == 1 else "rows ") + ", ".join(map(str, ns[:5])) + (" ..." if len(ns) > 5 else "")
        listed = ", ".join(f"{lab!r} ({rows_of(ns)})" for lab, ns in list(unknown.items())[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        err = ManifestError(path, f"unknown emotion label(s) {listed}{more}"
                                  f"{' (after the label map)' if label_map is not None else ''}. Allowed: "
                                  f"{', '.join(CANONICAL)} (any case; also spellings such as angry, happy, sad, neu). "
                                  "Map the table's labels to these with a label map: emoslm prepare csv TABLE OUT "
                                  "--label-map MAP.yaml")
        err.row = next(iter(unknown.values()))[0]  # the first one's row (the message names them all)
        raise err
    return out


def import_table(
    path: Path | str,
    *,
    corpus: str | None = None,
    label_map: Mapping[str, str] | str | Path | None = None,
    audio_root: Path | str | None = None,
    probe_audio: bool = True,
    default_split: str = "all",
) -> PreparedCorpus:
    """Read a flat CSV/TSV/JSONL manifest into lhotse manifests, one split per value of its ``split`` column.

    Required columns: ``audio_path``, ``speaker``, ``emotion``, under these names or those of
    :data:`COLUMN_ALIASES` (``path``, ``file``, ``wav``, ``audio``, ``filename``, ``audio_file``; ``label``;
    ``speaker_id``, ``spk``), in any case. Without an ``id`` column each row's id is its audio file's stem, made
    unique (:func:`_derived_ids`). Optional: everything in FLAT_COLUMNS (``start``/``duration`` select a segment
    of a longer file), other columns go to ``custom``. Labels are mapped with ``label_map`` (the corpus's own
    label -> canonical; a mapping or a file, :func:`load_label_map`) or by :func:`canonical_emotion`; unknown
    labels are an error listing them all with their rows, never skipped. Relative audio paths are taken from
    ``audio_root`` (default: the manifest's folder). With ``probe_audio`` each file is opened to read its
    sampling rate and length (a broken file is an error naming the row).
    """
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    rows, columns = _canonical_columns(path, _read_rows(path))
    mapping = load_label_map(label_map) if label_map is not None else None
    emotions = _map_labels(path, rows, mapping)
    ids = None if "id" in columns else _derived_ids(rows)
    recs: dict[str, dict[str, Recording]] = {}
    sups: dict[str, list[SupervisionSegment]] = {}
    seen: set[str] = set()
    for n, (i, r) in enumerate(rows):
        for col in ("id", *REQUIRED_COLUMNS) if ids is None else REQUIRED_COLUMNS:
            if r.get(col) in (None, ""):
                raise ManifestError(path, f"missing required column {col!r} (an empty value)", row=i)
        uid = str(r["id"]) if ids is None else ids[n]
        if uid in seen:
            raise ManifestError(path, f"duplicate id {uid!r}", row=i)
        seen.add(uid)
        orig = str(r["emotion"])
        emotion = emotions[i]
        audio_path = Path(str(r["audio_path"]))
        if not audio_path.is_absolute():
            audio_path = root / audio_path
        sr = _num(r.get("sampling_rate"), "sampling_rate", path, i, required=False)
        ns = _num(r.get("num_samples"), "num_samples", path, i, required=False)
        if probe_audio or sr is None or ns is None:
            try:
                sr, ns = probe(audio_path)
            except AudioError as e:
                raise ManifestError(path, f"audio {e.path}: {e.reason}", row=i) from None
        if sr <= 0 or not float(sr).is_integer() or not float(ns).is_integer():
            raise ManifestError(path, f"sampling_rate/num_samples must be whole numbers, sampling_rate > 0; "
                                f"got {sr!r}/{ns!r}", row=i)
        sr, ns = int(sr), int(ns)
        rec_dur = ns / sr
        start = _num(r.get("start"), "start", path, i, required=False) or 0.0
        dur = _num(r.get("duration"), "duration", path, i, required=False)
        dur = rec_dur - start if dur is None else dur
        if dur <= 0 or start + dur > rec_dur + 1e-3:
            raise ManifestError(path, f"segment {start}+{dur}s lies outside the {rec_dur:.3f}s file", row=i)
        split = str(r.get("split") or default_split)
        rec_id = str(audio_path)
        recs.setdefault(split, {})
        if rec_id not in recs[split]:
            recs[split][rec_id] = Recording(
                id=rec_id, sources=[AudioSource(type="file", channels=[0], source=str(audio_path))],
                sampling_rate=sr, num_samples=ns, duration=rec_dur,
            )
        known = set(FLAT_COLUMNS)
        extra = {k: v for k, v in r.items() if k not in known and v is not None}
        try:
            sup = make_supervision(
                uid, rec_id, dur, start=start, speaker=str(r["speaker"]), emotion=emotion, emotion_orig=orig,
                corpus=str(r.get("corpus") or corpus or path.stem), gender=r.get("gender") or None,
                text=r.get("text"), language=r.get("language"), session=r.get("session"),
                **{a: r.get(a) for a in ATTRIBUTES},
            )
        except ValueError as e:
            raise ManifestError(path, str(e), row=i) from None
        sup.custom.update(extra)  # not as keyword arguments: a column may be named like one ("recording_id")
        sups.setdefault(split, []).append(sup)
    return {
        split: {"recordings": RecordingSet.from_recordings(recs[split].values()),
                "supervisions": SupervisionSet.from_segments(sups[split])}
        for split in sups
    }


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
from emoslm.labels import CANONICAL, canonical_emotion

LEVELS = ("low", "normal", "high")
ATTRIBUTES = ("pitch_level", "tempo_level", "energy_level")
GENDERS = ("M", "F")

#: Columns of the flat CSV/JSONL manifest, in order. Extra columns are kept in ``custom``.
FLAT_COLUMNS = (
    "id", "audio_path", "start", "duration", "speaker", "emotion", "emotion_orig", "gender", "text",
    "language", "corpus", "session", "split", "sampling_rate", "num_samples", *ATTRIBUTES,
)

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
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for split, parts in prepared.items():
        rec_path, sup_path = manifest_paths(output_dir, corpus, split)
        parts["recordings"].to_file(rec_path)
        parts["supervisions"].to_file(sup_path)


def load_prepared(output_dir: Path | str, corpus: str | None = None) -> PreparedCorpus:
    """Read back what :func:`save_prepared` (or ``emoslm prepare``) wrote; ``corpus`` may be inferred."""
    out = Path(output_dir)
    files = sorted(out.glob("*_supervisions_*.jsonl.gz"))
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
        raise ManifestError(out, f"no manifests of corpus {corpus!r}")
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


def import_table(
    path: Path | str,
    *,
    corpus: str | None = None,
    label_map: Mapping[str, str] | None = None,
    audio_root: Path | str | None = None,
    probe_audio: bool = True,
    default_split: str = "all",
) -> PreparedCorpus:
    """Read a flat CSV/TSV/JSONL manifest into lhotse manifests, one split per value of its ``split`` column.

    Required columns: ``id``, ``audio_path``, ``speaker``, ``emotion``. Optional: everything in FLAT_COLUMNS
    (``start``/``duration`` select a segment of a longer file), other columns go to ``custom``. Labels are
    mapped with ``label_map`` (the corpus's own label -> canonical) or by :func:`canonical_emotion`; an
    unknown label is an error naming the row, never skipped. Relative audio paths are taken from
    ``audio_root`` (default: the manifest's folder). With ``probe_audio`` each file is opened to read its
    sampling rate and length (a broken file is an error naming the row).
    """
    path = Path(path)
    root = Path(audio_root) if audio_root is not None else path.parent
    rows = _read_rows(path)
    recs: dict[str, dict[str, Recording]] = {}
    sups: dict[str, list[SupervisionSegment]] = {}
    seen: set[str] = set()
    for i, r in rows:
        for col in ("id", "audio_path", "speaker", "emotion"):
            if r.get(col) in (None, ""):
                raise ManifestError(path, f"missing required column {col!r}", row=i)
        uid = str(r["id"])
        if uid in seen:
            raise ManifestError(path, f"duplicate id {uid!r}", row=i)
        seen.add(uid)
        orig = str(r["emotion"])
        try:
            emotion = label_map[orig] if label_map is not None and orig in label_map else canonical_emotion(orig)
        except LabelError as e:
            raise ManifestError(path, str(e), row=i) from None
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


"""Your own data end to end: what ``emoslm predict`` reads (files, folders, lists, prepared manifests, an enrollment
table) and writes (JSONL or CSV, a row per file or per segment, and a summary).

    targets = resolve_targets(["clips/", "@more.txt"])           # Target(id, path, speaker, ...) per file
    table = read_enroll_table("enroll.csv")                      # {speaker: [(path, label), ...]}
    rows = predict_rows(rec, targets, [t.speaker for t in targets], batch_size=16)
    write_rows(rows, "out.jsonl", rec.label_set.labels)

A *target* is an audio file (a wav, flac, ogg or mp3 found in a folder, recursively) or a supervision of a prepared
corpus (``emoslm prepare``: lhotse manifests; its speaker and, where known, its reference emotion come with it).
Relative paths in a list file or an enrollment table are taken from the folder that file is in.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import tqdm

from emoslm.audio import AudioLimits, load_audio
from emoslm.data.manifests import load_prepared
from emoslm.data.utterances import from_supervision
from emoslm.errors import EmoslmError, ManifestError
from emoslm.personalization.inference import EmotionRecognizer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
#: What the terminal shows (and the summary counts) for a prediction that abstained.
ABSTAIN = "abstain"


@dataclass(frozen=True)
class Target:
    id: str
    path: str
    speaker: str | None = None
    start: float = 0.0
    duration: float | None = None  # None: to the end of the file
    reference: str | None = None  # the manifest's emotion, where it has one

    def load_wave(self) -> np.ndarray:
        return load_audio(self.path, offset=self.start, duration=self.duration)


# ------------------------------------------------------------------------------------------ inputs


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _expand(item: str, base: Path | None = None) -> list[Target]:
    """One command-line (or list-file) entry: ``@list.txt``, a folder (its audio files) or a file."""
    if item.startswith("@"):
        return read_list(item[1:])
    path = Path(item)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.is_dir():
        files = _audio_files(path)
        if not files:
            raise EmoslmError(f"no audio files ({', '.join(s[1:] for s in AUDIO_SUFFIXES)}) under {path}")
        return [Target(f.relative_to(path).as_posix(), str(f)) for f in files]
    return [Target(str(path), str(path))]  # a missing file becomes an error row, not the end of the batch


def read_list(path: str | Path) -> list[Target]:
    """The targets of a list file: one file or folder per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EmoslmError(f"cannot read list file {path}: {e}") from None
    out: list[Target] = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out += _expand(line, path.parent)
    if not out:
        raise EmoslmError(f"list file {path} names no audio files")
    return out


def manifest_targets(manifest_dir: str | Path, splits: Sequence[str] | None = None,
                     corpus: str | None = None) -> list[Target]:
    """One target per supervision of a prepared corpus (every split, or ``splits``)."""
    prepared = load_prepared(manifest_dir, corpus)
    missing = [s for s in splits or () if s not in prepared]
    if missing:
        raise ManifestError(manifest_dir, f"no split {', '.join(missing)} (has: {', '.join(prepared)})")
    out = []
    for split in splits or list(prepared):
        recs = prepared[split]["recordings"]
        for sup in prepared[split]["supervisions"]:
            u = from_supervision(sup, recs, split)
            out.append(Target(u.id, u.audio, u.speaker, u.start, u.duration, u.attrs.get("emotion")))
    return out


def resolve_targets(items: Sequence[str] = (), list_file: str | None = None, manifest: str | None = None,
                    splits: Sequence[str] | None = None) -> list[Target]:
    """Targets from files, folders and ``@list`` entries, a ``--list`` file and a ``--manifest`` folder."""
    out: list[Target] = []
    for item in items:
        out += _expand(item)
    if list_file:
        out += read_list(list_file)
    if manifest:
        out += manifest_targets(manifest, splits)
    if not out:
        raise EmoslmError("nothing to predict: give audio files, a folder, @list.txt, --list or --manifest")
    return out


def parse_enroll_pair(item: str) -> tuple[str, str]:
    """``FILE:LABEL`` (the label after the last colon)."""
    path, sep, label = item.rpartition(":")
    if not sep or not path or not label:
        raise EmoslmError(f"--enroll expects FILE:LABEL, got {item!r}")
    return path, label


def read_enroll_table(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """``{speaker: [(audio path, label), ...]}`` from a CSV (TSV for ``.tsv``) with columns speaker, file (or path,
    audio_path) and label (or emotion)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EmoslmError(f"cannot read enrollment table {path}: {e}") from None
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    col_file = next((fields[c] for c in ("file", "path", "audio_path") if c in fields), None)
    col_label = next((fields[c] for c in ("label", "emotion") if c in fields), None)
    if "speaker" not in fields or col_file is None or col_label is None:
        raise ManifestError(path, f"an enrollment table needs the columns speaker, file (or path) and label; "
                                  f"found {', '.join(reader.fieldnames or []) or 'none'}")
    out: dict[str, list[tuple[str, str]]] = {}
    for row_no, row in enumerate(reader, start=2):
        spk, file, label = (str(row.get(c) or "").strip() for c in (fields["speaker"], col_file, col_label))
        if not (spk and file and label):
            raise ManifestError(path, "speaker, file and label must all be given", row=row_no)
        audio = Path(file) if Path(file).is_absolute() else path.parent / file
        out.setdefault(spk, []).append((str(audio), label))
    if not out:
        raise ManifestError(path, "no enrollment rows")
    return out


def enroll_for_targets(rec: EmotionRecognizer, targets: Sequence[Target], *,
                       pairs: Sequence[tuple[str, str]] = (), table: dict[str, list[tuple[str, str]]] | None = None,
                       speaker: str | None = None) -> tuple[list[Target], list[str | None]]:
    """Enroll the speakers the targets need and say whose enrollment each target uses.

    ``pairs`` (``--enroll``) belong to ``speaker`` (default "cli"), ``table`` (``--enroll-table``) gives each
    speaker's. A manifest target uses its own speaker's enrollment (none: 0-shot); with ``speaker`` only that
    speaker's manifest targets are kept. A file target uses ``speaker``'s, or the pairs', or the table's when it
    has one speaker. Returns the (kept) targets and their speakers."""
    book = {k: list(v) for k, v in (table or {}).items()}
    name = speaker or ("cli" if pairs else None)
    if pairs:
        book.setdefault(name, []).extend(pairs)
    if speaker is not None and book and speaker not in book:
        raise EmoslmError(f"no enrollment for speaker {speaker!r}; the enrollment has: {', '.join(sorted(book))}")
    files = [t for t in targets if t.speaker is None]
    if files and name is None and len(book) > 1:
        raise EmoslmError(f"the enrollment table has {len(book)} speakers ({', '.join(sorted(book)[:5])}"
                          f"{', ...' if len(book) > 5 else ''}): choose whose enrollment the files use with --speaker")
    file_speaker = name or (next(iter(book)) if book else None)
    kept = [t for t in targets if t.speaker is None or speaker is None or t.speaker == speaker]
    if not kept:
        raise EmoslmError(f"no target of speaker {speaker!r}")
    speakers = [file_speaker if t.speaker is None else t.speaker for t in kept]
    for spk in sorted({s for s in speakers if s in book}):
        rec.enroll(spk, book[spk], ids=[path for path, _ in book[spk]])
    return kept, speakers


# ------------------------------------------------------------------------------------------ prediction


def _row(t: Target, speaker: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": t.id, "path": t.path, "speaker": speaker}
    if t.reference is not None:
        row["reference"] = t.reference
    return row


def predict_rows(rec: EmotionRecognizer, targets: Sequence[Target], speakers: Sequence[str | None], *,
                 batch_size: int = 16, embeddings: bool = False, progress: bool = False,
                 segment: str | None = None, window_s: float = 4.0, hop_s: float | None = None,
                 max_seconds: float = 600.0, min_confidence: float | None = None) -> list[dict[str, Any]]:
    """Output rows: one per target (``predict_batch``), or with ``segment`` ("fixed"/"energy") one per segment
    of each target (``predict_segments``; a target that fails gives one row with its error). With an abstention
    threshold (``min_confidence``, else the recognizer's) every row has ``abstained``, and an abstaining row the
    label None."""
    threshold = min_confidence if min_confidence is not None else rec.min_confidence
    abstain = (lambda p: {"abstained": p.abstained}) if threshold is not None else (lambda p: {})  # noqa: E731
    rows: list[dict[str, Any]] = []
    if segment is None:
        preds = rec.predict_batch(list(targets), list(speakers), batch_size=batch_size, embeddings=embeddings,
                                  progress=progress, min_confidence=min_confidence)
        for t, spk, p in zip(targets, speakers, preds):
            rows.append({**_row(t, spk), "label": p.label, "confidence": p.confidence, **abstain(p),
                         "probs": p.probs, "n_enroll": p.n_enroll, "enroll_ids": p.enroll_ids, "error": p.error,
                         **({"embedding": p.embedding} if embeddings else {})})
        return rows
    for t, spk in tqdm(list(zip(targets, speakers)), desc="predict", unit="file", disable=not progress):
        n_enroll, ids = rec.n_enrolled(spk), list(rec.speakers[spk].ids) if spk in rec.speakers else []
        base = {**_row(t, spk), "n_enroll": n_enroll, "enroll_ids": ids}
        try:
            audio = (t.path if t.start == 0 and t.duration is None else
                     load_audio(t.path, offset=t.start, duration=t.duration,
                                limits=AudioLimits(max_duration=max_seconds)))
            segs = rec.predict_segments(audio, spk, mode=segment, window_s=window_s, hop_s=hop_s,
                                        max_seconds=max_seconds, batch_size=batch_size, min_confidence=min_confidence)
        except (EmoslmError, OSError) as e:
            rows.append({**base, "segment": None, "start": None, "end": None, "label": "", "confidence": None,
                         "probs": {}, "error": str(e)})
            continue
        if not segs:
            rows.append({**base, "segment": None, "start": None, "end": None, "label": "", "confidence": None,
                         "probs": {}, "error": "no speech found"})
        for i, s in enumerate(segs):
            rows.append({**base, "segment": i, "start": round(t.start + s.start, 3), "end": round(t.start + s.end, 3),
                         "label": s.label, "confidence": s.confidence, **abstain(s), "probs": s.probs,
                         "error": s.error})
    return rows


# ------------------------------------------------------------------------------------------ outputs

_FIRST = ("id", "path", "speaker", "segment", "start", "end", "label", "confidence", "abstained")
_LAST = ("n_enroll", "enroll_ids", "reference", "error", "embedding")


def write_rows(rows: Sequence[dict[str, Any]], path: str | Path, labels: Sequence[str]) -> Path:
    """JSONL (one object per row: ``probs`` a dict, ``enroll_ids`` a list, an abstaining row's label null) or CSV
    (a ``p_<label>`` column per emotion, enrollment ids joined by ``;``, the embedding as a JSON list, an
    abstaining row's label empty), chosen by the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise EmoslmError(f"--out must end in .jsonl or .csv, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    present = {k for r in rows for k in r}
    if suffix == ".jsonl":
        with path.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        return path
    columns = ([c for c in _FIRST if c in present] + [f"p_{lab}" for lab in labels]
               + [c for c in _LAST if c in present])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = {k: v for k, v in r.items() if k != "probs"}
            flat.update({f"p_{lab}": (round(r["probs"][lab], 6) if lab in r.get("probs", {}) else "")
                         for lab in labels})
            flat["enroll_ids"] = ";".join(r.get("enroll_ids") or [])
            if flat.get("embedding") is not None:
                flat["embedding"] = json.dumps([round(x, 6) for x in flat["embedding"]])
            if flat.get("confidence") is not None:
                flat["confidence"] = round(flat["confidence"], 6)
            w.writerow({k: ("" if v is None else v) for k, v in flat.items()})
    return path


def summary(rows: Sequence[dict[str, Any]], seconds: float, n_items: int, unit: str = "utterances",
            labels: Sequence[str] | None = None) -> dict:
    """Label counts, errors, throughput and, when the targets had reference emotions, accuracy (over the rows whose
    reference is one of ``labels``, the model's label set)."""
    ok = [r for r in rows if not r.get("error")]
    out = {"n": len(rows), "ok": len(ok), "errors": len(rows) - len(ok),
           "labels": Counter(ABSTAIN if r.get("abstained") else r["label"] for r in ok),
           "seconds": seconds, "items": n_items, "per_second": n_items / seconds if seconds > 0 else float("inf"),
           "unit": unit}
    scored = [r for r in ok if r.get("reference") and (labels is None or r["reference"] in labels)]
    if scored:
        out["accuracy"] = (sum(r["label"] == r["reference"] for r in scored) / len(scored), len(scored))
        answered = [r for r in scored if not r.get("abstained")]
        if len(answered) < len(scored):  # abstentions count as wrong above; here the accuracy of the answers
            out["answered_accuracy"] = (sum(r["label"] == r["reference"] for r in answered) / max(1, len(answered)),
                                        len(answered))
    return out


def print_rows(console: Console, rows: Sequence[dict[str, Any]], segments: bool = False) -> None:
    """The rows on the terminal: ``id: label (confidence)``, or for one file's segments ``start-end label conf``;
    an abstaining row shows "abstain" for its label."""
    for r in rows:
        err = f"[red]error: {escape(str(r['error']))}[/red]" if r.get("error") else None
        label = ABSTAIN if r.get("abstained") else r["label"]
        if segments:
            when = f"{r['start']:7.2f}-{r['end']:7.2f} s" if r.get("start") is not None else " " * 17
            console.print(f"  {when}  " + (err or f"{label:>9} {r['confidence']:6.1%}"), highlight=False)
        else:
            when = f" {r['start']:.2f}-{r['end']:.2f} s" if r.get("start") is not None else ""
            console.print(f"{escape(str(r['id']))}{when}: " + (err or f"{label} ({r['confidence']:.0%})"),
                          highlight=False)


def throughput_line(s: dict) -> str:
    return f"{s['items']} {s['unit']} in {s['seconds']:.2f} s: {s['per_second']:.1f} {s['unit']}/s"


def summary_table(s: dict) -> Table:
    """The summary as a rich table: a row per predicted label (count, share), then errors."""
    table = Table(title="predicted labels", title_justify="left")
    table.add_column("label")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for label, n in s["labels"].most_common():
        table.add_row(label, str(n), f"{n / max(1, s['ok']):.1%}")
    if s["errors"]:
        table.add_row("[red]errors[/red]", str(s["errors"]), f"{s['errors'] / max(1, s['n']):.1%}")
    return table

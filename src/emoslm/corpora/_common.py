"""What every corpus adapter shares: checking the layout, decoding label files, counting what is dropped, and
turning a list of utterances into validated (and optionally saved) lhotse manifests.

Corpus knowledge (file names, label codes, folder layout) stays in the adapters; this module only knows that an
utterance is one audio file with one supervision covering all of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from lhotse import Recording, RecordingSet, SupervisionSet

from emoslm.audio import probe
from emoslm.data.manifests import (
    PreparedCorpus,
    make_supervision,
    save_prepared,
    validate_prepared,
)
from emoslm.errors import AudioError, CorpusError, ManifestError

logger = logging.getLogger("emoslm.corpora")

#: How many example ids a drop report names.
_EXAMPLES = 5


@dataclass
class Utterance:
    """One labelled audio file as an adapter read it; the supervision spans the whole file."""

    id: str
    split: str
    audio: Path
    speaker: str
    emotion: str | None
    emotion_orig: str | None
    #: Further keyword arguments of :func:`make_supervision` (gender, text, language, session, attributes).
    fields: dict[str, Any] = field(default_factory=dict)


class DropLog:
    """Counts, by reason, what an adapter drops, ignores or leaves incomplete, and logs one line per reason.

    Nothing goes unreported: each line names the reason, the count and a few examples.
    """

    def __init__(self, corpus: str):
        self.corpus = corpus
        self._items: dict[str, list[str]] = {}
        self._levels: dict[str, int] = {}

    def add(self, reason: str, item: object, level: int = logging.WARNING) -> None:
        self._items.setdefault(reason, []).append(str(item))
        self._levels[reason] = max(level, self._levels.get(reason, level))

    def count(self, reason: str | None = None) -> int:
        if reason is None:
            return sum(len(v) for v in self._items.values())
        return len(self._items.get(reason, ()))

    def report(self) -> None:
        for reason, items in self._items.items():
            examples = ", ".join(items[:_EXAMPLES]) + (", ..." if len(items) > _EXAMPLES else "")
            logger.log(self._levels[reason], "%s: %s: %d (%s)", self.corpus, reason, len(items), examples)


# ------------------------------------------------------------------------------------------------ layout


def corpus_root(corpus_dir: Path | str, corpus: str) -> Path:
    root = Path(corpus_dir).expanduser().absolute()  # manifests must work from any working directory
    if not root.is_dir():
        raise CorpusError(f"{corpus}: corpus directory {root} does not exist or is not a directory")
    return root


def require_dir(path: Path, corpus: str, hint: str) -> Path:
    """``path`` if it is a directory, else a CorpusError naming it (``hint`` says what the folder holds)."""
    if not path.is_dir():
        raise CorpusError(f"{corpus}: expected folder {path} is missing ({hint}); is this the {corpus} root?")
    return path


def require_file(path: Path, corpus: str, hint: str) -> Path:
    if not path.is_file():
        raise CorpusError(f"{corpus}: expected file {path} is missing ({hint}); is this the {corpus} root?")
    return path


def is_hidden(path: Path) -> bool:
    """Dot-files: macOS resource forks (``._x.wav``), ``.DS_Store`` and the like, never corpus content."""
    return path.name.startswith(".")


# ---------------------------------------------------------------------------------------------- decoding


def read_text(path: Path, encodings: Sequence[str] = ("utf-8", "cp1252")) -> str:
    """The text of a label file. A UTF-8/UTF-16 byte-order mark decides; without one, and unless the bytes hold
    NULs (UTF-16 without BOM), the first of ``encodings`` that decodes cleanly is used."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:200]:
        # UTF-16 without a byte-order mark: ASCII characters have a NUL in their high byte.
        return data.decode("utf-16-le" if data[1:2] == b"\x00" else "utf-16-be")
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise ManifestError(path, f"cannot decode the file as any of {', '.join(encodings)}")


def parse_float(value: str | None, name: str, path: Path, row: int) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise ManifestError(path, f"{name} must be a number, got {value!r}", row=row) from None


# -------------------------------------------------------------------------------------------- manifests


def _recording(utt: Utterance) -> Recording | str:
    """The recording of an utterance's audio file, or the reason it cannot be used."""
    if utt.audio.suffix.lower() in (".wav", ".flac", ".ogg"):
        try:
            probe(utt.audio)  # clear messages for empty/corrupt files before lhotse reads the header
        except AudioError as e:
            return e.reason
    try:
        return Recording.from_file(utt.audio, recording_id=utt.id)
    except Exception as e:  # lhotse's backends raise many kinds
        return f"not a readable audio file ({e})"


def build_prepared(
    corpus: str,
    utterances: Sequence[Utterance],
    *,
    output_dir: Path | str | None,
    drops: DropLog,
    num_jobs: int = 1,
    split_order: Iterable[str] | None = None,
) -> PreparedCorpus:
    """Read each utterance's audio header, build recordings and supervisions, validate, save, report.

    Audio that cannot be read is dropped and reported (a real corpus may ship a broken file); a corpus with no
    usable utterance at all is a CorpusError.
    """
    ids = Counter(u.id for u in utterances)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise CorpusError(f"{corpus}: utterance ids occur more than once: {', '.join(sorted(dup)[:_EXAMPLES])}")
    if num_jobs > 1:
        with ThreadPoolExecutor(max_workers=num_jobs) as pool:
            recs = list(pool.map(_recording, utterances))
    else:
        recs = [_recording(u) for u in utterances]

    by_split: dict[str, tuple[list, list]] = {}
    for utt, rec in zip(utterances, recs):
        if isinstance(rec, str):
            drops.add("dropped, unreadable audio", f"{utt.audio}: {rec}")
            continue
        try:
            sup = make_supervision(
                utt.id, rec.id, rec.duration, speaker=utt.speaker, emotion=utt.emotion,
                emotion_orig=utt.emotion_orig, corpus=corpus, **utt.fields,
            )
        except ValueError as e:
            raise CorpusError(f"{corpus}: {e}") from None
        recs_l, sups_l = by_split.setdefault(utt.split, ([], []))
        recs_l.append(rec)
        sups_l.append(sup)
    drops.report()
    if not by_split:
        raise CorpusError(f"{corpus}: no usable utterance found ({drops.count()} dropped, see the log)")

    order = [s for s in (split_order or ()) if s in by_split] + sorted(set(by_split) - set(split_order or ()))
    prepared: PreparedCorpus = {
        split: {"recordings": RecordingSet.from_recordings(by_split[split][0]),
                "supervisions": SupervisionSet.from_segments(by_split[split][1])}
        for split in order
    }
    validate_prepared(prepared)
    logger.info("%s: prepared %s", corpus,
                ", ".join(f"{s}: {len(p['supervisions'])} utterances" for s, p in prepared.items()))
    if output_dir is not None:
        save_prepared(prepared, output_dir, corpus)
        logger.info("%s: manifests written to %s", corpus, output_dir)
    return prepared

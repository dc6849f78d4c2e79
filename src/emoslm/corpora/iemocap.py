"""IEMOCAP (Busso et al., 2008): five dyadic sessions, ten actors, improvised and scripted dialogues.

Layout of the release (``IEMOCAP_full_release``, the directory to pass)::

    Session1/
        sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav   # one file per utterance, 16 kHz
        dialog/EmoEvaluation/Ses01F_impro01.txt                 # labels (sub-folders hold per-annotator files)
        dialog/transcriptions/Ses01F_impro01.txt                # transcripts
    Session2/ ... Session5/

An EmoEvaluation file opens with a ``%`` header; each utterance then has a line::

    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

(turn start - end in the dialogue, utterance id, consensus category, mean valence/activation/dominance on 1-5),
followed by the annotators' ``C-...``/``A-...`` lines, which are not read. A transcription line is
``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``.

The speaker is the session plus the gender letter of the utterance's last part (``Ses01F_impro01_M013`` was
spoken by the male actor of session 1: speaker ``iemocap_Ses01M``, gender M), not the letter after ``Ses01``,
which names the actor wearing the markers. ``xxx`` means the annotators did not agree: such utterances get
emotion None and are dropped unless ``keep_unlabeled=True``. One split per session (``Session1`` ...
``Session5``), so leave-one-session-out needs no further bookkeeping.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from emoslm.corpora._common import (
    DropLog,
    Utterance,
    build_prepared,
    corpus_root,
    is_hidden,
    read_text,
    require_dir,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "iemocap"
RELEASE_DIR = "IEMOCAP_full_release"

#: EmoEvaluation category codes -> canonical labels; ``xxx`` (no agreement) -> None.
LABELS: dict[str, str | None] = {
    "neu": "neutral", "ang": "anger", "hap": "joy", "sad": "sadness", "fru": "frustration",
    "exc": "excitement", "fea": "fear", "sur": "surprise", "dis": "disgust", "oth": "other", "xxx": None,
}

_LABEL_LINE = re.compile(
    r"^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\s+(?P<utt>\S+)\s+(?P<label>\S+)\s+"
    r"\[\s*(?P<val>-?\d+(?:\.\d+)?)\s*,\s*(?P<act>-?\d+(?:\.\d+)?)\s*,\s*(?P<dom>-?\d+(?:\.\d+)?)\s*\]\s*$"
)
_UTT_ID = re.compile(r"^Ses(?P<ses>\d{2})[FM]_.+_(?P<gender>[FM])[0-9A-Za-z]+$")
_TRANSCRIPT_LINE = re.compile(r"^(?P<utt>Ses\S+)\s+\[[^\]]*\]:\s*(?P<text>.*)$")


def _read_labels(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The utterance lines of one EmoEvaluation file, with their row numbers."""
    out = []
    for row, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line.startswith("["):
            continue  # header (%), blank lines and the annotators' lines
        m = _LABEL_LINE.match(line)
        if m is None:
            raise ManifestError(path, f"malformed label line {line!r}; expected "
                                      "'[start - end]<TAB>utterance<TAB>label<TAB>[val, act, dom]'", row=row)
        if m["label"] not in LABELS:
            raise ManifestError(path, f"unknown label code {m['label']!r}; known: {', '.join(LABELS)}", row=row)
        if _UTT_ID.match(m["utt"]) is None:
            raise ManifestError(path, f"utterance id {m['utt']!r} does not look like Ses01F_impro01_F000", row=row)
        out.append((row, m.groupdict()))
    return out


def _read_transcripts(path: Path, drops: DropLog) -> dict[str, str]:
    texts = {}
    for row, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        m = _TRANSCRIPT_LINE.match(line.strip())
        if m is None:
            # e.g. turns of the other speaker outside any labelled utterance; no utterance is lost
            drops.add("transcript lines that name no utterance", f"{path.name}:{row}", logging.INFO)
            continue
        texts[m["utt"]] = m["text"].strip()
    return texts


def prepare_iemocap(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
    sessions: Sequence[int] = (1, 2, 3, 4, 5),
    keep_unlabeled: bool = False,
) -> PreparedCorpus:
    """Prepare IEMOCAP: one split per session (``Session1`` ...), supervisions with canonical emotion, the
    original code, speaker (``iemocap_Ses01F``), gender, transcript, session, dialog, and valence/arousal/dominance.

    ``corpus_dir`` is ``IEMOCAP_full_release`` (or the folder holding it). ``keep_unlabeled`` keeps the
    ``xxx`` (no agreement) utterances with emotion None; otherwise they are dropped, counted and logged.
    """
    root = corpus_root(corpus_dir, CORPUS)
    if not (root / "Session1").is_dir() and (root / RELEASE_DIR).is_dir():
        root = root / RELEASE_DIR
    drops = DropLog(CORPUS)
    utterances: list[Utterance] = []
    for n in sessions:
        if n not in (1, 2, 3, 4, 5):
            raise CorpusError(f"{CORPUS}: sessions are numbered 1 to 5, got {n}")
        session = f"Session{n}"
        sdir = require_dir(root / session, CORPUS, f"session {n} of {RELEASE_DIR}")
        label_dir = require_dir(sdir / "dialog" / "EmoEvaluation", CORPUS, "the label files")
        wav_dir = require_dir(sdir / "sentences" / "wav", CORPUS, "the utterance audio")
        trans_dir = require_dir(sdir / "dialog" / "transcriptions", CORPUS, "the transcripts")
        label_files = sorted(p for p in label_dir.glob("*.txt") if not is_hidden(p))
        if not label_files:
            raise CorpusError(f"{CORPUS}: no label file (*.txt) in {label_dir}")

        seen: set[str] = set()
        for lf in label_files:
            dialog = lf.stem
            tf = trans_dir / lf.name
            texts = _read_transcripts(tf, drops) if tf.is_file() else {}
            if not tf.is_file():
                drops.add("dialogues without a transcript file (text left empty)", tf, logging.WARNING)
            for row, lab in _read_labels(lf):
                uid = lab["utt"]
                if uid in seen:
                    raise ManifestError(lf, f"utterance {uid} is labelled twice in {session}", row=row)
                seen.add(uid)
                m = _UTT_ID.match(uid)
                assert m is not None  # checked by _read_labels
                if int(m["ses"]) != n:
                    raise ManifestError(lf, f"utterance {uid} does not belong to {session}", row=row)
                emotion = LABELS[lab["label"]]
                if emotion is None and not keep_unlabeled:
                    drops.add("dropped, no agreed label (xxx); pass keep_unlabeled=True to keep them", uid,
                              logging.INFO)
                    continue
                wav = wav_dir / dialog / f"{uid}.wav"
                if not wav.is_file():
                    drops.add("dropped, labelled utterances without audio", wav)
                    continue
                if uid not in texts:
                    drops.add("utterances without a transcript line (text left empty)", uid, logging.INFO)
                gender = m["gender"]
                utterances.append(Utterance(
                    id=uid, split=session, audio=wav, speaker=f"{CORPUS}_Ses{m['ses']}{gender}",
                    emotion=emotion, emotion_orig=lab["label"],
                    fields=dict(gender=gender, text=texts.get(uid), language="en", session=session,
                                dialog=dialog, valence=float(lab["val"]), arousal=float(lab["act"]),
                                dominance=float(lab["dom"])),
                ))
        unlabelled = [p for p in wav_dir.glob("*/*.wav") if not is_hidden(p) and p.stem not in seen]
        for p in unlabelled:
            drops.add("ignored, audio files with no label line", p, logging.INFO)
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=[f"Session{n}" for n in sessions])

"""MSP-Podcast (Lotfian & Busso, 2019): natural emotional speech segments from podcasts, crowd-annotated.

Layout of a release (e.g. ``MSP-PODCAST-Publish-1.12``, the directory to pass)::

    Audios/MSP-PODCAST_0001_0008.wav          # one file per segment, 16 kHz
    Labels/labels_consensus.csv
    Transcripts/MSP-PODCAST_0001_0008.txt     # optional

``labels_consensus.csv`` has one row per segment with (among others) the columns ``FileName``, ``EmoClass``
(consensus category: A anger, S sadness, H happiness, U surprise, F fear, D disgust, C contempt, N neutral,
O other, X no agreement), ``EmoAct``/``EmoVal``/``EmoDom`` (mean arousal/valence/dominance, 1-7), ``SpkrID``
(a number, or ``Unknown``), ``Gender`` (``Male``/``Female``/``Unknown``) and ``Split_Set`` (``Train``,
``Development``, ``Test1``, ``Test2``, ``Test3``).

Splits follow ``Split_Set``: train, dev, test1, test2, test3. ``X`` segments (and segments whose EmoClass is
empty, as for a test set whose labels are withheld) get emotion None and are dropped unless
``keep_unlabeled=True``. Segments of unidentified speakers share the speaker ``msp_podcast_unknown`` and carry
``speaker_known=False``, so per-speaker protocols can leave them out.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Sequence

from emoslm.corpora._common import (
    DropLog,
    Utterance,
    build_prepared,
    corpus_root,
    parse_float,
    read_text,
    require_dir,
    require_file,
)
from emoslm.data.manifests import PreparedCorpus
from emoslm.errors import CorpusError, ManifestError

CORPUS = "msp_podcast"
LABEL_FILE = Path("Labels") / "labels_consensus.csv"

#: EmoClass codes -> canonical labels; X (no agreement) -> None.
LABELS: dict[str, str | None] = {
    "A": "anger", "S": "sadness", "H": "joy", "U": "surprise", "F": "fear", "D": "disgust", "C": "contempt",
    "N": "neutral", "O": "other", "X": None,
}
SPLITS = {"Train": "train", "Development": "dev", "Test1": "test1", "Test2": "test2", "Test3": "test3"}
GENDERS = {"Male": "M", "Female": "F", "Unknown": None, "": None}
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


def prepare_msp_podcast(
    corpus_dir: Path | str,
    output_dir: Path | str | None = None,
    *,
    num_jobs: int = 1,
    splits: Sequence[str] | None = None,
    keep_unlabeled: bool = False,
) -> PreparedCorpus:
    """Prepare MSP-Podcast with the release's own partitions.

    ``splits`` limits the output to some of train, dev, test1, test2, test3 (default: every split present).
    """
    root = corpus_root(corpus_dir, CORPUS)
    label_path = require_file(root / LABEL_FILE, CORPUS, "the consensus labels")
    audio_dir = require_dir(root / "Audios", CORPUS, "the segment audio")
    trans_dir = root / "Transcripts"
    if splits is not None:
        unknown = set(splits) - set(SPLITS.values())
        if unknown:
            raise CorpusError(f"{CORPUS}: unknown split(s) {sorted(unknown)}; known: {', '.join(SPLITS.values())}")

    reader = csv.DictReader(io.StringIO(read_text(label_path)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ManifestError(label_path, f"missing column(s) {', '.join(missing)}; found {reader.fieldnames}")

    drops = DropLog(CORPUS)
    if not trans_dir.is_dir():
        logging.getLogger("emoslm.corpora").info("%s: no Transcripts folder in %s; text left empty", CORPUS, root)
    utterances: list[Utterance] = []
    for row, r in enumerate(reader, start=2):
        if None in r:
            raise ManifestError(label_path, "more fields than header columns", row=row)
        name = (r["FileName"] or "").strip()
        if not name:
            raise ManifestError(label_path, "empty FileName", row=row)
        code = (r["EmoClass"] or "").strip()
        if code and code not in LABELS:
            raise ManifestError(label_path, f"unknown EmoClass {code!r}; known: {', '.join(LABELS)}", row=row)
        split_set = (r["Split_Set"] or "").strip()
        if split_set not in SPLITS:
            raise ManifestError(label_path, f"unknown Split_Set {split_set!r}; known: {', '.join(SPLITS)}", row=row)
        gender_str = (r["Gender"] or "").strip()
        if gender_str not in GENDERS:
            raise ManifestError(label_path, f"unknown Gender {gender_str!r}; known: Male, Female, Unknown", row=row)
        split = SPLITS[split_set]
        if splits is not None and split not in splits:
            continue
        emotion = LABELS[code] if code else None
        if emotion is None and not keep_unlabeled:
            drops.add("dropped, no agreed label (X or empty EmoClass); pass keep_unlabeled=True to keep them", name,
                      logging.INFO)
            continue
        wav = audio_dir / name
        if not wav.is_file():
            drops.add("dropped, labelled segments without audio", wav)
            continue
        text = None
        if trans_dir.is_dir():
            tf = trans_dir / f"{Path(name).stem}.txt"
            if tf.is_file():
                text = " ".join(read_text(tf).split()) or None
            else:
                drops.add("segments without a transcript file (text left empty)", name, logging.INFO)
        spk = (r["SpkrID"] or "").strip()
        known = bool(spk) and spk.lower() != "unknown"
        stem = Path(name).stem  # MSP-PODCAST_0001_0008: podcast 0001, segment 0008
        parts = stem.split("_")
        utterances.append(Utterance(
            id=stem, split=split, audio=wav, speaker=f"{CORPUS}_{spk}" if known else f"{CORPUS}_unknown",
            emotion=emotion, emotion_orig=code or None,
            fields=dict(
                gender=GENDERS[gender_str], text=text, language="en", speaker_known=known,
                podcast=parts[1] if len(parts) == 3 else None,
                arousal=parse_float(r["EmoAct"], "EmoAct", label_path, row),
                valence=parse_float(r["EmoVal"], "EmoVal", label_path, row),
                dominance=parse_float(r["EmoDom"], "EmoDom", label_path, row),
            ),
        ))
    return build_prepared(CORPUS, utterances, output_dir=output_dir, drops=drops, num_jobs=num_jobs,
                          split_order=list(SPLITS.values()))
